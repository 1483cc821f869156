"""Drill 1: the server dies mid-load (kill -9 of the postmaster / SIGKILL of the
embedded engine's Node process) and nothing is lost or duplicated.

Each case runs on a private server of its own (never the shared test engine).
The loader is `rmp ingest` as a real process, frozen (SIGSTOP) at a moment
when it holds an open batch transaction, then the server is killed.
Procedure and figures: docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from drill_steps import (
    finish,
    native_loader_in_batch,
    pause_inside_batch,
    rmp,
    run_crashed_jobs,
    session_busy,
    start_ingest,
    wait_until,
)
from drill_support import (
    aggregate_mismatches,
    db_checksums,
    file_checksums,
    make_fleet,
    refresh_all,
    row_count,
)

from rmp import catalog, migrations
from rmp.embedded import EmbeddedServer
from rmp.testing import native_cluster

BATCH = 500


def _days_ago(n: int) -> datetime:
    return (datetime.now(UTC) - timedelta(days=n)).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def cluster():
    """A private native cluster (fsync on, like production) with the schema; removed afterwards."""
    with native_cluster(fsync=True) as server:
        migrations.upgrade(server.url)
        yield server


def _assert_complete(url: str, *paths, since: datetime, until: datetime, servers: int = 3) -> None:
    """Counts and per-server checksums equal the files; refreshed aggregates equal SQL over raw."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert db_checksums(conn) == file_checksums(*paths)
        refresh_all(conn)
        mismatches = aggregate_mismatches(conn, since, until)
    assert {k: v for k, v in mismatches.items() if ":" not in k} == {t.name: 0 for t in catalog.TIERS}
    assert mismatches["server_metrics_1h:buckets"] == servers * 24 * round((until - since) / timedelta(days=1))


def _loading(url: str, tmp_path):
    """Two days of 3 servers being loaded by `rmp ingest` in BATCH-row batches, two
    batches committed: (first day, the file, its rows, the loader's process)."""
    since = _days_ago(3)
    path = make_fleet(url, tmp_path / "files", servers=3, days=2, start=since)
    proc = start_ingest(url, path, BATCH)
    with psycopg.connect(url, autocommit=True) as conn:
        wait_until(lambda: row_count(conn) >= 2 * BATCH, 120, "two batches")
    return since, path, 3 * 2 * 2880, proc


def _recovers_and_reloads(url: str, path, *, total: int, since: datetime) -> int:
    """After the restart: `rmp doctor` passes, the same ingest again loads exactly the
    rows the crash lost (the others are skipped as duplicates), and everything is
    complete. The rows that survived the crash."""
    with psycopg.connect(url, autocommit=True) as conn:
        survived = row_count(conn)
    doctor = rmp(url, "doctor", "-q")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    again = rmp(url, "ingest", str(path), "-q")
    assert again.returncode == 0, again.stderr
    assert f"{total - survived:,} loaded, {survived:,} duplicates skipped, 0 rejected" in again.stdout
    _assert_complete(url, path, since=since, until=since + timedelta(days=2))
    return survived


@pytest.mark.native_only
def test_postmaster_killed_inside_a_batch_loses_and_duplicates_nothing(cluster, tmp_path):
    url = cluster.url
    since, path, total, proc = _loading(url, tmp_path)
    with psycopg.connect(url, autocommit=True) as conn:
        pause_inside_batch(proc, native_loader_in_batch(url))
        committed = row_count(conn)
    cluster.kill()                                            # kill -9 of the postmaster
    code, _, err = finish(proc)
    assert code != 0 and "rmp: " in err and "Traceback" not in err   # one line, no traceback

    cluster.start()
    survived = _recovers_and_reloads(url, path, total=total, since=since)
    assert survived == committed                              # every committed batch is durable
    assert 0 < survived < total and survived % BATCH == 0     # ... and only whole batches


def _job(conn, proc_name: str, view: str) -> int:
    return conn.execute("select job_id from timescaledb_information.jobs where proc_name = %s"
                        " and hypertable_name = %s", (proc_name, view)).fetchone()[0]


