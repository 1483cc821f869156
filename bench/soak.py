"""Soak: the whole platform running at once for M minutes on one engine.

``python -m bench.soak --minutes 30 --engine native|embedded`` starts a private
engine (bench.engine), migrates it, loads two days of history for the soak
fleet plus one day 95 days old (for retention to drop), then for M minutes:

- ``--writers`` processes each write one sample per server of their share of
  ``--servers`` every ``--interval`` seconds (COPY through ingest.loader);
- the policies run on their schedules: each whose own schedule is longer than
  the soak (compression 12 h, retention 1 d, the 1-hour/1-day/site refreshes, the
  organization retention) every ``--job-every`` seconds, the others (1- and
  5-minute refreshes) on their own; per policy the results say how often it
  ran (job statistics and the log of every run, which must agree) and whether
  each run started when it was due;
- ``rmp dbt build`` every ``--dbt-every`` minutes and ``rmp report`` (forecasts,
  anomalies, report) every ``--report-every`` minutes, as subprocesses;
- a dashboard process runs the analysts' queries (sql/queries/) in a loop.

Sampled every ``--sample-every`` s: RSS and USS of every process (this driver,
the writers, the dashboard process, the server's processes), WAL position,
database size, data directory size. Reported: errors of every kind (must be
0), rows written vs rows present (must be equal), per-process memory slope
after the warm-up (MB/hour, linear fit), WAL and disk growth, job runs and
failures. Results: ``bench/results/soak-<engine>-<M>min.json`` and ``.md``.
Exit status 1 when errors > 0, written != present, a policy's statistics and
run log disagree, or a policy that was due never ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
import psycopg

from bench.engine import bench_engine, describe
from bench.results import RESULTS_DIR, write_json

ORG = "soak"
# a process counts as memory-flat when its fitted growth after the warm-up stays
# under this many MB per hour, or this fraction of its mean size per hour
FLAT_MB_PER_HOUR, FLAT_FRACTION_PER_HOUR = 10.0, 0.05


# ---------------------------------------------------------------- load

def _fleet(servers: int, days: int, start: datetime):
    from ingest.generator import generate_fleet

    return generate_fleet(16, 1, servers, days, start, sub_organizations=0, sites_per_server=0)


def preload(url: str, servers: int, now: datetime) -> tuple[list[int], int, int]:
    """History for the soak fleet: two recent days (compressible) and one day 95 days
    old (past the 90-day raw retention), compressed as it would be in production (a
    chunk is compressed a day or a week old, months before retention drops it). Left
    uncompressed, the first compression run of the soak lists it and retention drops
    it under that run: the run fails on a chunk that is gone (seen on the native
    engine). Returns (server ids, recent rows, old rows)."""
    from ingest.fleet_writers import write_fleet

    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    recent = _fleet(servers, 2, midnight - timedelta(days=2))
    old = _fleet(servers, 1, midnight - timedelta(days=95))
    n_recent = write_fleet(recent, url).server_metrics
    n_old = write_fleet(old, url).server_metrics
    with psycopg.connect(url, autocommit=True) as conn:
        for (chunk,) in conn.execute(
                "select format('%%I.%%I', c.chunk_schema, c.chunk_name) from timescaledb_information.chunks c"
                " join timescaledb_information.hypertables h using (hypertable_schema, hypertable_name)"
                " where h.compression_enabled and not c.is_compressed and c.range_end < %s",
                (midnight - timedelta(days=60),)).fetchall():
            conn.execute("select compress_chunk(%s::regclass)", (chunk,))
    ids = sorted(recent.server_ids.values())
    return ids, n_recent, n_old


# ---------------------------------------------------------------- writers and dashboards

def _writer(url: str, ids: list[int], interval: float, start: float, until: float, name: str, out) -> None:
    """Every tick one sample per server, one COPY batch; counts what it inserted and every error."""
    from ingest.loader import load_rows
    from rmp.catalog import SERVER_METRIC_COLUMNS

    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    n = len(ids)
    base = rng.uniform(5, 60, n)
    written = errors = 0
    messages: list[str] = []
    lags: list[float] = []
    conn = None
    tick = start
    while tick < until:
        time.sleep(max(0.0, tick - time.time()))
        ts = datetime.fromtimestamp(tick, UTC)
        cpu = np.clip(base + rng.normal(0, 5, n), 0, 100).round(2)
        mem_total = np.full(n, 16 * 2**30, dtype=np.int64)
        mem_used = (mem_total * np.clip(rng.normal(0.5, 0.05, n), 0.05, 0.95)).astype(np.int64)
        disk_total = np.full(n, 500 * 10**9, dtype=np.int64)
        disk_used = (disk_total * 0.4).astype(np.int64) + int((tick - start) * 1000)
        values = {
            "cpu_percent": cpu, "load_1m": cpu / 25, "load_5m": cpu / 25, "load_15m": cpu / 25,
            "cpu_cores": np.full(n, 4), "memory_total_bytes": mem_total, "memory_used_bytes": mem_used,
            "memory_available_bytes": mem_total - mem_used, "memory_percent": (mem_used / mem_total * 100).round(3),
            "disk_total_bytes": disk_total, "disk_used_bytes": disk_used,
            "disk_available_bytes": disk_total - disk_used, "disk_percent": (disk_used / disk_total * 100).round(3),
            "disk_read_bytes": rng.integers(0, 10**7, n), "disk_write_bytes": rng.integers(0, 10**7, n),
            "network_rx_bytes": rng.integers(0, 10**8, n), "network_tx_bytes": rng.integers(0, 10**8, n),
            "containers_running": rng.integers(0, 10, n), "containers_total": np.full(n, 10),
        }
        cols = [values[c].tolist() for c in SERVER_METRIC_COLUMNS]
        # the seconds each sample covers: rates are counts over it (revision 0010)
        rows = [(sid, ts, *vals, interval) for sid, *vals in zip(ids, *cols, strict=True)]
        try:
            if conn is None:
                conn = psycopg.connect(url, autocommit=True, application_name=name)
            inserted, _ = load_rows(conn, "server_metrics",
                                    ["server_id", "collected_at", *SERVER_METRIC_COLUMNS, "interval_seconds"],
                                    rows, batch_rows=len(rows) + 1)
            written += inserted
            lags.append(time.time() - tick)
        except (psycopg.Error, OSError) as exc:
            errors += 1
            messages.append(f"{name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)}")
            if conn is not None:
                conn.close()
            conn = None
        tick += interval
    if conn is not None:
        conn.close()
    out.put({"name": name, "written": written, "errors": errors, "messages": messages[:5], "lags": lags})


def _dashboards(url: str, server_ids: list[int], stop, out) -> None:
    """The analysts' queries from sql/queries/, in a loop with a short pause."""
    from rmp import queries

    rng = np.random.default_rng(7)
    timings: list[float] = []
    errors = 0
    messages: list[str] = []
    conn = None
    while not stop.is_set():
        sid = int(rng.choice(server_ids))
        for name, params in (("server_window", {"server_id": sid, "window": timedelta(days=1)}),
                             ("server_window", {"server_id": sid, "window": timedelta(days=7)}),
                             ("server_window", {"server_id": sid, "window": timedelta(days=30)}),
                             ("organization_totals", {})):
            try:
                if conn is None:
                    conn = psycopg.connect(url, autocommit=True, application_name="soak-dashboards")
                t = time.perf_counter()
                queries.run(conn, name, **params)
                conn.execute("select * from metrics.server_last_point").fetchall()
                timings.append((time.perf_counter() - t) * 1000)
            except (psycopg.Error, OSError) as exc:
                errors += 1
                messages.append(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        stop.wait(0.5)
    out.put({"queries": len(timings), "errors": errors, "messages": messages[:5],
             "p50_ms": _pct(timings, 50), "p95_ms": _pct(timings, 95)})


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


# ---------------------------------------------------------------- dbt and reports

def _command(kind: str, url: str, every: float, first: float, until: float, workdir: Path,
             runs: list[dict], start: float) -> None:
    """`rmp dbt build` or `rmp report` every ``every`` seconds, as an operator's cron
    would (each kind on its own, so a long dbt build does not delay the report). A run
    that would end after the soak by the last one's duration is not started (counted
    in ``skipped``): the soak's length is the measured window, not a run's tail."""
    env = {**os.environ, "DATABASE_URL": url, "RMP_READ_DATABASE_URL": ""}
    args = {"dbt": ["dbt", "build"], "report": ["report", "--out", str(workdir / "reports"), "--days", "2"]}[kind]
    due, last = first, 0.0
    while due < until:
        time.sleep(max(0.0, due - time.time()))
        if time.time() + last > until:
            runs.append({"kind": kind, "at_s": round(time.time() - start, 1), "skipped": True,
                         "why": f"would end after the soak (the last run took {last:.0f} s)"})
            return
        t = time.time()
        done = subprocess.run([sys.executable, "-m", "rmp_app", *args], capture_output=True, text=True,
                              env=env, timeout=3600)
        last = time.time() - t
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] if done.returncode else []
        runs.append({"kind": kind, "at_s": round(t - start, 1), "seconds": round(last, 1),
                     "exit": done.returncode, "error": tail[0] if tail else None})
        due = max(due + every, time.time())


