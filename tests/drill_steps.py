"""Steps the drills share: run the real `rmp` commands as processes, catch a
loader inside a batch, wait for jobs. The procedure in docs/reliability.md
is these steps done by hand.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg


def rmp(url: str, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`rmp ARGS` as its own process against ``url``."""
    return subprocess.run([sys.executable, "-m", "rmp_app", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "DATABASE_URL": url, **(env or {})})


def start_ingest(url: str, path: Path, batch_rows: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rmp_app", "ingest", str(path), "--batch-rows",
                             str(batch_rows), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "DATABASE_URL": url})


def pause_inside_batch(proc: subprocess.Popen, inside: Callable[[], bool], *, tries: int = 400) -> None:
    """SIGSTOP the loader at random moments until ``inside()`` says it holds an open
    batch transaction, and leave it stopped there. Raises if it never does."""
    rng = random.Random(16)
    for _ in range(tries):
        time.sleep(rng.uniform(0.005, 0.05))
        if proc.poll() is not None:
            raise AssertionError(f"the load ended (exit {proc.returncode}) before it could be caught inside a "
                                 f"batch: {proc.stdout.read()} {proc.stderr.read()}")
        proc.send_signal(signal.SIGSTOP)
        if inside():
            return
        proc.send_signal(signal.SIGCONT)
    raise AssertionError("never caught the loader inside a batch")


def native_loader_in_batch(url: str, database: str = "rmp") -> Callable[[], bool]:
    """True when a client backend other than ours has a transaction open that has
    already written rows (the loader is past BEGIN, inside its COPY batch)."""
    def inside() -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(
                "select count(*) > 0 from pg_stat_activity where datname = %s and pid <> pg_backend_pid()"
                " and backend_type = 'client backend' and xact_start is not null"
                " and (state = 'idle in transaction' or query ilike 'copy%%')", (database,)).fetchone()[0]
    return inside


def session_busy(url: str, wait: float = 1.0) -> Callable[[], bool]:
    """Embedded engine: one PostgreSQL session serves every client in turn, so a
    statement from another client that does not finish within ``wait`` seconds
    means the (stopped) loader holds a transaction open."""
    def inside() -> bool:
        done = threading.Event()

        def probe() -> None:
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute("select 1")
                done.set()
            except psycopg.Error:
                pass

        threading.Thread(target=probe, daemon=True).start()
        return not done.wait(wait)
    return inside


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    """Let a stopped client run on (its server is gone) and collect its exit."""
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_crashed_jobs(url: str) -> list[int]:
    """After a crash: run every job the crash interrupted now (``CALL run_job``),
    instead of waiting for TimescaleDB's 5-minute crash back-off. Returns their ids."""
    with psycopg.connect(url, autocommit=True) as conn:
        jobs = [r[0] for r in conn.execute(
            "select job_id from _timescaledb_internal.bgw_job_stat where consecutive_crashes > 0 order by 1")]
        for job in jobs:
            conn.execute("call run_job(%s)", (job,))
    return jobs
