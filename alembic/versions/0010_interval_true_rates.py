"""Rates true to the sampling interval: each raw sample stores the seconds it covers.

metrics.server_metrics and metrics.site_usage get ``interval_seconds`` (not
null, default and bounds from rmp/catalog.py SAMPLE_INTERVALS: 30 s for
servers, 300 s for sites — what every existing row was taken to cover). Every
continuous aggregate is recreated from its template
(sql/templates/server-metrics-aggregate.sql, site-usage-daily-aggregate.sql)
with rates over that column, plus ``sampled_seconds`` and disk read/write
rates; their rows are kept (recomputed from the raw rows where those remain,
kept from the old aggregate where retention dropped them) and so is every
view that reads them (tenant views, dbt's views, an analyst's own: same
definition, options, owner, grants, comments) — rmp/aggregate_rebuild.py.

Downgrade recreates the aggregates with rates over the constant intervals
(same columns, rows kept) and drops the columns.
"""

from __future__ import annotations

from alembic import op
from psycopg import sql

from rmp import catalog
from rmp.aggregate_rebuild import restore_after
from rmp.migrations import (
    add_interval_column,
    apply_idempotent,
    configure_policies,
    rebuild_aggregates,
    warn_not_recreated,
)

revision = "0010_interval_true_rates"
down_revision = "0009_catalog"


def upgrade() -> None:
    conn = op.get_bind()
    for interval in catalog.SAMPLE_INTERVALS.values():
        add_interval_column(conn, interval)
    warn_not_recreated(rebuild_aggregates(conn, interval_column=True))
    apply_idempotent(conn)     # tenant views of the raw tables and aggregates show the new columns
    configure_policies(conn)   # the recreated aggregates' policies, from the catalog


def downgrade() -> None:
    conn = op.get_bind()
    warn_not_recreated(rebuild_aggregates(conn, interval_column=False))
    pg = conn.connection.dbapi_connection
    tables = [f"{catalog.SCHEMA}.{t}" for t in catalog.SAMPLE_INTERVALS]

    def drop_columns() -> None:
        for interval in catalog.SAMPLE_INTERVALS.values():
            pg.execute(sql.SQL("alter table {} drop column {} cascade").format(
                sql.Identifier(catalog.SCHEMA, interval.table), sql.Identifier(interval.name)))
        apply_idempotent(conn)

    warn_not_recreated(restore_after(pg, tables, drop_columns))
    configure_policies(conn)