def _commands(url: str, dbt_every: float, report_every: float, start: float, until: float, workdir: Path,
              runs: list[dict]) -> list[threading.Thread]:
    # the first run of each a quarter of its period into the soak (at most a minute)
    threads = [threading.Thread(target=_command, args=("dbt", url, dbt_every, start + min(60.0, dbt_every / 4),
                                                       until, workdir, runs, start), daemon=True),
               threading.Thread(target=_command, args=("report", url, report_every,
                                                       start + min(60.0, report_every / 4), until, workdir, runs,
                                                       start), daemon=True)]
    for t in threads:
        t.start()
    return threads


# ---------------------------------------------------------------- sampling

def _server_processes(url: str, kind: str, workdir: Path) -> tuple[psutil.Process, Path]:
    """The engine's main process and its data directory."""
    if kind == "embedded":
        from rmp.embedded import status
        from rmp.settings import Settings

        settings = Settings(database_url=None, home=workdir / "embedded", data_dir=None)
        return psutil.Process(status(settings).pid), settings.pgdata
    with psycopg.connect(url, autocommit=True) as conn:
        data = Path(conn.execute("show data_directory").fetchone()[0])
    return psutil.Process(int((data / "postmaster.pid").read_text().split()[0])), data


def _rss_and_anon(pid: int) -> tuple[float, float] | None:
    """RSS and its anonymous part (heap, stack: RssAnon of /proc/PID/status), in MB.

    A PostgreSQL backend's RSS grows as it touches shared_buffers (RssShmem) up to
    their size, which is not a leak; RssAnon is the process's own memory."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


class Sampler:
    """Memory of every process and the database's growth, every ``every`` seconds."""

    def __init__(self, url: str, kind: str, server: psutil.Process, datadir: Path, named: dict[int, str]):
        self.url, self.kind, self.server, self.datadir, self.named = url, kind, server, datadir, named
        self.memory: dict[str, list[tuple[float, float, float]]] = {}   # label -> [(t, RSS MB, RssAnon MB)]
        self.growth: list[dict] = []

    def _labels(self, conn) -> dict[int, str]:
        if self.kind == "embedded":
            return {self.server.pid: "server: node (embedded engine)"}
        labels = {self.server.pid: "server: postmaster"}
        for pid, app, btype in conn.execute(
                "select pid, application_name, backend_type from pg_stat_activity where pid <> pg_backend_pid()"):
            labels[pid] = f"server: {app}" if btype == "client backend" and app else f"server: {btype}"
        return labels

    def sample(self, t: float) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="soak-sampler") as conn:
            labels = self._labels(conn)
            wal, size = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),"
                                     " pg_database_size(current_database())").fetchone()
        procs = {pid: label for pid, label in self.named.items()}
        try:
            children = self.server.children(recursive=True)
        except psutil.Error:
            children = []
        for child in [self.server, *children]:
            if child.pid in labels:
                procs[child.pid] = labels[child.pid]
            elif self.kind == "native":
                try:        # backends come and go (a dbt run's): a zombie has no command line
                    procs[child.pid] = "server: " + " ".join(child.cmdline()[:1]).removeprefix("postgres: ")[:40]
                except psutil.Error:
                    continue
        for pid, label in procs.items():
            found = _rss_and_anon(pid)
            if found is not None:
                self.memory.setdefault(f"{label} [{pid}]", []).append((t, *found))
        self.growth.append({"t": round(t, 1), "wal_bytes": int(wal), "database_bytes": int(size),
                            "pg_wal_bytes": _du(self.datadir / "pg_wal"), "datadir_bytes": _du(self.datadir)})


