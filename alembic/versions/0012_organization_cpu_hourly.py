"""CPU sums per organization and hour (metrics.organization_cpu_hourly), kept by
statement triggers on metrics.server_metrics, for the organization totals
(sql/preinstall/012-organization-cpu-hourly.sql, sql/idempotent/organization-cpu-hourly.sql).

Revision ID: 0012_organization_cpu_hourly
Revises: 0011_server_latest
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0012_organization_cpu_hourly"
down_revision = "0011_server_latest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/012-organization-cpu-hourly.sql")
    # a handful of organizations never reaches autovacuum's default analyze threshold (50 changed
    # rows): unanalysed, the planner guesses 700, walks the tree into millions of estimated rows
    # and JIT-compiles the organization totals (+100-200 ms). Analyse it on every change.
    op.execute("alter table tenancy.organizations set (autovacuum_analyze_threshold = 1, "
               "autovacuum_analyze_scale_factor = 0)")
    op.execute("analyze tenancy.organizations")
    # the table locked first: no insert may land between the fill and the triggers
    op.execute("lock table metrics.server_metrics in share mode")
    apply_idempotent(op.get_bind())
    op.execute(
        """
        insert into metrics.organization_cpu_hourly (organization_id, hour, cpu_percent_sum, cpu_sample_count)
        select servers.organization_id, time_bucket(interval '1 hour', m.collected_at),
               coalesce(sum(m.cpu_percent::numeric), 0), count(m.cpu_percent)
        from metrics.server_metrics as m
        join tenancy.servers as servers on servers.id = m.server_id
        where m.collected_at >= now() - interval '2 days'
        group by 1, 2
        """
    )


def downgrade() -> None:
    for trigger in ("organization_cpu_insert", "organization_cpu_delete", "organization_cpu_update",
                    "organization_cpu_truncate"):
        op.execute(f"drop trigger if exists {trigger} on metrics.server_metrics")
    for trigger in ("organization_cpu_server_delete", "organization_cpu_server_move"):
        op.execute(f"drop trigger if exists {trigger} on tenancy.servers")
    op.execute("drop function if exists metrics.organization_cpu_after_write()")
    op.execute("drop function if exists metrics.organization_cpu_server_change()")
    op.execute("drop function if exists metrics.organization_cpu_row_change()")
    op.execute("drop function if exists metrics.organization_cpu_move_server(bigint, bigint, bigint)")
    op.execute("drop table metrics.organization_cpu_hourly")
    op.execute("alter table tenancy.organizations reset (autovacuum_analyze_threshold, "
               "autovacuum_analyze_scale_factor)")
