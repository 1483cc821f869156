"""The seeds' fleet, measured: N servers x H hours on one engine, in one run.

``python -m bench.scale`` (also ``python -m bench --only scale``). Default
10,000 servers x 24 h of 30-second samples (28.8 M wide rows) on the engine
``bench.engine`` picks (``RMP_TEST_ENGINE=native`` for the native server,
``DATABASE_URL`` for any server). Phases:

1. **bulk load**: the generated fleet written to CSV files (one per group of
   servers), the first file loaded by ``psql \\copy`` and then, into the
   emptied table, by ``rmp ingest`` (the ratio), then every file by
   ``rmp ingest --jobs`` (the bulk rate). Jobs are paused meanwhile, as an
   operator backfilling would.
2. **refresh**: ``refresh_continuous_aggregate`` of one hour of all N servers
   in each aggregate (the 1-day tier can only refresh its whole day bucket,
   which is what its policy does after one more hour arrives).
3. **live**: jobs resumed, N servers' samples arrive every ``interval``
   seconds for ``live_minutes`` through ``writers`` processes that each COPY
   one batch per tick (as ``rmp collect`` does, batched); meanwhile the
   refresh / compression / retention policies run on TimescaleDB's schedule
   and dashboard queries (24 h / 7 d / 30 d of one server, organization
   totals, fleet last point) run from the aggregates and from raw rows.
   Reported: ingest lag (sample time -> committed) p50/p95 and its growth
   (last third vs first third of the phase), jobs that fell behind.
4. ``rmp dbt build`` and ``rmp report`` at that size (subprocesses, timed).
5. **storage**: bytes per row of the raw hypertable and each aggregate, before
   and after compressing every chunk; the daily growth at N servers.

The last line printed is one JSON object (also written to
``bench/results/scale-<engine>-<N>x<H>h.json``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from bench.engine import rmp_command
from rmp import catalog

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK = {"servers": 40, "hours": 2, "live_minutes": 0.5, "interval": 5.0, "writers": 2, "dashboard_repeats": 3,
         "run_dbt": False, "run_report": False}
ORG_PREFIX = "bench-scale"
TIERS = tuple(t.name for t in catalog.TIERS)
BUCKETS = {t.name: t.bucket for t in catalog.TIERS}
TARGETS = {"refresh_hour_seconds": 300.0, "dashboard_p95_ms": 200.0, "ingest_vs_copy_native": 0.9,
           "ingest_vs_copy_embedded": 0.8, "compression_reduction": 0.9}
SUMMARY_KEYS = ("servers", "rows", "ingest_rows_per_s", "ingest_vs_copy", "live_lag_p95_s", "refresh_hour_seconds",
                "dashboard_p95_ms", "compression_reduction", "dbt_build_s", "report_s")


def _say(console, text: str) -> None:
    (console.print if console else print)(text)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# ---------------------------------------------------------------- data

def _fleet(servers: int, hours: int, start: datetime):
    from ingest.generator import generate_fleet

    days = max(1, -(-hours // 24))
    orgs = max(1, servers // 1000)
    fleet = generate_fleet(seed=14, organizations=orgs, servers=servers, days=days, start=start,
                           sub_organizations=1, sites_per_server=0, anomalies_per_server=0.2)
    # the benchmark's organizations are recognisable (and removable) by their slug
    from ingest.fleet_model import Organization

    rename = {o.slug: f"{ORG_PREFIX}-{o.slug}" for o in fleet.organizations}
    fleet.organizations = [Organization(rename[o.slug], f"Scale {o.name}", rename.get(o.parent) if o.parent else None)
                           for o in fleet.organizations]
    fleet.users, fleet.applications, fleet.databases, fleet.deployments, fleet.licences = [], [], [], [], []
    fleet.servers = [s.__class__(**{**s.__dict__, "organization": rename[s.organization]}) for s in fleet.servers]
    fleet.labels = [lab.__class__(**{**lab.__dict__, "organization": rename[lab.organization]})
                    for lab in fleet.labels]
    return fleet


def _write_files(fleet, ids: list[int], hours: int, workdir: Path, servers_per_file: int, console) -> list[Path]:
    """One plain CSV per group of servers (no quotes: rmp ingest's fast path, psql's plain COPY)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    end = fleet.start + timedelta(hours=hours)
    paths = []
    for k in range(0, len(fleet.servers), servers_per_file):
        frames = []
        for sid, s in zip(ids[k:k + servers_per_file], fleet.servers[k:k + servers_per_file], strict=True):
            df = fleet.server_metrics(s)
            df = df[df["collected_at"] < end]
            df.insert(0, "server_id", sid)
            frames.append(df)
        table = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        stamps = pc.strftime(table.column("collected_at"), format="%Y-%m-%dT%H:%M:%SZ")
        table = table.set_column(table.schema.get_field_index("collected_at"), "collected_at", stamps)
        path = workdir / f"fleet-{k // servers_per_file:03d}.csv"
        pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))
        paths.append(path)
        _say(console, f"  wrote {path.name}: {table.num_rows:,} rows")
    return paths


