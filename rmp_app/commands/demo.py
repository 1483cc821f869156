"""`rmp demo`: set up everything and run the main job once."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from rmp_app.demo import EXAMPLE_QUERIES, DemoOptions, run_demo


@click.command()
@click.option("--organizations", default=3, show_default=True, type=click.IntRange(1), help="Top-level organizations (the first gets a sub-organization).")
@click.option("--servers", default=50, show_default=True, type=click.IntRange(1), help="Servers in the fleet.")
@click.option("--days", default=14, show_default=True, type=click.IntRange(2), help="Days of 30-second metrics.")
@click.option("--seed", default=42, show_default=True, help="Seed of the fleet generator (same seed, same data).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="Where the generated files go (default .rmp/demo).")
@click.option("--reports-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the report goes (default reports/).")
def demo(organizations: int, servers: int, days: int, seed: int, workdir: Path | None, reports_dir: Path | None) -> None:
    """Run the main job end to end: engine, migrations, a generated fleet loaded
    with COPY, aggregates, dbt build, forecasts, anomalies and the report.

    Uses DATABASE_URL when set, otherwise starts the embedded TimescaleDB.
    Safe to run again: nothing is loaded twice.
    """
    opts = DemoOptions(organizations=organizations, servers=servers, days=days, seed=seed)
    if workdir:
        opts.workdir = workdir
    if reports_dir:
        opts.reports_dir = reports_dir
    console = Console(stderr=True)
    result = run_demo(opts, console)
    total = sum(result.steps.values())
    click.echo(f"\nDone in {total:.0f} s. Report: {result.report_html}")
    click.echo(f"Markdown: {result.report_markdown}   injected anomalies: {result.labels}")
    click.echo(f'\nTry it in psql:  psql "{result.url}"\n')
    for title, query in EXAMPLE_QUERIES:
        click.echo(f"-- {title}\n{query}\n")
