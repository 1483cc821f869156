"""`rmp catalog`: what rmp/catalog.py says about the schema, and the docs rendered from it."""

from __future__ import annotations

import click

from rmp.errors import UserError


@click.group()
def catalog() -> None:
    """The schema catalog (rmp/catalog.py): metric columns and aggregate tiers."""


@catalog.command()
def show() -> None:
    """Print the server_metrics columns and the aggregate tiers as Markdown tables."""
    from rmp_app import schema_doc

    click.echo(schema_doc.server_metrics_columns())
    click.echo()
    click.echo(schema_doc.aggregate_tiers())


@catalog.command()
@click.option("--check", is_flag=True, help="Only check: exit 1 when docs/schema.md is not up to date.")
def docs(check: bool) -> None:
    """Re-render the catalog tables of docs/schema.md (after changing rmp/catalog.py)."""
    from rmp_app import schema_doc

    try:
        text = schema_doc.SCHEMA_DOC.read_text()
        rendered = schema_doc.render(text)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    if rendered == text:
        click.echo(f"{schema_doc.SCHEMA_DOC} is up to date")
    elif check:
        click.echo(f"{schema_doc.SCHEMA_DOC} differs from rmp/catalog.py: run `rmp catalog docs`", err=True)
        raise SystemExit(1)
    else:
        schema_doc.SCHEMA_DOC.write_text(rendered)
        click.echo(f"rewrote the catalog tables of {schema_doc.SCHEMA_DOC}")