# ---------------------------------------------------------------- jobs

def _jobs(conn) -> list[tuple[int, bool]]:
    return conn.execute("select job_id, scheduled from timescaledb_information.jobs where job_id >= 1000").fetchall()


def _set_jobs(conn, jobs: list[tuple[int, bool]], scheduled: bool | None = None) -> None:
    for job_id, was in jobs:
        conn.execute("select alter_job(%s, scheduled => %s)", [job_id, was if scheduled is None else scheduled])


def _failures(conn) -> dict[int, int]:
    return dict(conn.execute("select job_id, total_failures from timescaledb_information.job_stats").fetchall())


def _jobs_behind(conn, failed_before: dict[int, int]) -> list[dict]:
    """Jobs whose next run is overdue by more than a schedule interval, whose last run took
    longer than the interval, or that failed since ``failed_before`` was taken."""
    rows = conn.execute(
        """
        select j.job_id, j.proc_name, coalesce(ca.view_name, j.hypertable_name, ''), j.schedule_interval,
               case when isfinite(s.next_start) then s.next_start end,
               s.last_run_duration, s.total_runs, s.total_failures, s.last_run_status
        from timescaledb_information.jobs j join timescaledb_information.job_stats s using (job_id)
        left join timescaledb_information.continuous_aggregates ca
               on ca.materialization_hypertable_name = j.hypertable_name
        where j.job_id >= 1000 and j.scheduled
        """
    ).fetchall()
    now = conn.execute("select now()").fetchone()[0]
    out = []
    for job_id, proc, rel, every, next_start, last_dur, runs, failures, status in rows:
        overdue = (now - next_start) if next_start and next_start < now else timedelta(0)
        failures -= failed_before.get(job_id, 0)
        if overdue > every or failures or (last_dur and last_dur > every):
            out.append({"job_id": job_id, "proc": proc, "relation": rel, "schedule_s": every.total_seconds(),
                        "overdue_s": round(overdue.total_seconds(), 1),
                        "last_run_s": round(last_dur.total_seconds(), 1) if last_dur else None,
                        "runs": runs, "failures_in_phase": failures, "last_status": status})
    return out


# ---------------------------------------------------------------- live phase

