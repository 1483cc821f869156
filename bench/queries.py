"""Query, refresh and storage benchmarks of the metrics store.

Measured side by side in one run on one engine:

* dashboard latency (p50/p95) for 24 h, 7 d and 30 d of one server, read
  from the aggregate a dashboard should use (1 min, 5 min, 1 h) versus the
  same numbers computed from raw rows with time_bucket + percentile_cont;
  the raw query is timed again after compression;
* the TSBS devops queries (single-groupby, double-groupby, high-cpu,
  lastpoint, groupby-orderby-limit, cpu-max-all) adapted to
  metrics.server_metrics;
* storage of the raw hypertable and the aggregates before and after their
  compression policies run (hypertable_detailed_size,
  hypertable_compression_stats);
* refresh time of every aggregate for one hour of data of
  ``refresh_servers`` servers, extrapolated linearly to 10,000 servers.

Jobs are paused while it runs so the engine's scheduler does not refresh or
compress behind the timings' back; the compression policy is then run
explicitly (``CALL run_job``) and timed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from bench import dataset
from bench.results import RESULTS_DIR, write_json
from rmp import db
from rmp.catalog import TIERS, tier_for_window

FLEET_SLUG = "bench-queries"
TARGET_DASHBOARD_P95_MS = 200.0
TARGET_REFRESH_10K_SECONDS = 300.0
TARGET_STORAGE_REDUCTION_PERCENT = 60.0
AGGREGATES = tuple(t.name for t in TIERS)


@dataclass(frozen=True)
class DashboardWindow:
    label: str
    span: timedelta
    aggregate: str  # the continuous aggregate a dashboard reads for this span
    bucket: timedelta


# The catalog's window -> tier mapping (the one the Grafana dashboard and
# sql/queries read through tenant.server_buckets): ~1,000-2,000 points per panel.
DASHBOARD_WINDOWS = tuple(
    DashboardWindow(label, span, tier_for_window(span).name, tier_for_window(span).bucket)
    for label, span in (("24h", timedelta(days=1)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30)))
)
RATE = "interval_seconds"  # byte deltas over the seconds each sample covers -> bytes per second

# The dashboard's columns, named as in docs/schema.md, and how raw rows give each.
DASHBOARD_COLUMNS = {
    "sample_count": "count(*)",
    "cpu_avg_percent": "avg(cpu_percent)",
    "cpu_max_percent": "max(cpu_percent)",
    "cpu_p95_percent": "percentile_cont(0.95) within group (order by cpu_percent)",
    "memory_used_avg_bytes": "avg(memory_used_bytes::double precision)",
    "memory_used_p95_bytes": "percentile_cont(0.95) within group (order by memory_used_bytes::double precision)",
    "disk_used_max_bytes": "max(disk_used_bytes::double precision)",
    "network_rx_p95_bytes_per_sec":
        f"percentile_cont(0.95) within group (order by network_rx_bytes / {RATE})",
    "network_tx_p95_bytes_per_sec":
        f"percentile_cont(0.95) within group (order by network_tx_bytes / {RATE})",
}


def dashboard_aggregate_sql(aggregate: str) -> sql.Composed:
    """One server's window read from a continuous aggregate (params: server_id, start, end)."""
    return sql.SQL(
        "select bucket, {cols} from metrics.{agg} "
        "where server_id = %(server_id)s and bucket >= %(start)s and bucket < %(end)s order by bucket"
    ).format(cols=sql.SQL(", ").join(map(sql.Identifier, DASHBOARD_COLUMNS)), agg=sql.Identifier(aggregate))


