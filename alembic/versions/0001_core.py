"""Core schema: tenancy tables, metric hypertables, analytics result tables."""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0001_core"
down_revision = None


def upgrade() -> None:
    apply_sql(
        op.get_bind(),
        "preinstall/000-schemas.sql",
        "preinstall/001-tenancy.sql",
        "preinstall/002-metrics.sql",
        "preinstall/003-analytics.sql",
    )
    apply_idempotent(op.get_bind())


def downgrade() -> None:
    # Hypertables, their chunks and their policies go with the schemas; the
    # extension stays (other databases on the server may use it).
    op.execute("drop schema if exists analytics cascade")
    op.execute("drop schema if exists metrics cascade")
    op.execute("drop schema if exists tenancy cascade")
