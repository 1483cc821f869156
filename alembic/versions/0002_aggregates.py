"""Continuous aggregates (1m, 5m, 1h, 1d, site_usage_daily) and every policy.

Revision ID: 0002_aggregates
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql, configure_policies

revision = "0002_aggregates"
down_revision = "0001_core"
branch_labels = None
depends_on = None

AGGREGATES = ("site_usage_daily", "server_metrics_1d", "server_metrics_1h", "server_metrics_5m", "server_metrics_1m")
RAW = ("server_metrics", "metric_samples", "site_usage")


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/004-aggregates.sql")
    apply_idempotent(op.get_bind())
    configure_policies(op.get_bind())


def downgrade() -> None:
    op.execute(
        "select delete_job(job_id) from timescaledb_information.jobs"
        " where proc_schema = 'metrics' and proc_name = 'apply_organization_retention'"
    )
    for name in AGGREGATES:  # their refresh/compression/retention jobs go with them
        op.execute(f"drop materialized view if exists metrics.{name} cascade")
    for name in RAW:
        op.execute(f"select remove_retention_policy('metrics.{name}', if_exists => true)")
        op.execute(f"select remove_compression_policy('metrics.{name}', if_exists => true)")
