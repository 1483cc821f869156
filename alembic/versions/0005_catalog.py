"""The schema catalog in the database: metrics.aggregate_tiers (published from rmp/catalog.py),
metrics.tier_for_window() and metrics.server_buckets() (sql/idempotent/server-buckets.sql), and
policies and tenant views rendered from the catalog.

Revision ID: 0005_catalog
Revises: 0004_analytics_flags
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, configure_policies

revision = "0005_catalog"
down_revision = "0004_analytics_flags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_idempotent(op.get_bind())
    configure_policies(op.get_bind())


def downgrade() -> None:
    op.execute("drop function if exists metrics.server_buckets(timestamptz, timestamptz, bigint[])")
    op.execute("drop function if exists metrics.tier_for_window(interval)")
    op.execute("drop view if exists metrics.aggregate_tiers")