@pytest.mark.native_only
def test_postmaster_killed_while_refresh_and_compression_jobs_run(cluster, tmp_path):
    """Both jobs are started by the scheduler and held mid-run on a lock a drill
    session takes (so the kill lands while they run, not before or after), while
    `rmp ingest` of the newest day is inside a batch."""
    url = cluster.url
    since = _days_ago(5)
    old = make_fleet(url, tmp_path / "old", servers=3, days=3, start=since)
    new = make_fleet(url, tmp_path / "new", servers=3, days=2, start=since + timedelta(days=3))
    with psycopg.connect(url, autocommit=True) as conn:
        compress = _job(conn, "policy_compression", "server_samples")
        refresh = _job(conn, "policy_refresh_continuous_aggregate", "server_metrics_1h")
        # the compression policy's first run comes when the scheduler gets to it, which
        # under load can be after the load below: held back until the drill starts it
        conn.execute("select alter_job(%s, scheduled => false)", (compress,))
    assert rmp(url, "ingest", str(old), "-q").returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        refresh_all(conn)                     # the refresh below then has only the new day to do
        chunks = [r[0] for r in conn.execute(
            "select format('%I.%I', chunk_schema, chunk_name) from timescaledb_information.chunks"
            " where hypertable_name = 'server_samples' and not is_compressed"
            " and range_end < now() - interval '1 day' order by range_start")]
        mat = conn.execute(
            "select format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)"
            " from timescaledb_information.continuous_aggregates where view_name = 'server_metrics_1h'"
        ).fetchone()[0]
    assert len(chunks) >= 3
    proc = start_ingest(url, new, BATCH)
    holder = psycopg.connect(url)             # holds the locks the two jobs will wait on
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_until(lambda: row_count(conn) >= 3 * 3 * 2880 + 2 * BATCH, 120, "two batches")
            pause_inside_batch(proc, native_loader_in_batch(url))
            holder.execute(f"lock table {chunks[-1]}, {mat} in access exclusive mode")
            for job in (compress, refresh):
                conn.execute("select alter_job(%s, scheduled => true, next_start => now())", (job,))

            def both_waiting() -> bool:
                return conn.execute(
                    "select count(*) = 2 from pg_stat_activity where wait_event_type = 'Lock'"
                    " and (application_name like %s or application_name like %s)",
                    (f"%[{compress}]%", f"%[{refresh}]%")).fetchone()[0]
            wait_until(both_waiting, 60, "the compression and refresh jobs to be running")
            compressed_before = conn.execute(
                "select count(*) from timescaledb_information.chunks where hypertable_name = 'server_samples'"
                " and is_compressed").fetchone()[0]
        cluster.kill()
    finally:
        holder.close()
    code, _, err = finish(proc)
    assert code != 0 and "Traceback" not in err, err

    cluster.start()
    with psycopg.connect(url, autocommit=True) as conn:
        assert compressed_before >= 1         # the compression job was mid-way through its chunks
        loaded_new = row_count(conn) - 3 * 3 * 2880
        assert 0 <= loaded_new < 3 * 2 * 2880 and loaded_new % BATCH == 0
    doctor = rmp(url, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for job in (compress, refresh):
        assert f"job {job} " in doctor.stdout and "interrupted by a server crash" in doctor.stdout
    assert run_crashed_jobs(url) == sorted([compress, refresh])
    again = rmp(url, "ingest", str(old), str(new), "-q")
    assert again.returncode == 0, again.stderr
    assert f"total: {3 * 2 * 2880 - loaded_new:,} loaded, {3 * 3 * 2880 + loaded_new:,} duplicates skipped" \
        in again.stdout
    _assert_complete(url, old, new, since=since, until=since + timedelta(days=5))


@pytest.mark.embedded_only
def test_embedded_engine_killed_inside_a_batch_loses_and_duplicates_nothing(tmp_path):
    server = EmbeddedServer(tmp_path / "embedded", job_interval=1.0)
    server.start()
    try:
        url = server.url
        migrations.upgrade(url)
        since, path, total, proc = _loading(url, tmp_path)
        with psycopg.connect(url, autocommit=True) as conn:
            committed = row_count(conn)       # served between two of the loader's transactions
        pause_inside_batch(proc, session_busy(url))
        _kill_node(server)                    # SIGKILL of the Node process
        code, _, err = finish(proc)
        assert code != 0 and "Traceback" not in err, err

        server.start()
        survived = _recovers_and_reloads(url, path, total=total, since=since)
        assert committed <= survived < total and survived % BATCH == 0   # durable, whole batches
    finally:
        server.stop()


def _kill_node(server: EmbeddedServer) -> None:
    """SIGKILL of the embedded engine's Node process, and wait until it is gone (a
    process with a large heap takes a moment to die; until then start() sees it running)."""
    from rmp import embedded

    os.kill(_node_pid(server), signal.SIGKILL)
    wait_until(lambda: not embedded.status(server.settings).running, 30, "the Node process to die")


def _node_pid(server: EmbeddedServer) -> int:
    from rmp import embedded

    st = embedded.status(server.settings)
    assert st.running
    return st.pid


def _runs(conn, job: int) -> tuple[int, bool | None]:
    row = conn.execute("select total_runs, last_run_success from _timescaledb_internal.bgw_job_stat"
                       " where job_id = %s", (job,)).fetchone()
    return (row[0], row[1]) if row else (0, None)


@pytest.mark.embedded_only
def test_embedded_engine_killed_while_its_job_runner_runs_compression_and_refresh(tmp_path):
    """The embedded engine runs due jobs one after another in its one session, between
    clients' statements. With every other job unscheduled, the compression and 1-hour
    refresh policies are made due at once and the Node process is SIGKILLed while the
    runner holds the session (a probe query from a client does not finish: with no
    client in a transaction and no checkpoint due, only the runner can hold it).
    Restarted without its runner, at least one of the two has no finished run recorded
    (the kill landed inside it); restarted with it, the runner runs what is still due
    at once (no crash back-off) and every check passes."""
    server = EmbeddedServer(tmp_path / "embedded", job_interval=1.0, checkpoint_interval=3600)
    server.start()
    try:
        url = server.url
        migrations.upgrade(url)
        since = _days_ago(4)
        # enough rows that the two jobs take seconds, not milliseconds, even on an idle
        # machine: the probe must see them (3 servers were caught under load, not in CI)
        path = make_fleet(url, tmp_path / "files", servers=6, days=3, start=since)
        assert rmp(url, "ingest", str(path), "-q").returncode == 0
        with psycopg.connect(url, autocommit=True) as conn:
            compress = _job(conn, "policy_compression", "server_samples")
            refresh = _job(conn, "policy_refresh_continuous_aggregate", "server_metrics_1h")
            before = {job: _runs(conn, job) for job in (compress, refresh)}
            eligible = conn.execute(
                "select count(*) from timescaledb_information.chunks where hypertable_name = 'server_samples'"
                " and not is_compressed and range_end < now() - interval '1 day'").fetchone()[0]
            assert eligible >= 2
            conn.execute("select alter_job(job_id, scheduled => false) from timescaledb_information.jobs"
                         " where job_id >= 1000 and job_id <> all(%s)", ([compress, refresh],))
            for job in (compress, refresh):
                conn.execute("select alter_job(%s, next_start => now())", (job,))
        wait_until(session_busy(url, 0.3), 60, "the job runner to hold the session")
        _kill_node(server)

        server.job_interval = 3600            # first look without the runner
        server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            assert _runs(conn, compress)[0] == before[compress][0] or _runs(conn, refresh)[0] == before[refresh][0]
        doctor = rmp(url, "doctor", "-q")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        server.stop()

        server.job_interval = 1.0             # the runner runs what the kill interrupted
        server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            for job in (compress, refresh):
                wait_until(lambda job=job: _runs(conn, job)[0] > before[job][0], 120, f"job {job} to run again")
                assert _runs(conn, job)[1] is True
            assert conn.execute(
                "select count(*) from timescaledb_information.chunks where hypertable_name = 'server_samples'"
                " and not is_compressed and range_end < now() - interval '1 day'").fetchone()[0] == 0
        _assert_complete(url, path, since=since, until=since + timedelta(days=3), servers=6)
        doctor = rmp(url, "doctor", "-q")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    finally:
        server.stop()
