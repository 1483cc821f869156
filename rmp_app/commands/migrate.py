"""`rmp migrate upgrade|downgrade|current`: apply the alembic revisions in alembic/versions."""

from __future__ import annotations

import click
from rich.console import Console

from rmp import db


@click.group()
def migrate() -> None:
    """Create or change the database schema (sql/ applied by alembic revisions)."""


def _move(direction: str, revision: str) -> None:
    """Upgrade or downgrade with a spinner, then say where the database went from where."""
    from rmp import migrations

    url = db.database_url()
    with Console(stderr=True).status(f"{direction[:-1]}ing to {revision}..."):  # upgrading, downgrading
        before = migrations.current(url)
        after = getattr(migrations, direction)(url, revision)
    click.echo(f"database at {after or 'base'} (was {before or 'empty'})")


@migrate.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade to REVISION (default: head); at head, re-apply views, functions and policies."""
    _move("upgrade", revision)


@migrate.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade to REVISION ('base' removes the whole schema and its data, '-1' goes one back)."""
    _move("downgrade", revision)


@migrate.command()
def current() -> None:
    """Print the revision the database is at and the head revision."""
    from rmp import migrations

    click.echo(f"current {migrations.current(db.database_url()) or 'base (not migrated)'}, head {migrations.head()}")