def dashboard_raw_sql() -> sql.Composed:
    """The same numbers computed from raw rows (params: server_id, start, end, bucket)."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} as {}").format(sql.SQL(expr), sql.Identifier(name)) for name, expr in DASHBOARD_COLUMNS.items()
    )
    return sql.SQL(
        "select time_bucket(%(bucket)s::interval, collected_at) as bucket, {cols} "
        "from metrics.server_metrics "
        "where server_id = %(server_id)s and collected_at >= %(start)s and collected_at < %(end)s "
        "group by 1 order by 1"
    ).format(cols=cols)


@dataclass(frozen=True)
class TsbsQuery:
    name: str
    description: str
    query: str
    params: Callable[[random.Random, list[int], datetime, datetime], dict]


def _window(rng: random.Random, start: datetime, end: datetime, span: timedelta) -> datetime:
    """A random start of a ``span`` window inside [start, end), on a whole minute."""
    slots = int((end - start - span).total_seconds() // 60)
    return start + timedelta(minutes=rng.randrange(max(slots, 1)))


def _hosts(rng: random.Random, ids: list[int], n: int) -> list[int]:
    return rng.sample(ids, min(n, len(ids)))


def _groupby(metrics: list[str]) -> str:
    cols = ", ".join(f"max({m}) as max_{m}" for m in metrics)
    return (
        f"select time_bucket('1 minute', collected_at) as minute, {cols} from metrics.server_metrics "
        "where server_id = any(%(hosts)s) and collected_at >= %(start)s and collected_at < %(end)s "
        "group by 1 order by 1"
    )


def _double_groupby(metrics: list[str]) -> str:
    cols = ", ".join(f"avg({m}) as avg_{m}" for m in metrics)
    return (
        f"select time_bucket('1 hour', collected_at) as hour, server_id, {cols} from metrics.server_metrics "
        "where collected_at >= %(start)s and collected_at < %(end)s group by 1, 2 order by 1, 2"
    )


FIVE_METRICS = ["cpu_percent", "load_1m", "memory_percent", "disk_percent", "containers_running"]
ALL_METRICS = FIVE_METRICS + ["load_5m", "load_15m", "memory_used_bytes", "disk_used_bytes", "network_rx_bytes"]
# TSBS's high-cpu threshold is 90 %; the generated fleet peaks near 85 %, so
# the same query shape uses its upper tail instead of returning nothing.
HIGH_CPU_PERCENT = 75.0


def _span_params(span: timedelta, hosts: int | None) -> Callable:
    def make(rng: random.Random, ids: list[int], start: datetime, end: datetime) -> dict:
        at = _window(rng, start, end, span)
        params = {"start": at, "end": at + span}
        if hosts is not None:
            params["hosts"] = _hosts(rng, ids, hosts)
        return params

    return make


TSBS_QUERIES = (
    TsbsQuery("single-groupby-1-1-1", "max cpu per minute, 1 server, 1 h",
              _groupby(["cpu_percent"]), _span_params(timedelta(hours=1), 1)),
    TsbsQuery("single-groupby-1-8-1", "max cpu per minute, 8 servers, 1 h",
              _groupby(["cpu_percent"]), _span_params(timedelta(hours=1), 8)),
    TsbsQuery("single-groupby-5-1-1", "max of 5 metrics per minute, 1 server, 1 h",
              _groupby(FIVE_METRICS), _span_params(timedelta(hours=1), 1)),
    TsbsQuery("single-groupby-5-8-1", "max of 5 metrics per minute, 8 servers, 1 h",
              _groupby(FIVE_METRICS), _span_params(timedelta(hours=1), 8)),
    TsbsQuery("single-groupby-5-1-12", "max of 5 metrics per minute, 1 server, 12 h",
              _groupby(FIVE_METRICS), _span_params(timedelta(hours=12), 1)),
    TsbsQuery("cpu-max-all-1", "max of 10 metrics per hour, 1 server, 8 h",
              _groupby(ALL_METRICS).replace("'1 minute'", "'1 hour'"), _span_params(timedelta(hours=8), 1)),
    TsbsQuery("double-groupby-1", "avg cpu per server per hour, all servers, 12 h",
              _double_groupby(["cpu_percent"]), _span_params(timedelta(hours=12), None)),
    TsbsQuery("double-groupby-5", "avg of 5 metrics per server per hour, all servers, 12 h",
              _double_groupby(FIVE_METRICS), _span_params(timedelta(hours=12), None)),
    TsbsQuery("high-cpu-1", f"rows with cpu > {HIGH_CPU_PERCENT:g} %, 1 server, 12 h",
              "select * from metrics.server_metrics where server_id = any(%(hosts)s) "
              f"and cpu_percent > {HIGH_CPU_PERCENT} "
              "and collected_at >= %(start)s and collected_at < %(end)s",
              _span_params(timedelta(hours=12), 1)),
    TsbsQuery("high-cpu-all", f"rows with cpu > {HIGH_CPU_PERCENT:g} %, all servers, 12 h",
              f"select * from metrics.server_metrics where cpu_percent > {HIGH_CPU_PERCENT} "
              "and collected_at >= %(start)s and collected_at < %(end)s",
              _span_params(timedelta(hours=12), None)),
    TsbsQuery("lastpoint", "latest row of every server (metrics.server_last_point)",
              "select * from metrics.server_last_point order by server_id",
              lambda rng, ids, start, end: {}),
    TsbsQuery("groupby-orderby-limit", "last 5 minutes' max cpu before a random time, all servers",
              "select time_bucket('1 minute', collected_at) as minute, max(cpu_percent) "
              "from metrics.server_metrics where collected_at < %(end)s "
              "group by 1 order by 1 desc limit 5",
              _span_params(timedelta(minutes=5), None)),
)


# ------------------------------------------------------------------ helpers --


def _ms_stats(samples: list[float]) -> dict:
    arr = np.array(samples) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p95_ms": round(float(np.percentile(arr, 95)), 2)}


def _timed(conn: psycopg.Connection, query, params_list: list[dict], warmup: int = 2) -> tuple[list[float], int]:
    """Wall time of each execution including fetching every row; rows of the last one."""
    for params in params_list[:warmup]:
        conn.execute(query, params).fetchall()
    samples, rows = [], 0
    for params in params_list:
        t = time.perf_counter()
        rows = len(conn.execute(query, params).fetchall())
        samples.append(time.perf_counter() - t)
    return samples, rows


@contextmanager
def paused_jobs(conn: psycopg.Connection) -> Iterator[None]:
    """Unschedule every TimescaleDB policy/job for the duration, then restore each as it was."""
    jobs = conn.execute(
        "select job_id, scheduled from timescaledb_information.jobs where job_id >= 1000"
    ).fetchall()
    for job_id, _ in jobs:
        conn.execute("select alter_job(%s, scheduled => false)", [job_id])
    try:
        yield
    finally:
        for job_id, scheduled in jobs:
            conn.execute("select alter_job(%s, scheduled => %s)", [job_id, scheduled])


def _job_id(conn: psycopg.Connection, proc: str, relation: str) -> int:
    if relation == "server_metrics":       # a view from revision 0012 on: the jobs are its table's
        relation = _storage_relation(conn, relation).removeprefix("metrics.")
    row = conn.execute(
        "select job_id from timescaledb_information.jobs "
        "where proc_name = %s and hypertable_schema = 'metrics' and hypertable_name = %s",
        [proc, relation],
    ).fetchone()
    if row is None:
        raise RuntimeError(f"no {proc} job for metrics.{relation}: are the migrations applied?")
    return row[0]


def _run_job(conn: psycopg.Connection, job_id: int) -> float:
    t = time.perf_counter()
    conn.execute(sql.SQL("call run_job({})").format(sql.Literal(job_id)))
    return time.perf_counter() - t


def _storage_relation(conn: psycopg.Connection, name: str) -> str:
    """The hypertable holding ``metrics.<name>``'s rows (a cagg's materialization table;
    server_samples for the view server_metrics from revision 0012 on)."""
    from rmp import compact

    if name == "server_metrics" and conn.execute("select to_regclass(%s)", [compact.QUALIFIED]).fetchone()[0]:
        return compact.QUALIFIED
    row = conn.execute(
        "select format('%%I.%%I', materialization_hypertable_schema, materialization_hypertable_name) "
        "from timescaledb_information.continuous_aggregates where view_schema = 'metrics' and view_name = %s",
        [name],
    ).fetchone()
    return row[0] if row else f"metrics.{name}"


def storage_bytes(conn: psycopg.Connection, name: str) -> dict:
    """Total bytes (table + indexes + toast) and compression state of ``metrics.<name>``."""
    rel = _storage_relation(conn, name)
    total = conn.execute("select total_bytes from hypertable_detailed_size(%s::regclass)", [rel]).fetchone()[0]
    stats = conn.execute(
        "select total_chunks, number_compressed_chunks, before_compression_total_bytes, "
        "after_compression_total_bytes from hypertable_compression_stats(%s::regclass)",
        [rel],
    ).fetchone()
    chunks, compressed, before, after = stats or (0, 0, None, None)
    return {
        "total_bytes": int(total or 0),
        "chunks": int(chunks or 0),
        "compressed_chunks": int(compressed or 0),
        "compressed_before_bytes": int(before) if before is not None else None,
        "compressed_after_bytes": int(after) if after is not None else None,
    }


def _reduction(before: int | None, after: int | None) -> float | None:
    if not before or after is None:
        return None
    return round(100.0 * (1 - after / before), 1)


# --------------------------------------------------------------------- run --


def run(
    url: str | None = None,
    *,
    servers: int = 10,
    days: int = 30,
    refresh_servers: int = 1000,
    repeats: int = 20,
    cleanup: bool | None = None,
    out_dir: Path = RESULTS_DIR,
    console: Console | None = None,
) -> dict:
    """Run every measurement; returns the results and writes ``out_dir/queries.json``.

    ``url``: a migrated engine; None starts a private one (bench.engine).
    ``cleanup``: delete the benchmark organization afterwards (default: only
    on a shared engine, i.e. when ``url`` was given).
    """
    if url is None:
        from bench.engine import bench_engine

        with bench_engine() as eng:
            return run(eng.url, servers=servers, days=days, refresh_servers=refresh_servers,
                       repeats=repeats, cleanup=False, out_dir=out_dir, console=console)
    if servers < 1 or days < 1 or refresh_servers < 1 or repeats < 1:
        raise ValueError("servers, days, refresh_servers and repeats must be at least 1")
    console = console or Console(stderr=True)
    cleanup = True if cleanup is None else cleanup
    # Data ends at yesterday 00:00 UTC: every raw chunk is older than the
    # compression policy's 1 day, and all of it lies inside every retention tier
    # that matters for the windows read (1 min: 30 d).
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    start = end - timedelta(days=days)
    rng = random.Random(20240601)
    result: dict = {
        "benchmark": "queries",
        "parameters": {"servers": servers, "days": days, "refresh_servers": refresh_servers, "repeats": repeats},
        "data_window": {"start": start.isoformat(), "end": end.isoformat()},
    }
    steps = 6
    with db.connect(url, autocommit=True) as conn, paused_jobs(conn), Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as progress:
        overall = progress.add_task("queries: overall", total=steps)
        try:
            ids = _load(conn, progress, servers, start, end, result)
            progress.advance(overall)
            _materialize(conn, progress, start, end, result)
            progress.advance(overall)
            _dashboard(conn, progress, ids, start, end, repeats, rng, result, phase="uncompressed")
            _tsbs(conn, progress, ids, start, end, repeats, rng, result)
            progress.advance(overall)
            _storage(conn, progress, result)
            progress.advance(overall)
            _dashboard(conn, progress, ids, start, end, repeats, rng, result, phase="compressed")
            progress.advance(overall)
            _refresh(conn, progress, refresh_servers, end, result)
            progress.advance(overall)
        finally:
            if cleanup:
                conn.execute("delete from tenancy.organizations where slug = %s", [FLEET_SLUG])
    result["targets"] = _targets(result)
    write_json(out_dir, "queries.json", result)
    return result


def _load(conn, progress, servers, start, end, result) -> list[int]:
    days = int((end - start) / timedelta(days=1))
    task = progress.add_task(f"load {servers} servers x {days} d (generate_series)", total=servers * days * 2880)
    ids = dataset.create_fleet(conn, FLEET_SLUG, servers)
    t = time.perf_counter()
    rows = dataset.load_metrics(conn, ids, start, end, on_step=lambda n: progress.advance(task, n))
    seconds = time.perf_counter() - t
    result["dataset"] = {"servers": servers, "rows": rows, "load_seconds": round(seconds, 2),
                         "load_rows_per_sec": round(rows / seconds)}
    return ids


def _materialize(conn, progress, start, end, result) -> None:
    task = progress.add_task("materialize aggregates", total=len(AGGREGATES))
    out = {}
    for agg in AGGREGATES:
        t = time.perf_counter()
        conn.execute("call refresh_continuous_aggregate(%s, %s, %s)", [f"metrics.{agg}", start, end])
        out[agg] = round(time.perf_counter() - t, 2)
        progress.advance(task)
    result["dataset"]["materialize_seconds"] = out


def _dashboard(conn, progress, ids, start, end, repeats, rng, result, *, phase: str) -> None:
    task = progress.add_task(f"dashboard queries ({phase} raw)", total=len(DASHBOARD_WINDOWS))
    rows_out = result.setdefault("dashboard", [])
    for w in DASHBOARD_WINDOWS:
        span = min(w.span, end - start)
        params = [
            {"server_id": rng.choice(ids), "start": end - span, "end": end, "bucket": w.bucket}
            for _ in range(repeats)
        ]
        agg_samples, points = _timed(conn, dashboard_aggregate_sql(w.aggregate), params)
        raw_samples, raw_points = _timed(conn, dashboard_raw_sql(), params)
        agg, raw = _ms_stats(agg_samples), _ms_stats(raw_samples)
        rows_out.append({
            "window": w.label,
            "raw_storage": phase,
            "aggregate": f"metrics.{w.aggregate}",
            "points": points,
            "aggregate_p50_ms": agg["p50_ms"],
            "aggregate_p95_ms": agg["p95_ms"],
            "raw_p50_ms": raw["p50_ms"],
            "raw_p95_ms": raw["p95_ms"],
            "raw_over_aggregate_p50": round(raw["p50_ms"] / agg["p50_ms"], 1) if agg["p50_ms"] else None,
            "same_points": points == raw_points,
        })
        progress.advance(task)


def _tsbs(conn, progress, ids, start, end, repeats, rng, result) -> None:
    task = progress.add_task("TSBS devops queries (raw, uncompressed)", total=len(TSBS_QUERIES))
    out = []
    for q in TSBS_QUERIES:
        params = [q.params(rng, ids, start, end) for _ in range(repeats)]
        samples, rows = _timed(conn, q.query, params)
        out.append({"query": q.name, "description": q.description, "rows_last_run": rows, **_ms_stats(samples)})
        progress.advance(task)
    result["tsbs"] = out


def _storage(conn, progress, result) -> None:
    names = ("server_metrics", *AGGREGATES)
    task = progress.add_task("compression policies + sizes", total=len(names))
    out = []
    for name in names:
        before = storage_bytes(conn, name)
        seconds = _run_job(conn, _job_id(conn, "policy_compression", name))
        after = storage_bytes(conn, name)
        out.append({
            "object": f"metrics.{name}",
            "before_bytes": before["total_bytes"],
            "after_bytes": after["total_bytes"],
            "reduction_percent": _reduction(before["total_bytes"], after["total_bytes"]),
            "compressed_chunks": f"{after['compressed_chunks']}/{after['chunks']}",
            "compressed_chunks_reduction_percent": _reduction(after["compressed_before_bytes"],
                                                              after["compressed_after_bytes"]),
            "compression_job_seconds": round(seconds, 2),
        })
        progress.advance(task)
    raw = out[0]
    rows = result["dataset"]["rows"]
    result["storage"] = out
    result["storage_summary"] = {
        "raw_before_bytes": raw["before_bytes"],
        "raw_after_bytes": raw["after_bytes"],
        "raw_reduction_percent": raw["reduction_percent"],
        "raw_bytes_per_row_before": round(raw["before_bytes"] / rows, 1),
        "raw_bytes_per_row_after": round(raw["after_bytes"] / rows, 1),
        "aggregates_after_bytes": sum(r["after_bytes"] for r in out[1:]),
        "aggregates_over_raw_compressed": round(sum(r["after_bytes"] for r in out[1:]) / raw["after_bytes"], 2),
    }


def _refresh(conn, progress, refresh_servers, end, result) -> None:
    task = progress.add_task(f"refresh 1 h of {refresh_servers} servers", total=1 + len(AGGREGATES))
    ids = dataset.add_servers(conn, FLEET_SLUG, refresh_servers, prefix="refresh")
    hour_start, hour_end = end, end + timedelta(hours=1)
    t = time.perf_counter()
    rows = dataset.load_metrics(conn, ids, hour_start, hour_end, seed=0.17, step=timedelta(hours=1))
    load_seconds = time.perf_counter() - t
    progress.advance(task)
    per = []
    for agg in AGGREGATES:
        # A refresh window must cover whole buckets: the day for the 1 d aggregate.
        window_end = hour_start + timedelta(days=1) if agg.endswith("_1d") else hour_end
        t = time.perf_counter()
        conn.execute("call refresh_continuous_aggregate(%s, %s, %s)", [f"metrics.{agg}", hour_start, window_end])
        per.append({"aggregate": f"metrics.{agg}", "seconds": round(time.perf_counter() - t, 3)})
        progress.advance(task)
    total = sum(p["seconds"] for p in per)
    result["refresh"] = {
        "servers": refresh_servers,
        "rows": rows,
        "insert_seconds": round(load_seconds, 2),
        "per_aggregate": per,
        "total_seconds": round(total, 2),
        # Linear in rows: each refresh scans its window's raw rows once.
        "extrapolated_10000_servers_seconds": round(total * 10000 / refresh_servers, 1),
    }


def _targets(result: dict) -> list[dict]:
    out = []
    agg_p95 = max(
        (r["aggregate_p95_ms"] for r in result.get("dashboard", [])),
        default=None,
    )
    if agg_p95 is not None:
        out.append({"target": f"dashboard query p95 < {TARGET_DASHBOARD_P95_MS:g} ms (worst window, aggregates)",
                    "measured": f"{agg_p95} ms", "met": agg_p95 < TARGET_DASHBOARD_P95_MS})
    if "refresh" in result:
        ext = result["refresh"]["extrapolated_10000_servers_seconds"]
        out.append({"target": f"refresh 1 h of 10,000 servers < {TARGET_REFRESH_10K_SECONDS:g} s",
                    "measured": f"{ext} s (extrapolated from {result['refresh']['servers']} servers)",
                    "met": ext < TARGET_REFRESH_10K_SECONDS})
    if "storage_summary" in result:
        red = result["storage_summary"]["raw_reduction_percent"]
        out.append({"target": f"raw storage reduced > {TARGET_STORAGE_REDUCTION_PERCENT:g} %",
                    "measured": f"{red} %", "met": red is not None and red > TARGET_STORAGE_REDUCTION_PERCENT})
    return out

# Sizes for `rmp bench --quick` (a smoke run of a minute or so).
QUICK = {"servers": 3, "days": 3, "refresh_servers": 100, "repeats": 5}
