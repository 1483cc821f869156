"""The fleet-wide dashboards' read path: the latest sample of every server
(metrics.server_latest, what metrics.server_last_point reads) and CPU sums per
organization and hour of the last two days (metrics.organization_cpu_hourly, what
sql/queries/organization_totals.sql reads), kept by triggers on
metrics.server_metrics; plus the trigger that logs COPY's continuous-aggregate
invalidations, which TimescaleDB 2.23 stops logging itself once a trigger with a
transition table exists (sql/idempotent/cagg-copy-invalidations.sql).
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0011_fleet_read_path"
down_revision = "0010_interval_true_rates"


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/011-server-latest.sql", "preinstall/012-organization-cpu-hourly.sql")
    # a handful of organizations never reaches autovacuum's default analyze threshold (50 changed
    # rows): unanalysed, the planner guesses 700, walks the tree into millions of estimated rows
    # and JIT-compiles the organization totals (+100-200 ms). Analyse it on every change.
    op.execute("alter table tenancy.organizations set (autovacuum_analyze_threshold = 1, "
               "autovacuum_analyze_scale_factor = 0)")
    op.execute("analyze tenancy.organizations")
    # the table locked first: no insert may land between the fill and the triggers
    op.execute("lock table metrics.server_metrics in share mode")
    apply_idempotent(op.get_bind())       # the triggers and the views over the tables
    op.execute("insert into metrics.server_latest select * from metrics.server_last_point_from_raw()")
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
    # the view back on the raw rows first: what reads it (tenant view, dbt's views) stays
    # (with the same columns: interval_seconds from 0010 on, sql/idempotent/server-last-point.sql)
    op.execute("select metrics.create_server_last_point_view_on_raw()")
    # (the names of 0011 and those sql/idempotent/read-path-changes.sql replaced them with)
    for trigger in ("server_latest_insert", "server_latest_change", "server_latest_truncate",
                    "organization_cpu_insert", "organization_cpu_delete", "organization_cpu_update",
                    "organization_cpu_truncate", "cagg_copy_invalidations",
                    "read_path_log_delete", "read_path_log_update", "read_path_apply"):
        op.execute(f"drop trigger if exists {trigger} on metrics.server_metrics")
    for trigger in ("organization_cpu_server_delete", "organization_cpu_server_move"):
        op.execute(f"drop trigger if exists {trigger} on tenancy.servers")
    for function in ("server_latest_after_insert()", "server_latest_rederive()", "organization_cpu_after_write()",
                     "organization_cpu_server_change()", "organization_cpu_row_change()",
                     "organization_cpu_move_server(bigint, bigint, bigint)", "log_cagg_copy_invalidations()",
                     "server_last_point_from_raw()",
                     "server_latest_refresh(bigint[])", "server_latest_after_truncate()",
                     "organization_cpu_hourly_add(bigint[], timestamptz[], numeric[], bigint[])",
                     "read_path_changes_create()", "read_path_log_change()", "read_path_apply_changes()"):
        op.execute(f"drop function if exists metrics.{function}")
    op.execute("drop table metrics.organization_cpu_hourly")
    op.execute("drop table metrics.server_latest")
    op.execute("alter table tenancy.organizations reset (autovacuum_analyze_threshold, "
               "autovacuum_analyze_scale_factor)")
    apply_idempotent(op.get_bind())