def _slope_mb_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points]) / 3600
    y = np.array([p[1] for p in points])
    return round(float(np.polyfit(t, y, 1)[0]), 2) if np.ptp(t) > 0 else None


def memory_summary(memory: dict[str, list[tuple[float, float, float]]], warmup_s: float,
                   samples: int) -> list[dict]:
    """Per process that lived through most of the soak: size at the start and end of the
    measured part, and the fitted slope of RSS and of its anonymous part after the
    warm-up. Flat is judged on the anonymous part (a process's own memory)."""
    out = []
    for label, series in sorted(memory.items()):
        if len(series) < 0.6 * samples:
            continue                                    # short-lived: a dbt or report connection
        after = [p for p in series if p[0] >= warmup_s]
        rss_slope = _slope_mb_per_hour([(p[0], p[1]) for p in after])
        anon_slope = _slope_mb_per_hour([(p[0], p[2]) for p in after])
        mean_anon = float(np.mean([p[2] for p in after])) if after else 0.0
        limit = max(FLAT_MB_PER_HOUR, FLAT_FRACTION_PER_HOUR * mean_anon)
        out.append({
            "process": label, "samples": len(series),
            "rss_mb_after_warmup_first": round(after[0][1], 1) if after else None,
            "rss_mb_last": round(series[-1][1], 1), "rss_mb_max": round(max(p[1] for p in series), 1),
            "anon_mb_after_warmup_first": round(after[0][2], 1) if after else None,
            "anon_mb_last": round(series[-1][2], 1),
            "rss_slope_mb_per_hour": rss_slope, "anon_slope_mb_per_hour": anon_slope,
            "flat": anon_slope is not None and anon_slope <= limit,
        })
    return out


