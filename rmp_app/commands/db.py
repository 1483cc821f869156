"""`rmp db start|stop|status|url`: manage the embedded TimescaleDB server."""

from __future__ import annotations

import click

from rmp import embedded
from rmp.db import database_url
from rmp.settings import get_settings


@click.group()
def db() -> None:
    """Manage the embedded TimescaleDB server (not needed when DATABASE_URL is set)."""


@db.command()
@click.option("--job-interval", default=2.0, show_default=True, help="Seconds between checks for due TimescaleDB jobs.")
def start(job_interval: float) -> None:
    """Start the embedded server in the background and wait until it accepts connections."""
    s = get_settings()
    before = embedded.status(s)
    st = embedded.start(s, job_interval=job_interval)
    verb = "already running" if before.running else "started"
    click.echo(f"embedded TimescaleDB {verb} (pid {st.pid}) on {s.host}:{st.port}, data in {s.pgdata}")


@db.command()
def stop() -> None:
    """Stop the embedded server cleanly (SIGTERM; committed data is kept)."""
    click.echo("stopped" if embedded.stop() else "not running")


@db.command()
def status() -> None:
    """Say whether the embedded server runs; exit 1 if it does not."""
    st = embedded.status()
    if st.running:
        click.echo(f"running (pid {st.pid}) on port {st.port}")
    else:
        click.echo("not running")
        raise SystemExit(1)


@db.command()
def url() -> None:
    """Print the connection URL (DATABASE_URL if set, else the embedded server's)."""
    click.echo(database_url())
