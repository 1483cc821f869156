"""The latest sample of every server as a table (metrics.server_latest), kept by
statement triggers on metrics.server_metrics; metrics.server_last_point reads it
(sql/preinstall/011-server-latest.sql, sql/idempotent/server-last-point.sql).

Revision ID: 0011_server_latest
Revises: 0010_interval_true_rates
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0011_server_latest"
down_revision = "0010_interval_true_rates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/011-server-latest.sql")
    apply_idempotent(op.get_bind())       # the triggers and the view over the table
    op.execute("insert into metrics.server_latest select * from metrics.server_last_point_from_raw()")


def downgrade() -> None:
    # the view back on the raw rows first: what reads it (tenant view, dbt's views) stays
    op.execute("create or replace view metrics.server_last_point as "
               "select * from metrics.server_last_point_from_raw()")
    for trigger in ("server_latest_insert", "server_latest_change", "server_latest_truncate"):
        op.execute(f"drop trigger if exists {trigger} on metrics.server_metrics")
    op.execute("drop function if exists metrics.server_latest_after_insert()")
    op.execute("drop function if exists metrics.server_latest_rederive()")
    op.execute("drop table metrics.server_latest")
    apply_idempotent(op.get_bind())
