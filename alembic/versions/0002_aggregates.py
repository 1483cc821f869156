"""Continuous aggregates (the tiers of metrics.server_metrics and the daily site usage) and every policy."""

from __future__ import annotations

from alembic import op

from rmp import catalog
from rmp.migrations import (
    apply_idempotent,
    apply_sql,
    configure_policies,
    create_tier,
    drop_aggregate,
    raw_hypertables,
)

revision = "0002_aggregates"
down_revision = "0001_core"

# The tiers this revision creates, each rendered from sql/templates/server-metrics-aggregate.sql;
# a tier added to the catalog later comes with its own revision.
TIERS = ("1m", "5m", "1h", "1d")


def upgrade() -> None:
    # Rates over the 30 s every sample was assumed to cover; revision 0010 recreates
    # the tiers with the per-sample interval_seconds column it adds.
    for resolution in TIERS:
        create_tier(op.get_bind(), catalog.tier(resolution), interval_column=False)
    apply_sql(op.get_bind(), "preinstall/004-aggregates.sql")
    apply_idempotent(op.get_bind())
    configure_policies(op.get_bind())


def downgrade() -> None:
    op.execute(
        "select delete_job(job_id) from timescaledb_information.jobs"
        " where proc_schema = 'metrics' and proc_name = 'apply_organization_retention'"
    )
    for aggregate in (catalog.SITE_USAGE_DAILY, *(catalog.tier(r) for r in reversed(TIERS))):
        drop_aggregate(op.get_bind(), aggregate)
    for name in raw_hypertables(op.get_bind()):
        op.execute(f"select remove_retention_policy('metrics.{name}', if_exists => true)")
        op.execute(f"select remove_compression_policy('metrics.{name}', if_exists => true)")
