"""The schema catalog in the database: metrics.aggregate_tiers (published from rmp/catalog.py),
tenant.aggregate_tiers, tenant.tier_for_window() and tenant.server_buckets()
(sql/idempotent/tier-read-path.sql), tenant views of the tiers rendered from the catalog, and
metrics.configure_policies() taking the catalog (rmp.catalog.policies()).
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent

revision = "0009_catalog"
down_revision = "0008_scaling_events"


def upgrade() -> None:
    # The policies themselves do not change (the catalog holds the values they
    # had), only metrics.configure_policies() now takes the catalog: no job is
    # touched here, so no running job can deadlock with this revision. The next
    # `rmp migrate upgrade` at head re-sets them from the catalog, jobs paused.
    apply_idempotent(op.get_bind())


def downgrade() -> None:
    op.execute("drop function if exists tenant.server_buckets(timestamptz, timestamptz, bigint[])")
    op.execute("drop function if exists tenant.tier_for_window(interval)")
    op.execute("drop view if exists metrics.aggregate_tiers cascade")  # and tenant.aggregate_tiers
