"""Alembic environment: online migrations only, URL from rmp.db.

``rmp.migrations`` puts the target URL in ``config.attributes['url']``; the
plain ``alembic`` command falls back to ``rmp.db.database_url()``
(DATABASE_URL or the running embedded engine). Every revision runs in its
own transaction, so a failed revision leaves the previous one in place.
"""

from __future__ import annotations

from alembic import context

from rmp import db

config = context.config


def run_migrations_online() -> None:
    url = config.attributes.get("url") or db.database_url()
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    with db.engine(url).connect() as connection:
        _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        transaction_per_migration=True,
        version_table_schema="public",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: revisions apply SQL files to a live database")
run_migrations_online()
