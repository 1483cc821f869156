"""The benchmark's SQL gives the right numbers (correctness only; timings are never asserted)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bench import dataset, queries
from bench.runner import BENCHMARKS, OPT_IN, markdown, parse_params, selected
from rmp.errors import UserError

# Two days ending at yesterday 00:00 UTC, like the benchmark: inside every
# retention tier, so the engine's own jobs could not remove any of it.
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
START = END - timedelta(days=2)


@pytest.fixture
def fleet(db):
    """3 servers x 2 days at 30 s (17,280 rows), every aggregate refreshed, jobs paused."""
    with queries.paused_jobs(db):
        ids = dataset.create_fleet(db, "bench-test", 3)
        rows = dataset.load_metrics(db, ids, START, END)
        for agg in queries.AGGREGATES:
            db.execute("call refresh_continuous_aggregate(%s, %s, %s)", [f"metrics.{agg}", START, END])
        yield db, ids, rows


def test_generated_fleet_has_one_row_per_server_per_30_s(fleet):
    conn, ids, rows = fleet
    assert rows == 3 * 2 * 2880
    per_server = conn.execute(
        "select server_id, count(*), min(collected_at), max(collected_at) from metrics.server_metrics "
        "group by 1 order by 1"
    ).fetchall()
    assert per_server == [(i, 5760, START, END - timedelta(seconds=30)) for i in ids]


def test_generated_fleet_is_identical_on_reload(db):
    ids = dataset.create_fleet(db, "bench-seed", 2)
    dataset.load_metrics(db, ids, START, START + timedelta(hours=1))
    first = db.execute("select * from metrics.server_metrics order by 1, 2").fetchall()
    ids2 = dataset.create_fleet(db, "bench-seed", 2)  # deletes the first fleet (cascade)
    dataset.load_metrics(db, ids2, START, START + timedelta(hours=1))
    second = db.execute("select * from metrics.server_metrics order by 1, 2").fetchall()
    assert len(first) == len(second) == 240
    assert [r[2:] for r in first] == [r[2:] for r in second]


@pytest.mark.parametrize("window", queries.DASHBOARD_WINDOWS, ids=lambda w: w.label)
def test_dashboard_aggregate_and_raw_return_the_same_numbers(fleet, window):
    conn, ids, _ = fleet
    span = min(window.span, END - START)
    params = {"server_id": ids[1], "start": END - span, "end": END, "bucket": window.bucket}
    agg = conn.execute(queries.dashboard_aggregate_sql(window.aggregate), params).fetchall()
    raw = conn.execute(queries.dashboard_raw_sql(), params).fetchall()
    expected_points = int(span / window.bucket)
    assert len(agg) == len(raw) == expected_points
    per_bucket = int(window.bucket.total_seconds() // 30)
    for a, r in zip(agg, raw, strict=True):
        assert a[0] == r[0]
        assert a[1] == r[1] == per_bucket  # sample_count
        # max and percentiles are order-independent: bit-identical. avg sums
        # doubles, whose last bit depends on the order rows were read.
        assert a[3:4] + a[4:5] + a[6:] == r[3:4] + r[4:5] + r[6:]
        assert a[2] == pytest.approx(r[2], rel=1e-12)
        assert a[5] == pytest.approx(r[5], rel=1e-12)


def test_aggregate_percentile_matches_numpy_on_the_raw_rows(fleet):
    conn, ids, _ = fleet
    bucket_start = START + timedelta(hours=13)
    cpu = [r[0] for r in conn.execute(
        "select cpu_percent from metrics.server_metrics where server_id = %s "
        "and collected_at >= %s and collected_at < %s",
        [ids[0], bucket_start, bucket_start + timedelta(hours=1)],
    ).fetchall()]
    row = conn.execute(
        "select sample_count, cpu_max_percent, cpu_p50_percent, cpu_p95_percent, cpu_p99_percent "
        "from metrics.server_metrics_1h where server_id = %s and bucket = %s",
        [ids[0], bucket_start],
    ).fetchone()
    assert len(cpu) == 120
    # percentile_cont interpolates linearly between ranks, as numpy's default does.
    assert row == (120, max(cpu), *(pytest.approx(float(np.percentile(cpu, q)), rel=1e-12) for q in (50, 95, 99)))


def test_tsbs_queries_return_the_expected_shapes(fleet):
    conn, ids, _ = fleet
    by_name = {q.name: q for q in queries.TSBS_QUERIES}
    at = START + timedelta(hours=6)

    def rows(name, **params):
        return conn.execute(by_name[name].query, params).fetchall()

    one_hour = {"start": at, "end": at + timedelta(hours=1)}
    assert len(rows("single-groupby-1-1-1", hosts=[ids[0]], **one_hour)) == 60
    assert len(rows("single-groupby-5-8-1", hosts=ids, **one_hour)) == 60
    twelve = {"start": at, "end": at + timedelta(hours=12)}
    double = rows("double-groupby-1", **twelve)
    assert len(double) == 12 * 3
    # avg per server-hour equals the 1 h aggregate's avg for that server-hour.
    agg = dict(((r[0], r[1]), r[2]) for r in conn.execute(
        "select bucket, server_id, cpu_avg_percent from metrics.server_metrics_1h "
        "where bucket >= %(start)s and bucket < %(end)s", twelve).fetchall())
    assert all(v == pytest.approx(agg[(h, s)], rel=1e-12) for h, s, v in double)

    expected_high = conn.execute(
        "select count(*) from metrics.server_metrics where cpu_percent > %s "
        "and collected_at >= %s and collected_at < %s",
        [queries.HIGH_CPU_PERCENT, twelve["start"], twelve["end"]],
    ).fetchone()[0]
    assert len(rows("high-cpu-all", **twelve)) == expected_high

    last = rows("lastpoint")
    assert [(r[0], r[1]) for r in last] == [(i, END - timedelta(seconds=30)) for i in ids]

    top = rows("groupby-orderby-limit", end=at)
    assert [r[0] for r in top] == [at - timedelta(minutes=m) for m in range(1, 6)]
    expected_max = conn.execute(
        "select max(cpu_percent) from metrics.server_metrics where collected_at >= %s and collected_at < %s",
        [at - timedelta(minutes=1), at],
    ).fetchone()[0]
    assert top[0][1] == expected_max


def test_compression_keeps_every_row_and_shrinks_the_table(fleet):
    conn, _, rows = fleet
    with queries.paused_jobs(conn):
        before = queries.storage_bytes(conn, "server_metrics")
        queries._run_job(conn, queries._job_id(conn, "policy_compression", "server_metrics"))
        after = queries.storage_bytes(conn, "server_metrics")
    assert (before["chunks"], before["compressed_chunks"]) == (2, 0)
    assert (after["chunks"], after["compressed_chunks"]) == (2, 2)
    assert after["total_bytes"] < before["total_bytes"]
    assert conn.execute("select count(*) from metrics.server_metrics").fetchone()[0] == rows


def test_run_measures_every_part_and_writes_its_json(db, migrated_url, tmp_path):
    result = queries.run(migrated_url, servers=2, days=1, refresh_servers=5, repeats=1,
                         cleanup=True, out_dir=tmp_path)
    assert result["dataset"]["rows"] == 2 * 2880
    # one day of data: a window's points are the buckets of a day in the tier the catalog picks
    # for it (the mapping itself is pinned in test_catalog; today 1 min, 5 min, 1 h)
    expected = [(w.label, storage, timedelta(days=1) // w.bucket, True)
                for storage in ("uncompressed", "compressed") for w in queries.DASHBOARD_WINDOWS]
    assert [(d["window"], d["raw_storage"], d["points"], d["same_points"]) for d in result["dashboard"]] == expected
    assert [q["query"] for q in result["tsbs"]] == [q.name for q in queries.TSBS_QUERIES]
    assert result["storage"][0]["object"] == "metrics.server_metrics"
    assert result["storage"][0]["compressed_chunks"] == "1/1"
    assert result["refresh"]["rows"] == 5 * 120
    assert [p["aggregate"] for p in result["refresh"]["per_aggregate"]] == [f"metrics.{a}" for a in queries.AGGREGATES]
    assert len(result["targets"]) == 3
    assert json.loads((tmp_path / "queries.json").read_text())["dataset"]["rows"] == 5760
    # cleanup=True removed the benchmark organization and, by cascade, its metrics.
    assert db.execute("select count(*) from metrics.server_metrics").fetchone()[0] == 0
    # The jobs it paused are scheduled again.
    assert db.execute("select bool_and(scheduled) from timescaledb_information.jobs where job_id >= 1000").fetchone()[0]


def test_params_parse_to_typed_values_and_bad_ones_name_the_input():
    assert parse_params(["queries.servers=20", "queries.days=7", "ingest.mode=copy"]) == {
        "queries": {"servers": 20, "days": 7}, "ingest": {"mode": "copy"}}
    with pytest.raises(UserError, match="'servers=20'"):
        parse_params(["servers=20"])
    with pytest.raises(UserError, match="no benchmark 'nope'"):
        parse_params(["nope.x=1"])


def test_markdown_puts_each_engines_figures_side_by_side():
    report = {
        "started_at": "t0", "finished_at": "t1", "quick": False,
        "engines": {"native": "native (PostgreSQL)", "embedded": "embedded (PGlite)"},
        "machine": {"cpus": 2, "memory_gb": 4.0, "python": "3.11"},
        "parameters": {"queries": {"servers": 2}},
        "benchmarks": {
            "queries": {
                "native": {"status": "ok", "seconds": 1.5, "result": {
                    "rows": 5760, "dashboard": [{"window": "24h", "p95_ms": 2.5}]}},
                "embedded": {"status": "ok", "seconds": 3.0, "result": {
                    "rows": 5760, "dashboard": [{"window": "24h", "p95_ms": 12.5}]}}},
            "marts": {k: {"status": "skipped", "seconds": 0, "error": "bench.marts is not present"}
                      for k in ("native", "embedded")}},
    }
    text = markdown(report)
    assert "| benchmark | native status | native seconds | embedded status | embedded seconds | parameters | note |" in text
    assert "| queries | ok | 1.50 | ok | 3.00 | servers=2 |  |" in text
    assert "| marts | skipped | 0 | skipped | 0 |  | native: bench.marts is not present; embedded: bench.marts is not present |" in text
    assert "| metric | native | embedded |" in text
    assert "| rows | 5,760 | 5,760 |" in text
    assert "| dashboard[24h].p95_ms | 2.50 | 12.50 |" in text


def test_default_run_leaves_the_opt_in_benchmarks_to_their_own_run():
    assert "scale" in OPT_IN
    assert selected(None, quick=False) == [n for n in BENCHMARKS if n != "scale"]
    assert selected(["scale"], quick=False) == ["scale"]
    assert selected(None, quick=True) == list(BENCHMARKS)
