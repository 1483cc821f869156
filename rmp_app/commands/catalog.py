"""`rmp catalog`: what rmp/catalog.py says about the schema."""

from __future__ import annotations

import click


@click.group()
def catalog() -> None:
    """The schema catalog (rmp/catalog.py): metric columns and aggregate tiers."""


@catalog.command()
def show() -> None:
    """Print the server_metrics columns and the aggregate tiers as Markdown tables (no database needed)."""
    from rmp_app import catalog_tables

    click.echo("metrics.server_metrics: the wide metric columns, their types and bounds\n")
    click.echo(catalog_tables.server_metrics_columns())
    click.echo("\nThe continuous aggregates: bucket, policies and the dashboard window each tier serves\n")
    click.echo(catalog_tables.aggregate_tiers())