# ---------------------------------------------------------------- jobs

def _job_stats(conn) -> dict[int, dict]:
    rows = conn.execute(
        "select j.job_id, j.proc_name, coalesce(j.hypertable_name, ''), coalesce(s.total_runs, 0),"
        " coalesce(s.total_failures, 0), s.last_run_status"
        " from timescaledb_information.jobs j left join timescaledb_information.job_stats s using (job_id)"
        " where j.job_id >= 1000 order by 1").fetchall()
    return {r[0]: {"proc": r[1], "relation": r[2], "runs": r[3], "failures": r[4], "last_status": r[5]}
            for r in rows}


def _log_job_runs(conn, kind: str) -> None:
    """The native scheduler logs failed runs only unless told to log every run (the
    embedded engine's runner logs every run): each run's start is checked against when
    it was due, and the log's count against the job statistics."""
    if kind == "native":
        conn.execute("alter system set timescaledb.enable_job_execution_logging = on")
        conn.execute("select pg_reload_conf()")
        time.sleep(1.0)     # the scheduler and the workers it starts have read it


def _server_log_problems(datadir: Path, kind: str, limit: int = 30) -> list[str]:
    """The server log's errors and warnings (what a failed job run logged: the policy's
    own error says only how many chunks failed; the reason is a WARNING before it)."""
    log = datadir.parent / ("postgres.log" if kind == "native" else "embedded.log")
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    marks = ("ERROR:", "WARNING:", "FATAL:", "PANIC:") if kind == "native" else (" failed", "error")
    return [line.strip()[:300] for line in lines if any(m in line for m in marks)][:limit]


def _reschedule_jobs(conn, soak_s: float, every_s: float) -> dict[int, dict]:
    """Every policy whose own schedule is longer than the soak (it would never come due
    in it: compression 12 h, retention 1 d, the 1-hour/1-day/site refreshes, the
    organization retention) runs every ``every_s`` seconds instead; the others (the
    1- and 5-minute refreshes in a 30-minute soak) keep their own schedule. Returns
    the plan: each job's own and soak schedule and when it is first due."""
    plan = {}
    jobs = conn.execute(
        "select job_id, proc_name, coalesce(hypertable_name, ''), extract(epoch from schedule_interval)"
        " from timescaledb_information.jobs where job_id >= 1000 order by 1").fetchall()
    moved = [job for job, _, _, own in jobs if float(own) > soak_s and float(own) > every_s]
    for job, proc, relation, own in jobs:
        rescheduled = job in moved
        if rescheduled:
            # spread over the interval, as jobs with their own schedules are in production,
            # rather than all of them at the same second
            conn.execute("select alter_job(%s, schedule_interval => %s::interval,"
                         " next_start => now() + %s * interval '1 second')",
                         (job, f"{every_s} seconds", every_s * moved.index(job) / len(moved)))
        plan[job] = {"proc": proc, "relation": relation, "own_schedule_s": float(own),
                     "soak_schedule_s": every_s if rescheduled else float(own), "rescheduled": rescheduled}
    for job, nxt, fixed, initial in conn.execute(
            "select j.job_id, extract(epoch from s.next_start), j.fixed_schedule, extract(epoch from j.initial_start)"
            " from timescaledb_information.jobs j left join _timescaledb_internal.bgw_job_stat s"
            " on s.job_id = j.job_id where j.job_id >= 1000").fetchall():
        # no stats yet: due now (both schedulers run a job without stats at once)
        plan[job].update(first_due=float(nxt) if nxt is not None else None, fixed=bool(fixed),
                         initial_start=float(initial) if initial is not None else None)
    return plan


def _job_runs(conn, since: float) -> dict[int, list[tuple[float, float | None, bool | None]]]:
    """Every logged run started since ``since`` (epoch s): (start, finish, succeeded) per job."""
    runs: dict[int, list] = {}
    for job, start, finish, ok in conn.execute(
            "select job_id, extract(epoch from start_time), extract(epoch from finish_time), succeeded"
            " from timescaledb_information.job_history where job_id >= 1000"
            " and start_time >= to_timestamp(%s) order by job_id, start_time", (since,)):
        # succeeded is null while a run is in progress
        runs.setdefault(job, []).append((float(start), None if finish is None else float(finish), ok))
    return runs


def _tolerance(interval_s: float) -> float:
    """A run is on schedule when it starts within a quarter of its interval (at least
    10 s) of when it was due: a single-session engine runs due jobs one after another,
    between clients' statements."""
    return max(10.0, interval_s / 4)


