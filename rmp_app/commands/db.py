"""`rmp db start|stop|status|url`: manage the engine the platform runs itself (embedded or native)."""

from __future__ import annotations

import dataclasses

import click

from rmp import embedded
from rmp.db import database_url, native_server
from rmp.settings import ENGINES, Settings, get_settings

engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default=None,
    help="embedded (WebAssembly TimescaleDB) or native (a PostgreSQL cluster with TimescaleDB); default RMP_ENGINE or embedded.",
)


def _settings(engine: str | None) -> Settings:
    s = get_settings()
    return dataclasses.replace(s, engine=engine) if engine else s


@click.group()
def db() -> None:
    """Manage the engine the platform starts itself (not needed when DATABASE_URL is set)."""


@db.command()
@engine_option
@click.option("--job-interval", default=2.0, show_default=True, help="Embedded engine: seconds between checks for due TimescaleDB jobs.")
def start(engine: str | None, job_interval: float) -> None:
    """Start the engine in the background and wait until it accepts connections."""
    s = _settings(engine)
    if s.engine == "native":
        server = native_server(s)
        verb = "already running" if server.status().running else "started"
        st = server.start()
        click.echo(f"native TimescaleDB {verb} (pid {st.pid}) on {s.host}:{st.port}, data in {server.pgdata}")
        return
    before = embedded.status(s)
    st = embedded.start(s, job_interval=job_interval)
    verb = "already running" if before.running else "started"
    click.echo(f"embedded TimescaleDB {verb} (pid {st.pid}) on {s.host}:{st.port}, data in {s.pgdata}")


@db.command()
@engine_option
def stop(engine: str | None) -> None:
    """Stop the engine cleanly (committed data is kept)."""
    s = _settings(engine)
    stopped = native_server(s).stop() if s.engine == "native" else embedded.stop(s)
    click.echo("stopped" if stopped else "not running")


@db.command()
@engine_option
def status(engine: str | None) -> None:
    """Say whether the engine runs; exit 1 if it does not."""
    s = _settings(engine)
    st = native_server(s).status() if s.engine == "native" else embedded.status(s)
    if st.running:
        click.echo(f"{s.engine} running (pid {st.pid}) on port {st.port}")
    else:
        click.echo(f"{s.engine} not running")
        raise SystemExit(1)


@db.command()
@engine_option
def url(engine: str | None) -> None:
    """Print the connection URL (DATABASE_URL if set, else the engine's)."""
    click.echo(database_url(_settings(engine)))