def _writer(url: str, ids: list[int], interval: float, until: float, seed: int, out) -> None:
    """One writer process: every tick, one sample per server, one batched COPY; reports the lag."""
    from ingest.loader import load_rows
    from rmp.catalog import SERVER_METRIC_COLUMNS

    rng = np.random.default_rng(seed)
    n = len(ids)
    cores = rng.choice([2, 4, 8, 16], n)
    mem_total = rng.choice([8, 16, 32, 64], n).astype(np.int64) * 2**30
    disk_total = rng.choice([100, 250, 500], n).astype(np.int64) * 10**9
    disk_used = (disk_total * rng.uniform(0.2, 0.7, n)).astype(np.int64)
    cpu_base = rng.uniform(5, 50, n)
    lags = []
    pending: list[tuple] = []      # samples not yet written (the server was unreachable), as a collector buffers
    conn = None
    while True:
            now = time.time()
            tick = (int(now // interval) + 1) * interval
            if tick >= until:
                break
            time.sleep(max(0.0, tick - time.time()))
            ts = datetime.fromtimestamp(tick, UTC)
            cpu = np.clip(cpu_base + rng.normal(0, 3, n), 0, 100).round(2)
            mem_used = (mem_total * np.clip(rng.normal(0.5, 0.05, n), 0.05, 0.95)).astype(np.int64)
            disk_used += rng.integers(0, 2**20, n)
            load1 = (cpu / 100 * cores).round(2)
            values = {
                "cpu_percent": cpu, "load_1m": load1, "load_5m": load1, "load_15m": load1, "cpu_cores": cores,
                "memory_total_bytes": mem_total, "memory_used_bytes": mem_used,
                "memory_available_bytes": mem_total - mem_used, "memory_percent": (mem_used / mem_total * 100).round(2),
                "disk_total_bytes": disk_total, "disk_used_bytes": disk_used,
                "disk_available_bytes": disk_total - disk_used, "disk_percent": (disk_used / disk_total * 100).round(2),
                "disk_read_bytes": rng.integers(0, 10**7, n), "disk_write_bytes": rng.integers(0, 10**7, n),
                "network_rx_bytes": rng.integers(0, 10**8, n), "network_tx_bytes": rng.integers(0, 10**8, n),
                "containers_running": rng.integers(0, 10, n), "containers_total": np.full(n, 10),
            }
            cols = [values[c].tolist() for c in SERVER_METRIC_COLUMNS]
            pending.append((tick, [(sid, ts, *vals) for sid, *vals in zip(ids, *cols, strict=True)]))
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(url, autocommit=True)
                while pending:
                    sampled, rows = pending[0]
                    load_rows(conn, "server_metrics", ["server_id", "collected_at", *SERVER_METRIC_COLUMNS], rows,
                              batch_rows=len(rows) + 1)
                    lags.append((sampled, time.time() - sampled))
                    pending.pop(0)
            except psycopg.OperationalError:     # server restarting: keep the samples, retry next tick
                conn = None
    if conn is not None:
        conn.close()
    out.put(lags)


def _dashboards(url: str, ids: list[int], org_ids: list[int], stop: threading.Event, repeats_min: int,
                timings: dict[str, list[float]]) -> None:
    """Dashboard queries, aggregate and raw side by side, until ``stop`` (at least ``repeats_min`` rounds)."""
    from bench.queries import dashboard_raw_sql

    rng = random.Random(7)
    raw = dashboard_raw_sql()
    fleet_raw = ("select distinct on (server_id) server_id, collected_at, cpu_percent, memory_percent, "
                 "disk_percent from metrics.server_metrics where collected_at > now() - interval '10 minutes' "
                 "order by server_id, collected_at desc")
    org_raw = ("select s.organization_id, count(distinct s.id), avg(m.cpu_percent) "
               "from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id "
               "where s.organization_id = any(%(orgs)s) and m.collected_at > now() - interval '24 hours' "
               "group by 1")

    def timed(name: str, fn, *args, **kwargs) -> None:
        t = time.perf_counter()
        fn(*args, **kwargs)
        timings.setdefault(name, []).append((time.perf_counter() - t) * 1000)

    def fetch(query, params=None) -> list:
        return conn.execute(query, params).fetchall()

    rounds = 0
    conn = psycopg.connect(url, autocommit=True)
    while not stop.is_set() or rounds < repeats_min:
        try:
            _dashboard_round(conn, ids, org_ids, rng, raw, fleet_raw, org_raw, timed, fetch)
            rounds += 1
        except psycopg.OperationalError:        # server restarting: count it, reconnect
            timings.setdefault("connection_lost", []).append(0.0)
            time.sleep(2)
            try:
                conn = psycopg.connect(url, autocommit=True)
            except psycopg.OperationalError:
                continue
    conn.close()


def _dashboard_round(conn, ids, org_ids, rng, raw, fleet_raw, org_raw, timed, fetch) -> None:
    from rmp import queries

    sid = rng.choice(ids)
    now = datetime.now(UTC)
    for label, span in (("24h", timedelta(days=1)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30))):
        # the tier dashboards read for the span (the catalog's mapping) vs the same buckets from raw rows
        bucket = catalog.tier_for_window(span).bucket_width
        timed(f"{label}_aggregate", queries.run, conn, "server_window", server_id=sid, window=span)
        timed(f"{label}_raw", fetch, raw, {"server_id": sid, "start": now - span, "end": now, "bucket": bucket})
    timed("organization_totals_aggregate", queries.run, conn, "organization_totals")
    timed("organization_totals_raw", fetch, org_raw, {"orgs": org_ids})
    timed("fleet_last_point_aggregate", fetch, "select * from metrics.server_last_point")
    timed("fleet_last_point_raw", fetch, fleet_raw)


# ---------------------------------------------------------------- storage

def _storage(conn, name: str) -> dict:
    from bench.queries import _storage_relation

    rel = _storage_relation(conn, name)
    total = conn.execute("select coalesce(sum(total_bytes), 0) from chunks_detailed_size(%s::regclass)",
                         [rel]).fetchone()[0]
    rows = conn.execute(sql.SQL("select count(*) from {}").format(sql.SQL(rel))).fetchone()[0]
    total = int(total)
    return {"relation": rel, "rows": rows, "bytes": total, "bytes_per_row": round(total / rows, 1) if rows else None}


def _compress_all(conn, name: str) -> float:
    from bench.queries import _storage_relation

    rel = _storage_relation(conn, name)
    t = time.perf_counter()
    for (chunk,) in conn.execute("select c::text from show_chunks(%s::regclass) c", [rel]).fetchall():
        conn.execute("select compress_chunk(%s::regclass, if_not_compressed => true)", [chunk])
    return time.perf_counter() - t


# ---------------------------------------------------------------- run

def run(url: str | None = None, *, servers: int = 10_000, hours: int = 24, live_minutes: float = 10.0,
        interval: float = 30.0, writers: int = 4, jobs: int = 2, servers_per_file: int = 500,
        dashboard_repeats: int = 1, run_dbt: bool = True, run_report: bool = True,
        report_timeout: float = 600.0, cleanup: bool | None = None, out_dir: Path = RESULTS_DIR,
        console=None, engine_kind: str | None = None, label: str | None = None) -> dict:
    if url is None:
        from bench.engine import bench_engine

        with bench_engine(kind=engine_kind) as eng:
            return run(eng.url, servers=servers, hours=hours, live_minutes=live_minutes, interval=interval,
                       writers=writers, jobs=jobs, servers_per_file=servers_per_file,
                       dashboard_repeats=dashboard_repeats, run_dbt=run_dbt, run_report=run_report,
                       report_timeout=report_timeout, cleanup=False, out_dir=out_dir, console=console,
                       label=label)
    from ingest.fleet_writers import write_tenancy
    from ingest.parallel import serialized

    cleanup = bool(cleanup)

    engine = "embedded" if serialized(url) else "native"
    started_at = datetime.now(UTC)
    end = started_at.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    env = {**os.environ, "DATABASE_URL": url}
    rmp_exe = rmp_command()
    result: dict = {"benchmark": "scale", "engine": engine, "started_at": started_at.isoformat(timespec="seconds"),
                    "parameters": {"servers": servers, "hours": hours, "live_minutes": live_minutes,
                                   "interval_s": interval, "writers": writers, "jobs": jobs},
                    "data_window": {"start": start.isoformat(), "end": end.isoformat()}}
    # a label keeps earlier results of the same size (scale-native-10000x1h-<label>.json)
    out_path = out_dir / f"scale-{engine}-{servers}x{hours}h{'-' + label if label else ''}.json"

    def save() -> None:
        """The results so far: a run stopped in a later phase still leaves the earlier ones."""
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    work = Path(tempfile.mkdtemp(prefix="rmp-bench-scale-"))
    conn = psycopg.connect(url, autocommit=True)
    jobs_state = _jobs(conn)
    try:
        # ---------------------------------------------------------- 1. bulk load
        _say(console, f"scale: {servers:,} servers x {hours} h on the {engine} engine; generating ...")
        t = time.perf_counter()
        fleet = _fleet(servers, hours, start)
        write_tenancy(conn, fleet)
        ids = [fleet.server_ids[(s.organization, s.name)] for s in fleet.servers]
        org_ids = [r[0] for r in conn.execute("select id from tenancy.organizations where slug like %s",
                                              [f"{ORG_PREFIX}-%"]).fetchall()]
        files = _write_files(fleet, ids, hours, work, servers_per_file, console)
        rows = servers * hours * 3600 // int(fleet.interval_seconds)
        result["generate_s"] = round(time.perf_counter() - t, 1)
        result["csv_bytes"] = sum(p.stat().st_size for p in files)
        _set_jobs(conn, jobs_state, scheduled=False)

        with open(files[0], "rb") as fh:
            cols = fh.readline().decode().strip()
            first_rows = sum(1 for _ in fh)
        _say(console, f"bulk: psql \\copy of {files[0].name} ({first_rows:,} rows) ...")
        t = time.perf_counter()
        subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                        f"\\copy metrics.server_metrics ({cols}) from '{files[0]}' with (format csv, header true)"],
                       check=True, stdout=subprocess.DEVNULL)
        copy_s = time.perf_counter() - t
        if cleanup:     # a shared server: remove only the benchmark's rows
            conn.execute("delete from metrics.server_metrics where server_id = any(%s)", [ids])
        else:
            conn.execute("truncate metrics.server_samples")
        _say(console, f"bulk: rmp ingest of {files[0].name} ...")
        t = time.perf_counter()
        subprocess.run([rmp_exe, "ingest", "-q", str(files[0])], check=True, env=env, stdout=subprocess.DEVNULL)
        ingest_first_s = time.perf_counter() - t
        _say(console, f"bulk: rmp ingest --jobs {jobs} of the other {len(files) - 1} file(s) ...")
        t = time.perf_counter()
        if len(files) > 1:
            subprocess.run([rmp_exe, "ingest", "-q", "--jobs", str(jobs), *map(str, files[1:])], check=True, env=env,
                           stdout=subprocess.DEVNULL)
        bulk_s = time.perf_counter() - t
        loaded = conn.execute("select count(*) from metrics.server_metrics").fetchone()[0]
        if loaded != rows:
            raise RuntimeError(f"bulk load: expected {rows:,} rows, found {loaded:,}")
        rest = rows - first_rows
        result["bulk"] = {
            "rows": rows, "files": len(files),
            "psql_copy_first_file": {"rows": first_rows, "seconds": round(copy_s, 2),
                                     "rows_per_s": round(first_rows / copy_s)},
            "rmp_ingest_first_file": {"rows": first_rows, "seconds": round(ingest_first_s, 2),
                                      "rows_per_s": round(first_rows / ingest_first_s)},
            "rmp_ingest_jobs_other_files": {"rows": rest, "jobs": jobs, "seconds": round(bulk_s, 2),
                                            "rows_per_s": round(rest / bulk_s) if rest else None},
        }
        ingest_vs_copy = round(copy_s / ingest_first_s, 3)
        all_s = ingest_first_s + bulk_s
        ingest_rows_per_s = round(rows / all_s)
        _say(console, f"  psql \\copy {first_rows / copy_s:,.0f} rows/s, rmp ingest {first_rows / ingest_first_s:,.0f}"
                      f" rows/s ({ingest_vs_copy}x); whole load {ingest_rows_per_s:,} rows/s")
        conn.execute("analyze metrics.server_metrics")
        save()

        # ---------------------------------------------------------- 2. refresh one hour per tier
        hour = start + timedelta(hours=min(1, hours - 1))
        refresh = {}
        for tier in TIERS:
            bucket = BUCKETS[tier]
            lo = hour if bucket <= timedelta(hours=1) else hour.replace(hour=0)
            hi = lo + max(bucket, timedelta(hours=1))
            _say(console, f"refresh: {tier} [{lo:%Y-%m-%d %H:%M}, {hi:%Y-%m-%d %H:%M}) ...")
            t = time.perf_counter()
            conn.execute("call refresh_continuous_aggregate(%s::regclass, %s, %s)", [f"metrics.{tier}", lo, hi])
            seconds = time.perf_counter() - t
            refresh[tier] = {"window_start": lo.isoformat(), "window_end": hi.isoformat(),
                             "raw_rows": conn.execute("select count(*) from metrics.server_metrics where collected_at"
                                                      " >= %s and collected_at < %s", [lo, hi]).fetchone()[0],
                             "seconds": round(seconds, 2)}
            _say(console, f"  {seconds:.1f} s")
        result["refresh_one_hour"] = refresh
        save()

        # ---------------------------------------------------------- 3. live phase
        _set_jobs(conn, jobs_state)        # back to their own schedule
        _say(console, f"live: {servers:,} servers every {interval:g} s through {writers} writer processes for "
                      f"{live_minutes:g} min, jobs on their schedule, dashboards meanwhile ...")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        until = time.time() + live_minutes * 60
        procs = [ctx.Process(target=_writer, args=(url, ids[k::writers], interval, until, 100 + k, out))
                 for k in range(writers)]
        for p in procs:
            p.start()
        stop = threading.Event()
        timings: dict[str, list[float]] = {}
        dash = threading.Thread(target=_dashboards, args=(url, ids, org_ids, stop, dashboard_repeats, timings))
        dash.start()
        behind_seen: dict[int, dict] = {}
        failed_before = _failures(conn)
        runs_before = dict(conn.execute("select job_id, total_runs from timescaledb_information.job_stats").fetchall())
        restarts = 0
        while time.time() < until:
            try:
                with psycopg.connect(url, autocommit=True) as watch:
                    while time.time() < until:
                        for j in _jobs_behind(watch, failed_before):
                            behind_seen[j["job_id"]] = j
                        time.sleep(min(15.0, max(0.5, until - time.time())))
            except psycopg.OperationalError:    # the server went away; the writers buffer and retry
                restarts += 1
                time.sleep(2)
        lags: list[tuple[float, float]] = []
        for _ in procs:
            lags += out.get(timeout=600)
        for p in procs:
            p.join(timeout=60)
        stop.set()
        dash.join()
        with psycopg.connect(url, autocommit=True) as watch:
            for j in _jobs_behind(watch, failed_before):
                behind_seen[j["job_id"]] = j
        lags.sort()
        values = [lag for _, lag in lags]
        third = max(1, len(lags) // 3)
        first_p95, last_p95 = _pct(values[:third], 95), _pct(values[-third:], 95)
        live_rows = conn.execute("select count(*) from metrics.server_metrics where collected_at >= %s",
                                 [started_at]).fetchone()[0]
        result["live"] = {
            "batches": len(lags), "rows": live_rows, "rows_per_s": round(live_rows / (live_minutes * 60), 1),
            "lag_p50_s": round(_pct(values, 50), 3) if values else None,
            "lag_p95_s": round(_pct(values, 95), 3) if values else None,
            "lag_max_s": round(max(values), 3) if values else None,
            "lag_p95_first_third_s": round(first_p95, 3) if values else None,
            "lag_p95_last_third_s": round(last_p95, 3) if values else None,
            "lag_grows": bool(values) and last_p95 > 2 * first_p95 + 0.5,
            "jobs_behind_schedule": list(behind_seen.values()),
            "connection_losses_seen": restarts,
            # what the policies did meanwhile (the first refresh after the backfill catches up on it)
            "policy_runs": [
                {"proc": proc, "relation": rel, "runs": runs - runs_before.get(job_id, 0),
                 "last_run_s": round(dur.total_seconds(), 1) if dur else None, "last_status": status}
                for job_id, proc, rel, runs, dur, status in conn.execute(
                    "select j.job_id, j.proc_name, coalesce(ca.view_name, j.hypertable_name, ''), s.total_runs,"
                    " s.last_run_duration, s.last_run_status from timescaledb_information.jobs j"
                    " join timescaledb_information.job_stats s using (job_id)"
                    " left join timescaledb_information.continuous_aggregates ca"
                    " on ca.materialization_hypertable_name = j.hypertable_name where j.job_id >= 1000 order by 1"
                ).fetchall() if runs - runs_before.get(job_id, 0) > 0],
        }
        result["dashboards_ms"] = {name: {"n": len(v), "p50": round(_pct(v, 50), 1), "p95": round(_pct(v, 95), 1)}
                                   for name, v in sorted(timings.items())}
        save()

        # ---------------------------------------------------------- 4. dbt build, rmp report
        for key, enabled, argv, timeout in (
            ("dbt_build", run_dbt, [rmp_exe, "dbt", "build"], 1800.0),
            ("report", run_report, [rmp_exe, "report", "--output-dir", str(work / "reports")], report_timeout),
        ):
            if not enabled:
                result[key] = {"status": "skipped"}
                continue
            _say(console, f"{' '.join(argv[1:3])} ...")
            t = time.perf_counter()
            try:
                proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      timeout=timeout)
                status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: " + \
                    (proc.stderr.strip().splitlines() or [""])[-1][:300]
            except subprocess.TimeoutExpired:
                status = f"timeout after {timeout:g} s"
            result[key] = {"status": status, "seconds": round(time.perf_counter() - t, 1)}
            _say(console, f"  {result[key]}")
            save()

        # ---------------------------------------------------------- 5. storage
        _say(console, "storage: sizes, compress every chunk, sizes again ...")
        storage = {}
        for name in ("server_metrics", *TIERS):
            conn.execute(sql.SQL("analyze {}").format(sql.SQL(_storage(conn, name)["relation"])))
            before = _storage(conn, name)
            seconds = _compress_all(conn, name)
            after = _storage(conn, name)
            storage[name] = {"rows": before["rows"], "bytes_before": before["bytes"],
                             "bytes_per_row_before": before["bytes_per_row"], "bytes_after": after["bytes"],
                             "bytes_per_row_after": after["bytes_per_row"], "compress_seconds": round(seconds, 1),
                             "reduction": round(1 - after["bytes"] / before["bytes"], 4) if before["bytes"] else None}
            _say(console, f"  {name}: {before['bytes_per_row']} -> {after['bytes_per_row']} bytes/row")
        result["storage"] = storage
        per_day = {"server_metrics": servers * 86400 / fleet.interval_seconds,
                   **{name: servers * (timedelta(days=1) // bucket) for name, bucket in BUCKETS.items()}}
        result["daily_growth_bytes"] = {
            name: {"uncompressed": round(per_day[name] * s["bytes_per_row_before"]) if s["bytes_per_row_before"] else None,
                   "compressed": round(per_day[name] * s["bytes_per_row_after"]) if s["bytes_per_row_after"] else None}
            for name, s in storage.items()}
        result["jobs_failed_total"] = conn.execute(
            "select coalesce(sum(total_failures), 0) from timescaledb_information.job_stats").fetchone()[0]
        worst = max((v["p95"] for k, v in result["dashboards_ms"].items() if k.endswith("_aggregate")), default=None)
        result["summary"] = {
            "servers": servers,
            "rows": rows,
            "ingest_rows_per_s": ingest_rows_per_s,
            "ingest_vs_copy": ingest_vs_copy,
            "live_lag_p95_s": result["live"]["lag_p95_s"],
            "refresh_hour_seconds": max(r["seconds"] for r in refresh.values()),
            "dashboard_p95_ms": worst,
            "compression_reduction": storage["server_metrics"]["reduction"],
            "dbt_build_s": result["dbt_build"].get("seconds") if result["dbt_build"]["status"] == "ok" else None,
            "report_s": result["report"].get("seconds") if result["report"]["status"] == "ok" else None,
            "engine": engine,
        }
        result["targets"] = TARGETS
    finally:
        _set_jobs(conn, jobs_state)
        if cleanup:
            conn.execute("delete from tenancy.organizations where slug like %s", [f"{ORG_PREFIX}-%"])
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    return result


def check(result: dict) -> list[str]:
    """Shape and internal consistency of a result (not timings): the problems found."""
    problems = []
    s = result.get("summary", {})
    for key in SUMMARY_KEYS:
        if key not in s:
            problems.append(f"summary lacks {key}")
    if problems:
        return problems
    if s["rows"] != result["bulk"]["rows"] or s["rows"] != s["servers"] * result["parameters"]["hours"] * 120:
        problems.append("rows != servers x hours x 120")
    if s["rows"] != result["storage"]["server_metrics"]["rows"] - result["live"]["rows"]:
        problems.append("stored raw rows != bulk rows + live rows")
    if s["refresh_hour_seconds"] != max(r["seconds"] for r in result["refresh_one_hour"].values()):
        problems.append("refresh_hour_seconds is not the max over tiers")
    aggs = [v["p95"] for k, v in result["dashboards_ms"].items() if k.endswith("_aggregate")]
    if s["dashboard_p95_ms"] != max(aggs):
        problems.append("dashboard_p95_ms is not the worst aggregate query")
    if not 0 < s["compression_reduction"] < 1:
        problems.append("compression_reduction outside (0, 1)")
    st = result["storage"]["server_metrics"]
    if abs(s["compression_reduction"] - (1 - st["bytes_after"] / st["bytes_before"])) > 1e-3:
        problems.append("compression_reduction != 1 - after/before")
    if result["live"]["batches"] < 1 or result["live"]["rows"] < 1:
        problems.append("the live phase wrote nothing")
    for tier in TIERS:
        if result["refresh_one_hour"][tier]["raw_rows"] < 1:
            problems.append(f"{tier}: refreshed window holds no raw rows")
    return problems


def markdown(result: dict) -> str:
    """The figures of a result as Markdown tables (docs/scaling.md quotes them)."""
    s, p, b = result["summary"], result["parameters"], result["bulk"]
    lines = [f"{s['servers']:,} servers x {p['hours']} h = {s['rows']:,} rows, {result['engine']} engine, "
             f"{result['started_at']} -> {result.get('finished_at', '(unfinished)')}", "",
             "| bulk load | rows | seconds | rows/s |", "|---|---|---|---|"]
    for key, label in (("psql_copy_first_file", "psql \\copy, first file"),
                       ("rmp_ingest_first_file", "rmp ingest, same file"),
                       ("rmp_ingest_jobs_other_files", f"rmp ingest --jobs {p['jobs']}, other files")):
        m = b[key]
        rate = f"{m['rows_per_s']:,}" if m["rows_per_s"] is not None else "-"
        lines.append(f"| {label} | {m['rows']:,} | {m['seconds']} | {rate} |")
    lines += ["", "| refresh of one hour | window | raw rows | seconds |", "|---|---|---|---|"]
    for tier, r in result["refresh_one_hour"].items():
        lines.append(f"| {tier} | {r['window_start'][:16]} .. {r['window_end'][:16]} | {r['raw_rows']:,} | "
                     f"{r['seconds']} |")
    live = result.get("live")
    if live:
        lines += ["", f"live: {live['rows']:,} rows in {live['batches']} batches ({live['rows_per_s']} rows/s); "
                      f"lag p50 {live['lag_p50_s']} s, p95 {live['lag_p95_s']} s, max {live['lag_max_s']} s; "
                      f"p95 first third {live['lag_p95_first_third_s']} s, last third "
                      f"{live['lag_p95_last_third_s']} s; jobs behind schedule: "
                      + (", ".join(f"{j['proc']} {j['relation']} (overdue {j['overdue_s']} s, last run "
                                   f"{j['last_run_s']} s, failures {j['failures_in_phase']})"
                                   for j in live["jobs_behind_schedule"]) or "none"),
                  "", "| dashboard query | n | p50 ms | p95 ms |", "|---|---|---|---|"]
        for name, d in result["dashboards_ms"].items():
            lines.append(f"| {name} | {d['n']} | {d['p50']} | {d['p95']} |")
    if "storage" in result:
        lines += ["", "| storage | rows | bytes/row | compressed bytes/row | reduction | per day at N servers "
                      "(compressed) |", "|---|---|---|---|---|---|"]
        for name, st in result["storage"].items():
            day = result["daily_growth_bytes"][name]
            lines.append(f"| {name} | {st['rows']:,} | {st['bytes_per_row_before']} | {st['bytes_per_row_after']} | "
                         f"{100 * st['reduction']:.1f} % | {day['uncompressed'] / 1e9:.2f} GB "
                         f"({day['compressed'] / 1e9:.2f} GB) |")
    lines += ["", "```json", json.dumps(s), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    import argparse

    from rich.console import Console

    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=10_000, help="fleet size (default: 10,000, the seeds' fleet)")
    p.add_argument("--hours", type=int, default=24, help="hours of history bulk-loaded before the live phase")
    p.add_argument("--live-minutes", type=float, default=10.0,
                   help="length of the live phase (samples arriving in real time while the policies run)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between a server's samples (live)")
    p.add_argument("--writers", type=int, default=4, help="writer processes in the live phase")
    p.add_argument("--jobs", type=int, default=2, help="rmp ingest --jobs for the bulk load")
    p.add_argument("--no-dbt", action="store_true", help="skip the timed `dbt build`")
    p.add_argument("--no-report", action="store_true", help="skip the timed `rmp report`")
    p.add_argument("--report-timeout", type=float, default=600.0, help="seconds before `rmp report` is stopped")
    p.add_argument("--engine", choices=["native", "embedded"],
                   help="a private engine of this kind (default: as python -m bench: DATABASE_URL, else native "
                        "where installed)")
    p.add_argument("--quick", action="store_true", help=f"CI size: {QUICK}")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory of the results file")
    p.add_argument("--label", help="suffix of the results file name (scale-<engine>-<N>x<H>h-<label>.json), "
                                   "so earlier results of the same size stay")
    a = p.parse_args(argv)
    params = dict(servers=a.servers, hours=a.hours, live_minutes=a.live_minutes, interval=a.interval,
                  writers=a.writers, jobs=a.jobs, run_dbt=not a.no_dbt, run_report=not a.no_report,
                  report_timeout=a.report_timeout)
    if a.quick:
        params.update(QUICK)
    result = run(None, out_dir=a.out, console=Console(stderr=True), engine_kind=a.engine, label=a.label, **params)
    problems = check(result)
    for line in problems:
        print(f"inconsistent: {line}", file=sys.stderr)
    print(json.dumps(result["summary"]))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()

