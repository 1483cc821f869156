"""server_metrics' rows in a layout that compresses by more than 90 %: metrics.server_samples.

The hypertable ``metrics.server_samples`` keeps percents and loads as integer
hundredths, bytes as the unit a Linux collector counts in plus a remainder, and
derived columns as their derivation plus a residual (rmp/catalog.py ``Stored``,
rmp/compact.py): lossless for whole bytes and two-decimal values, and integers,
which TimescaleDB compresses by delta-of-delta and simple-8b, where it can only
XOR floating point (bench/results/compression_columns-1000x1d.json: 91.3 % instead
of 72.9 %). ``metrics.server_metrics`` becomes a view over it with the same columns,
types and order (and the same rights: a tenant view reads it as before),
so every reader is unchanged; INSERT, COPY and UPDATE through it are encoded by
INSTEAD OF triggers, DELETE is PostgreSQL's own. Bulk writers (rmp ingest, rmp
collect) encode themselves and COPY into server_samples.

Every row is copied; the continuous aggregates are recreated over server_samples with
their rows kept (rmp/aggregate_rebuild.py) and so is every view that read the table
or them. Downgrade copies the rows back into a hypertable server_metrics.
"""

from __future__ import annotations

import logging

from alembic import op

from rmp import compact
from rmp.aggregate_rebuild import restore_after
from rmp.migrations import (
    apply_idempotent,
    configure_policies,
    create_compact_view,
    create_server_metrics_hypertable,
    create_server_samples_hypertable,
    metric_columns_of,
    rebuild_aggregates,
    warn_not_recreated,
)

revision = "0012_compact_server_samples"
down_revision = "0011_fleet_read_path"

log = logging.getLogger(__name__)


def upgrade() -> None:
    conn = op.get_bind()
    pg = conn.connection.dbapi_connection
    # nothing may write between the copy and the swap
    pg.execute("lock table metrics.server_metrics in share mode")
    # the columns this database has (a column a later revision adds comes with that revision)
    columns = metric_columns_of(conn, "metrics.server_metrics")
    create_server_samples_hypertable(conn, columns)
    names, values = compact.encoded("m", columns)
    copied = pg.execute(f"insert into {compact.QUALIFIED} ({', '.join(names)}) "
                        f"select {', '.join(values)} from metrics.server_metrics m").rowcount
    log.info("%d rows copied into %s", copied, compact.QUALIFIED)
    warn_not_recreated(rebuild_aggregates(conn, interval_column=True, compact=True, site_usage=False))

    def swap() -> None:
        pg.execute("drop table metrics.server_metrics cascade")
        create_compact_view(conn)

    warn_not_recreated(restore_after(pg, ["metrics.server_metrics"], swap))
    apply_idempotent(conn)     # the read path's triggers on server_samples, the tenant views, grants
    configure_policies(conn)


def downgrade() -> None:
    conn = op.get_bind()
    pg = conn.connection.dbapi_connection
    pg.execute(f"lock table {compact.QUALIFIED} in share mode")

    def swap() -> None:
        create_server_metrics_hypertable(conn, "server_metrics_restored")
        copied = pg.execute("insert into metrics.server_metrics_restored select * from metrics.server_metrics")
        # (the same columns in the same order: both rendered from the catalog's columns server_samples has)
        log.info("%d rows copied back into metrics.server_metrics", copied.rowcount)
        pg.execute("drop view metrics.server_metrics cascade")
        pg.execute("alter table metrics.server_metrics_restored rename to server_metrics")
        for index in ("server_time_uidx", "time_idx"):
            pg.execute(f"alter index metrics.server_metrics_restored_{index} rename to server_metrics_{index}")

    warn_not_recreated(restore_after(pg, ["metrics.server_metrics"], swap))
    warn_not_recreated(rebuild_aggregates(conn, interval_column=True, compact=False, site_usage=False))
    pg.execute(f"drop table {compact.QUALIFIED}")
    pg.execute("drop function if exists metrics.server_metrics_write()")
    pg.execute("drop function if exists metrics.server_metrics_flush()")
    apply_idempotent(conn)
    configure_policies(conn)