def schedule_kept(plan: dict, runs: list[tuple[float, float | None, bool]], t0: float, until: float) -> dict:
    """When each run was due (the first: the job's next start when the soak began; then its
    previous run's finish plus the interval, or the next slot of a fixed schedule; not
    judged after a failed run), how late it started, and whether a run was overdue at the end. ``due_in_soak`` is False when the
    job's first due time is after the end: it could not run, and the results say so."""
    every = plan["soak_schedule_s"]
    due = plan["first_due"] if plan["first_due"] is not None else t0
    if due > until:
        return {"due_in_soak": False, "first_due_after_end_s": round(due - until, 1), "max_late_s": None,
                "overdue_at_end_s": None, "kept": None}
    late = []
    for start, finish, ok in runs:
        if due is not None:
            late.append(start - due)
        if ok is False:
            # after a failure the scheduler retries on its own back-off (retry period,
            # doubling, capped at five intervals): the next run's start is not judged
            due = None
            continue
        end = finish if finish is not None and finish > 0 else start
        if plan["fixed"] and plan["initial_start"] is not None:
            base = plan["initial_start"]
            due = base + every * (int((end - base) // every) + 1)
        else:
            due = end + every
    overdue = max(0.0, until - due) if due is not None else 0.0
    tol = _tolerance(every)
    return {"due_in_soak": True, "first_due_after_end_s": None,
            "max_late_s": round(max(late), 1) if late else None,
            "overdue_at_end_s": round(overdue, 1) if overdue > tol else 0.0,
            "kept": bool(late) and max(late) <= tol and overdue <= tol}


# ---------------------------------------------------------------- run

def run(*, kind: str, minutes: float, writers: int, servers: int, interval: float, dbt_every: float,
        report_every: float, job_every: float, sample_every: float, warmup_minutes: float,
        workdir: Path, say=print) -> dict:
    t_begin = time.time()
    with bench_engine(workdir, kind) as engine:
        url = engine.url
        t_engine = time.time()
        now = datetime.now(UTC)
        say(f"soak on {describe(kind)}: preloading history for {servers} servers")
        ids, recent_rows, old_rows = preload(url, servers, now)
        t_preload = time.time()
        with psycopg.connect(url, autocommit=True) as conn:
            _log_job_runs(conn, kind)
            t0 = time.time()
            jobs_before = _job_stats(conn)
            plan = _reschedule_jobs(conn, minutes * 60, job_every)
            chunks_before = conn.execute(
                "select count(*), count(*) filter (where is_compressed) from timescaledb_information.chunks"
                " where hypertable_name = 'server_samples'").fetchone()
        server, datadir = _server_processes(url, kind, workdir)

        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        start = time.time() + 2
        until = start + minutes * 60
        shares = [ids[i::writers] for i in range(writers)]
        # daemonic: if this driver fails, they end with it instead of keeping it waiting
        procs = [ctx.Process(target=_writer, args=(url, share, interval, start, until, f"soak-writer-{i}", results),
                             daemon=True) for i, share in enumerate(shares)]
        stop_dash = ctx.Event()
        dash_out = ctx.Queue()
        dash = ctx.Process(target=_dashboards, args=(url, ids, stop_dash, dash_out), daemon=True)
        for p in [*procs, dash]:
            p.start()
        named = {os.getpid(): "soak driver", dash.pid: "soak-dashboards",
                 **{p.pid: f"soak-writer-{i}" for i, p in enumerate(procs)}}
        all_command_runs: list[dict] = []
        commands = _commands(url, dbt_every * 60, report_every * 60, start, until, workdir, all_command_runs)
        sampler = Sampler(url, kind, server, datadir, named)
        say(f"soaking for {minutes:g} min: {writers} writers x {len(shares[0])} servers, a sample every {interval:g} s, "
            f"dbt every {dbt_every:g} min, report every {report_every:g} min, jobs every {job_every:g} s")
        next_sample = start
        sampler_errors: list[str] = []
        while time.time() < until:
            time.sleep(max(0.0, next_sample - time.time()))
            try:
                sampler.sample(time.time() - start)
            except (psycopg.Error, psutil.Error, OSError) as exc:   # counted, not fatal: the soak goes on
                sampler_errors.append(f"sampler: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
            next_sample += sample_every
            elapsed = time.time() - start
            if int(elapsed) % 60 < sample_every:
                done = [r for r in list(all_command_runs) if not r.get("skipped")]
                say(f"  {elapsed / 60:4.1f} min: {len(done)} dbt/report runs, {sum(1 for r in done if r['exit'])} failed")
        writer_results = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        stop_dash.set()
        dashboards = dash_out.get(timeout=120)
        dash.join(timeout=60)
        for t in commands:
            t.join(timeout=3600)
        command_runs = sorted((r for r in all_command_runs if not r.get("skipped")), key=lambda r: r["at_s"])
        skipped = [r for r in all_command_runs if r.get("skipped")]
        ended = time.time()
        sampler.sample(time.time() - start)

        with psycopg.connect(url, autocommit=True) as conn:
            present = conn.execute(
                "select count(*) from metrics.server_metrics where server_id = any(%s) and collected_at >= %s",
                (ids, datetime.fromtimestamp(start, UTC))).fetchone()[0]
            history_present = conn.execute(
                "select count(*) from metrics.server_metrics where server_id = any(%s) and collected_at < %s",
                (ids, datetime.fromtimestamp(start, UTC))).fetchone()[0]
            with conn.transaction():        # one snapshot: the statistics and the run log agree
                conn.execute("set transaction isolation level repeatable read")
                jobs_after = _job_stats(conn)
                job_runs = _job_runs(conn, t0)
                t_end = time.time()
            job_errors = conn.execute(
                "select job_id, err_message from timescaledb_information.job_errors where finish_time >= %s"
                " and job_id >= 1000", (datetime.fromtimestamp(start, UTC),)).fetchall()
            chunks_after = conn.execute(
                "select count(*), count(*) filter (where is_compressed) from timescaledb_information.chunks"
                " where hypertable_name = 'server_samples'").fetchone()
        log_problems = _server_log_problems(datadir, kind)
        t_checked = time.time()
    t_stopped = time.time()

    written = sum(w["written"] for w in writer_results)
    jobs = []
    for job_id, after in jobs_after.items():
        before = jobs_before.get(job_id, {"runs": 0, "failures": 0})
        logged = [r for r in job_runs.get(job_id, []) if r[0] <= t_end]
        jobs.append({"job_id": job_id, "proc": after["proc"], "relation": after["relation"],
                     "runs": after["runs"] - before["runs"], "failures": after["failures"] - before["failures"],
                     "runs_logged": len(logged), "failures_logged": sum(1 for r in logged if r[2] is False),
                     "last_status": after["last_status"],
                     "own_schedule_s": plan[job_id]["own_schedule_s"],
                     "soak_schedule_s": plan[job_id]["soak_schedule_s"], "rescheduled": plan[job_id]["rescheduled"],
                     **schedule_kept(plan[job_id], logged, t0, t_end)})
    errors = {
        "writers": sum(w["errors"] for w in writer_results),
        "dashboards": dashboards["errors"],
        "dbt": sum(1 for r in command_runs if r["kind"] == "dbt" and r["exit"]),
        "report": sum(1 for r in command_runs if r["kind"] == "report" and r["exit"]),
        "jobs": sum(j["failures"] for j in jobs),
        "sampler": len(sampler_errors),
    }
    errors["total"] = sum(errors.values())
    lags = [lag for w in writer_results for lag in w["lags"]]
    growth = sampler.growth
    hours = (growth[-1]["t"] - growth[0]["t"]) / 3600 if len(growth) > 1 else 0
    memory = memory_summary(sampler.memory, warmup_minutes * 60, len(growth))
    return {
        "engine": kind, "engine_description": describe(kind), "minutes": minutes,
        "started_at": datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds"),
        "params": {"writers": writers, "servers": servers, "interval_s": interval, "dbt_every_min": dbt_every,
                   "report_every_min": report_every, "job_every_s": job_every, "sample_every_s": sample_every,
                   "warmup_min": warmup_minutes},
        "errors": errors,
        "server_log_problems": log_problems,
        "error_messages": [m for w in writer_results for m in w["messages"]] + dashboards["messages"] + sampler_errors[:5]
        + [f"{r['kind']}: {r['error']}" for r in command_runs if r["exit"]]
        + [f"job {j}: {m}" for j, m in job_errors][:20],
        "rows": {"written": written, "present": present, "equal": written == present,
                 "history_loaded": recent_rows + old_rows, "history_present": history_present,
                 "history_expected_after_retention": recent_rows},
        "ingest": {"rows_per_s": round(written / (minutes * 60), 1), "lag_p50_s": _pct(lags, 50),
                   "lag_p95_s": _pct(lags, 95), "lag_max_s": round(max(lags), 2) if lags else None},
        "dashboards": dashboards,
        "commands": command_runs,
        "commands_skipped": skipped,
        # wall time of each part of the run: the soak itself is ``minutes``; the rest is set-up and checks
        "phases_s": {"engine_start_and_migrations": round(t_engine - t_begin, 1),
                     "preload": round(t_preload - t_engine, 1), "soak": round(until - start, 1),
                     "until_every_process_ended": round(ended - until, 1),
                     "final_checks": round(t_checked - ended, 1), "engine_stop": round(t_stopped - t_checked, 1),
                     "total": round(t_stopped - t_begin, 1)},
        "jobs": jobs,
        "jobs_window_s": round(t_end - t0, 1),
        "chunks": {"before": {"total": chunks_before[0], "compressed": chunks_before[1]},
                   "after": {"total": chunks_after[0], "compressed": chunks_after[1]}},
        "growth": {
            "wal_generated_mb": round((growth[-1]["wal_bytes"] - growth[0]["wal_bytes"]) / 2**20, 1),
            "wal_mb_per_hour": round((growth[-1]["wal_bytes"] - growth[0]["wal_bytes"]) / 2**20 / hours, 1)
            if hours else None,
            "pg_wal_mb_first": round(growth[0]["pg_wal_bytes"] / 2**20, 1),
            "pg_wal_mb_last": round(growth[-1]["pg_wal_bytes"] / 2**20, 1),
            "pg_wal_mb_max": round(max(g["pg_wal_bytes"] for g in growth) / 2**20, 1),
            "database_mb_first": round(growth[0]["database_bytes"] / 2**20, 1),
            "database_mb_last": round(growth[-1]["database_bytes"] / 2**20, 1),
            "datadir_mb_first": round(growth[0]["datadir_bytes"] / 2**20, 1),
            "datadir_mb_last": round(growth[-1]["datadir_bytes"] / 2**20, 1),
            "series": growth,
        },
        "memory": memory,
        "memory_flat": all(m["flat"] for m in memory),
        "memory_series": {k: [(round(t, 1), round(r, 1), round(u, 1)) for t, r, u in v]
                          for k, v in sampler.memory.items() if len(v) >= 0.6 * len(growth)},
    }


def problems(result: dict) -> list[str]:
    out = []
    if result["errors"]["total"]:
        out.append(f"{result['errors']['total']} errors: {result['errors']}")
    if not result["rows"]["equal"]:
        out.append(f"rows written {result['rows']['written']} != present {result['rows']['present']}")
    for j in result["jobs"]:
        if (j["runs"], j["failures"]) != (j["runs_logged"], j["failures_logged"]):
            out.append(f"job {j['job_id']}: statistics say {j['runs']} runs, {j['failures']} failures; "
                       f"its run log {j['runs_logged']}, {j['failures_logged']}")
        if j["due_in_soak"] and not j["runs"]:
            out.append(f"job {j['job_id']} ({j['proc']} {j['relation']}) was due and never ran")
    return out


def markdown(r: dict) -> str:
    g = r["growth"]
    lines = [
        f"# Soak: {r['minutes']:g} minutes on {r['engine_description']}",
        "",
        f"Started {r['started_at']}; {r['params']['servers']} servers shared by {r['params']['writers']} writer "
        f"processes, one sample per server every {r['params']['interval_s']:g} s; dbt build every {r['params']['dbt_every_min']:g} min; rmp report every "
        f"{r['params']['report_every_min']:g} min; every policy whose own schedule is longer than the soak runs "
        f"every {r['params']['job_every_s']:g} s, the others on their own schedule (table below); "
        f"memory slopes after a {r['params']['warmup_min']:.3g}-minute warm-up.",
        "",
        f"- errors: **{r['errors']['total']}** ({', '.join(f'{k} {v}' for k, v in r['errors'].items() if k != 'total')})",
        f"- rows written {r['rows']['written']:,}, present {r['rows']['present']:,}: "
        f"**{'equal' if r['rows']['equal'] else 'DIFFERENT'}**; history {r['rows']['history_present']:,} present of "
        f"{r['rows']['history_loaded']:,} loaded ({r['rows']['history_expected_after_retention']:,} expected "
        "once retention dropped the 95-day-old day)",
        f"- ingest {r['ingest']['rows_per_s']:,} rows/s, lag p50 {r['ingest']['lag_p50_s']} s, "
        f"p95 {r['ingest']['lag_p95_s']} s, max {r['ingest']['lag_max_s']} s",
        f"- dashboards: {r['dashboards']['queries']:,} rounds, p50 {r['dashboards']['p50_ms']} ms, "
        f"p95 {r['dashboards']['p95_ms']} ms",
        f"- dbt build: {sum(1 for c in r['commands'] if c['kind'] == 'dbt')} runs, "
        f"{_seconds([c for c in r['commands'] if c['kind'] == 'dbt'])}; rmp report: "
        f"{sum(1 for c in r['commands'] if c['kind'] == 'report')} runs, "
        f"{_seconds([c for c in r['commands'] if c['kind'] == 'report'])}",
        f"- not started because they would have ended after the soak: "
        f"{', '.join(c['kind'] + ' at ' + format(c['at_s'], 'g') + ' s' for c in r['commands_skipped']) or 'none'}",
        "- wall time (s): " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in r["phases_s"].items()),
        f"- WAL generated {g['wal_generated_mb']} MB ({g['wal_mb_per_hour']} MB/h); pg_wal {g['pg_wal_mb_first']} -> "
        f"{g['pg_wal_mb_last']} MB (max {g['pg_wal_mb_max']}); database {g['database_mb_first']} -> "
        f"{g['database_mb_last']} MB; data directory {g['datadir_mb_first']} -> {g['datadir_mb_last']} MB",
        f"- chunks of server_metrics: {r['chunks']['before']['total']} ({r['chunks']['before']['compressed']} "
        f"compressed) -> {r['chunks']['after']['total']} ({r['chunks']['after']['compressed']} compressed)",
        f"- memory flat for every process: **{'yes' if r['memory_flat'] else 'NO'}** "
        f"(fitted slope of its own memory, RssAnon, after the warm-up <= {FLAT_MB_PER_HOUR:g} MB/h or "
        f"{FLAT_FRACTION_PER_HOUR:.0%} of its mean per hour; RSS of PostgreSQL processes also counts the "
        "shared buffers they touch)",
        "",
        f"Policies (measured from their rescheduling, {r['jobs_window_s'] / 60:.1f} min; a run is on schedule "
        "when it starts within a quarter of its interval, at least 10 s, of when it was due; runs counted "
        "twice: the job statistics and the log of every run):",
        "",
        "| job | own schedule | soak schedule | runs (statistics / log) | failures | latest start after due | "
        "overdue at end | on schedule |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {j['job_id']} {j['proc']} {j['relation']} | {_interval(j['own_schedule_s'])} | "
          f"{_interval(j['soak_schedule_s'])}{' (rescheduled)' if j['rescheduled'] else ''} | "
          f"{j['runs']} / {j['runs_logged']} | {j['failures']} | "
          + (f"{j['max_late_s']} s | {j['overdue_at_end_s']} s | {'yes' if j['kept'] else 'NO'} |" if j["due_in_soak"]
             else f"- | - | not due in the soak (first due {j['first_due_after_end_s'] / 60:.0f} min after its end) |")
          for j in r["jobs"]],
        "",
        "| process | samples | RSS MB after warm-up -> last (max) | RssAnon MB after warm-up -> last | RSS slope MB/h | RssAnon slope MB/h | flat |",
        "|---|---|---|---|---|---|---|",
        *[f"| {m['process']} | {m['samples']} | {m['rss_mb_after_warmup_first']} -> {m['rss_mb_last']} "
          f"({m['rss_mb_max']}) | {m['anon_mb_after_warmup_first']} -> {m['anon_mb_last']} | "
          f"{m['rss_slope_mb_per_hour']} | {m['anon_slope_mb_per_hour']} "
          f"| {'yes' if m['flat'] else 'NO'} |" for m in r["memory"]],
    ]
    if r["error_messages"]:
        lines += ["", "Errors:", *[f"- {m}" for m in r["error_messages"]]]
    if r["server_log_problems"]:
        lines += ["", "Server log, errors and warnings (first 30):", "", "```",
                  *r["server_log_problems"], "```"]
    return "\n".join(lines) + "\n"


def _interval(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _seconds(runs: list[dict]) -> str:
    return ("seconds " + ", ".join(f"{c['seconds']:g}" for c in runs)) if runs else "none"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    p.add_argument("--engine", choices=("embedded", "native"), default="embedded", help="a private engine of this kind")
    p.add_argument("--writers", type=int, default=3, help="writer processes")
    p.add_argument("--servers", type=int, default=30, help="servers written to, shared among the writers")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between two samples of a server")
    p.add_argument("--dbt-every", type=float, default=5.0, help="minutes between dbt builds")
    p.add_argument("--report-every", type=float, default=5.0, help="minutes between reports")
    p.add_argument("--job-every", type=float, default=60.0,
                   help="seconds between runs of every policy whose own schedule is longer than the soak")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory/disk samples")
    p.add_argument("--warmup-minutes", type=float, help="excluded from the memory slope (default: a third, <= 5)")
    p.add_argument("--workdir", type=Path, help="engine data (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for soak-<engine>-<M>min.json/.md")
    a = p.parse_args(argv)
    warmup = a.warmup_minutes if a.warmup_minutes is not None else min(5.0, a.minutes / 3)
    with tempfile.TemporaryDirectory(prefix="rmp-soak-") as tmp:
        result = run(kind=a.engine, minutes=a.minutes, writers=a.writers, servers=a.servers, interval=a.interval,
                     dbt_every=a.dbt_every, report_every=a.report_every, job_every=a.job_every,
                     sample_every=a.sample_every, warmup_minutes=warmup, workdir=a.workdir or Path(tmp),
                     say=lambda s: print(s, file=sys.stderr, flush=True))
    stem = f"soak-{a.engine}-{a.minutes:g}min"
    write_json(a.out, f"{stem}.json", result, indent=1, markdown=markdown(result))
    bad = problems(result)
    summary = {k: result[k] for k in ("engine", "minutes", "errors", "rows", "memory_flat")}
    print(json.dumps(summary, default=str))
    for line in bad:
        print(f"soak: {line}", file=sys.stderr)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
