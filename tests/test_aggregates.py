"""Continuous aggregates equal a direct computation over the raw rows, bucket by bucket."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from psycopg import sql
from schema_data import day_start, load, organization, server, thirty_second_day

LEVELS = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour", "1d": "1 day"}
BUCKETS_PER_DAY = {"1m": 1440, "5m": 288, "1h": 24, "1d": 1}

# Each (aggregate column, raw expression, function) compared; percentile_cont is exact per bucket.
STATS = [
    ("cpu", "cpu_percent", "_percent"),
    ("memory_used", "memory_used_bytes::double precision", "_bytes"),
    ("disk_used", "disk_used_bytes::double precision", "_bytes"),
    ("network_rx", "network_rx_bytes / interval_seconds", "_bytes_per_sec"),
    ("network_tx", "network_tx_bytes / interval_seconds", "_bytes_per_sec"),
]
# A bucket's average rate is its bytes over the seconds its samples cover (time-weighted).
AVERAGES = {"network_rx": "sum(network_rx_bytes)::double precision / sum(interval_seconds)",
            "network_tx": "sum(network_tx_bytes)::double precision / sum(interval_seconds)"}


def _columns() -> tuple[list[str], list[str]]:
    agg_cols, raw_exprs = ["sample_count"], ["count(*)"]
    for prefix, expr, suffix in STATS:
        for fn in ("avg", "min", "max"):
            agg_cols.append(f"{prefix}_{fn}{suffix}")
            raw_exprs.append(AVERAGES[prefix] if fn == "avg" and prefix in AVERAGES
                             else f"{fn}({expr})::double precision")
        for p in ("50", "95", "99"):
            agg_cols.append(f"{prefix}_p{p}{suffix}")
            raw_exprs.append(f"percentile_cont(0.{p}) within group (order by {expr})")
    agg_cols += ["memory_avg_percent", "memory_max_percent", "disk_avg_percent", "disk_max_percent"]
    raw_exprs += ["avg(memory_percent)", "max(memory_percent)", "avg(disk_percent)", "max(disk_percent)"]
    return agg_cols, raw_exprs


AGG_COLS, RAW_EXPRS = _columns()


def _from_aggregate(db, level: str, start, end) -> list[tuple]:
    query = sql.SQL(
        "select bucket, server_id, {cols} from {view} where bucket >= %s and bucket < %s order by 1, 2"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in AGG_COLS),
        view=sql.Identifier("metrics", f"server_metrics_{level}"),
    )
    return db.execute(query, (start, end)).fetchall()


def _from_raw(db, level: str, start, end) -> list[tuple]:
    query = sql.SQL(
        "select time_bucket({width}::interval, collected_at) as bucket, server_id, {exprs}"
        " from metrics.server_metrics where collected_at >= %s and collected_at < %s"
        " group by 1, 2 order by 1, 2"
    ).format(width=sql.Literal(LEVELS[level]), exprs=sql.SQL(", ").join(sql.SQL(e) for e in RAW_EXPRS))
    return db.execute(query, (start, end)).fetchall()


def _materialized_rows(db, level: str) -> int:
    schema, table = db.execute(
        "select materialization_hypertable_schema, materialization_hypertable_name"
        " from timescaledb_information.continuous_aggregates where view_name = %s",
        (f"server_metrics_{level}",),
    ).fetchone()
    return db.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))).fetchone()[0]


@pytest.fixture
def day_of_data(db):
    org = organization(db, "acme")
    servers = [server(db, org, f"web-{i}") for i in (1, 2, 3)]
    start = day_start(5)
    rows = thirty_second_day(servers, start)
    assert load(db, rows) == 8640
    return servers, start, rows


@pytest.mark.parametrize("level", list(LEVELS))
def test_aggregate_equals_raw_computation_per_bucket(db, day_of_data, level):
    servers, start, _ = day_of_data
    end = start + timedelta(days=1)

    # Real-time: nothing materialized yet, the view answers from the raw rows.
    expected = _from_raw(db, level, start, end)
    assert len(expected) == 3 * BUCKETS_PER_DAY[level]
    assert _from_aggregate(db, level, start, end) == expected

    db.execute(
        "call refresh_continuous_aggregate(%s::regclass, %s, %s)",
        (f"metrics.server_metrics_{level}", start, end),
    )
    assert _materialized_rows(db, level) == 3 * BUCKETS_PER_DAY[level]
    assert _from_aggregate(db, level, start, end) == expected
    counts = {row[AGG_COLS.index("sample_count") + 2] for row in expected}
    assert counts == {2880 // BUCKETS_PER_DAY[level]}


def test_daily_aggregate_matches_numpy_over_the_hand_built_rows(db, day_of_data):
    servers, start, rows = day_of_data
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1d', %s, %s)",
               (start, start + timedelta(days=1)))
    for sid in servers:
        cpu = np.array([r[2] for r in rows if r[0] == sid])
        rx_rate = np.array([r[7] / 30 for r in rows if r[0] == sid])
        got = db.execute(
            "select sample_count, cpu_avg_percent, cpu_min_percent, cpu_max_percent, cpu_p95_percent,"
            " network_rx_avg_bytes_per_sec, network_rx_p99_bytes_per_sec"
            " from metrics.server_metrics_1d where server_id = %s and bucket = %s",
            (sid, start),
        ).fetchone()
        assert got[0] == 2880
        assert got[1] == cpu.sum() / 2880  # quarters: the sum is exact in any order
        assert (got[2], got[3]) == (cpu.min(), cpu.max())
        assert got[4] == pytest.approx(np.percentile(cpu, 95), rel=1e-12)
        assert got[5] == rx_rate.sum() / 2880
        assert got[6] == pytest.approx(np.percentile(rx_rate, 99), rel=1e-12)


def test_hourly_p95_is_exact_not_an_average_of_finer_percentiles(db, day_of_data):
    servers, start, rows = day_of_data
    hour = start + timedelta(hours=7)
    cpu = np.array([r[2] for r in rows if r[0] == servers[0] and hour <= r[1] < hour + timedelta(hours=1)])
    assert len(cpu) == 120
    exact = np.percentile(cpu, 95)
    hourly, averaged_5m = db.execute(
        "select (select cpu_p95_percent from metrics.server_metrics_1h where server_id = %(s)s and bucket = %(h)s),"
        " (select avg(cpu_p95_percent) from metrics.server_metrics_5m"
        "   where server_id = %(s)s and bucket >= %(h)s and bucket < %(h)s + interval '1 hour')",
        {"s": servers[0], "h": hour},
    ).fetchone()
    assert hourly == pytest.approx(exact, rel=1e-12)
    assert averaged_5m != pytest.approx(exact, rel=1e-6)
