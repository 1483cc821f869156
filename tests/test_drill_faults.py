"""Drill 2: client and network faults on a private native cluster.

- The loader's connection is cut mid-batch (``pg_terminate_backend`` of its
  backend, server side): the run fails with one line, its open batch rolls
  back, and the next run completes the file exactly once.
- The database goes away under ``rmp collect`` (``pg_ctl stop``, then start)
  for 60 seconds (``RMP_DRILL_OUTAGE_S`` to change it): sampling goes on at its
  interval (0.5 s: 120 samples buffered), samples wait in the bounded buffer and
  land once when the database is back. With a buffer smaller than the outage
  the oldest are dropped and counted; that case needs no long outage (6 s, 12
  samples, buffer 4).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from drill_steps import (
    finish,
    native_loader_in_batch,
    pause_inside_batch,
    rmp,
    start_ingest,
    wait_until,
)
from drill_support import db_checksums, file_checksums, make_fleet, row_count

from rmp import migrations
from rmp.testing import native_cluster

BATCH = 500
OUTAGE_S = float(os.environ.get("RMP_DRILL_OUTAGE_S", "60"))
SHORT_OUTAGE_S = 6.0
INTERVAL_S = 0.5

pytestmark = pytest.mark.native_only


@pytest.fixture(scope="module")
def cluster():
    """One private cluster for the module's drills (per test worker): the loader drill
    reads only its fleet's days, the collector drills only their own server."""
    with native_cluster(fsync=True) as server:
        migrations.upgrade(server.url)
        yield server


def test_loader_connection_terminated_mid_batch_then_rerun_loads_the_file_once(cluster, tmp_path):
    url = cluster.url
    since = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    until = since + timedelta(days=2)
    path = make_fleet(url, tmp_path, servers=3, days=2, start=since)
    total = 3 * 2 * 2880
    proc = start_ingest(url, path, BATCH)
    with psycopg.connect(url, autocommit=True) as conn:
        wait_until(lambda: row_count(conn, since, until) >= 2 * BATCH, 120, "two batches")
        pause_inside_batch(proc, native_loader_in_batch(url))
        terminated = conn.execute(
            "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            " and backend_type = 'client backend' and xact_start is not null").fetchone()[0]
        assert terminated == 1
        code, _, err = finish(proc)
        assert code != 0 and err.strip().startswith("rmp: ") and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        committed = row_count(conn, since, until)
    assert 2 * BATCH <= committed < total and committed % BATCH == 0     # the open batch rolled back

    again = rmp(url, "ingest", str(path), "-q")
    assert again.returncode == 0, again.stderr
    assert f"{total - committed:,} loaded, {committed:,} duplicates skipped, 0 rejected" in again.stdout
    with psycopg.connect(url, autocommit=True) as conn:
        assert db_checksums(conn, since, until) == file_checksums(path)


def _collect(url: str, name: str, buffer: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rmp_app", "collect", "--interval", str(INTERVAL_S), "--organization", "drill",
         "--name", name, "--buffer", str(buffer)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "DATABASE_URL": url})


def _stored(url: str, name: str) -> list[datetime]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "select m.collected_at from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id"
            " where s.name = %s order by 1", (name,))]


def _outage(cluster, url: str, name: str, buffer: int,
            outage_s: float) -> tuple[str, datetime, datetime, list[datetime]]:
    """Collect, stop the database for ``outage_s``, start it, collect on, Ctrl-C."""
    proc = _collect(url, name, buffer)
    try:
        wait_until(lambda: len(_stored(url, name)) >= 4, 60, "the first samples")
        down_at = datetime.now(UTC)
        cluster.stop(mode="fast")
        time.sleep(outage_s)
        cluster.start()
        up_at = datetime.now(UTC)
        wait_until(lambda: _stored(url, name)[-1] > up_at + timedelta(seconds=2 * INTERVAL_S), 60,
                   "samples after the outage")
    finally:
        proc.send_signal(signal.SIGINT)                      # Ctrl-C: flush and stop
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out, down_at, up_at, _stored(url, name)


def _summary(out: str) -> tuple[int, int, int]:
    # "N sample(s) written, B still buffered, D dropped"
    words = out.strip().splitlines()[-1].replace(",", "").split()
    return int(words[0]), int(words[3]), int(words[6])


def test_collector_buffers_through_a_database_outage_and_lands_every_sample_once(cluster):
    url = cluster.url
    out, down_at, up_at, stored = _outage(cluster, url, "steady", buffer=1000, outage_s=OUTAGE_S)
    written, buffered, dropped = _summary(out)
    assert (buffered, dropped) == (0, 0)
    assert written == len(stored) == len(set(stored))         # every sample once
    during = [t for t in stored if down_at <= t <= up_at]
    assert len(during) >= OUTAGE_S / INTERVAL_S * 0.8          # kept sampling while the database was down
    gaps = [(b - a).total_seconds() for a, b in zip(stored, stored[1:], strict=False)]
    # no hole where the outage was (it would be OUTAGE_S long); the flush of the buffered
    # samples when the database returns may delay one sample by a few intervals under load
    assert max(gaps) < 10 * INTERVAL_S


def test_collector_buffer_smaller_than_the_outage_drops_the_oldest_and_counts_them(cluster):
    url = cluster.url
    buffer = 4
    out, down_at, up_at, stored = _outage(cluster, url, "small-buffer", buffer=buffer, outage_s=SHORT_OUTAGE_S)
    written, buffered, dropped = _summary(out)
    assert buffered == 0 and written == len(stored) == len(set(stored))
    assert dropped >= SHORT_OUTAGE_S / INTERVAL_S * 0.8 - buffer   # the outage outlasted the buffer
    # the samples kept across the outage are its newest ones: one hole, at its start
    gaps = [(b - a).total_seconds() for a, b in zip(stored, stored[1:], strict=False)]
    hole = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[hole] >= (dropped + 1) * INTERVAL_S * 0.8
    assert stored[hole] <= down_at + timedelta(seconds=2 * INTERVAL_S)
    assert sorted(gaps)[-2] < 4 * INTERVAL_S                  # everything else is contiguous
