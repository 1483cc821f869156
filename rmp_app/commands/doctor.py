"""`rmp doctor`: audit the live database; exit 1 when anything is wrong."""

from __future__ import annotations

from datetime import timedelta

import click

from rmp import db


@click.command()
@click.option("--overdue-grace", default=10, show_default=True, type=click.IntRange(min=0),
              help="Minutes past its next start before a job counts as overdue.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the problems.")
def doctor(overdue_grace: int, quiet: bool) -> None:
    """Check extension, migrations, hypertables, aggregates, policies, the
    refresh-inside-retention invariant and job health."""
    from rmp import doctor as checks_module

    with db.connect(db.database_url(), autocommit=True) as conn:
        checks = checks_module.run(conn, overdue_grace=timedelta(minutes=overdue_grace))
    bad = checks_module.problems(checks)
    for check in checks:
        if check.ok and quiet:
            continue
        mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red", bold=True)
        click.echo(f"{mark} {check.name}: {check.detail}")
    if bad:
        click.echo(f"{len(bad)} problem(s) found", err=True)
        raise SystemExit(1)
    click.echo(f"all {len(checks)} checks passed")
