"""Drill 3: a read replica for analysts (native engine, loopback).

A hot standby streams from a private primary (``pg_basebackup -R``). With
``RMP_READ_DATABASE_URL`` pointing at it, `rmp report` and `rmp export` read
there while their analytics.* writes go to the primary (a standby refuses
writes, so the report succeeding proves it); the report equals the one made
from the primary alone. A standby query while the primary ingests sees
committed batches only, and the standby's lag during that load is measured
(bench/replica_lag.py; its committed figures are in docs/scaling.md).
docs/scaling.md describes exactly this.

One primary and standby serve the module (made once per test worker); each
test loads its own days of the same small fleet and checks only those days.
"""

from __future__ import annotations

import filecmp
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from drill_support import db_checksums, file_checksums, make_fleet, refresh_all, row_count

from bench.replica_lag import LagSampler, summary
from rmp import db, migrations
from rmp.standby import replay_lag, start_standby
from rmp.testing import native_cluster

pytestmark = pytest.mark.native_only
BATCH = 500
QUOTA_QUERY = "from marts.org_quota_status as quota_status"   # one of the report's reads (sql/queries/)


@pytest.fixture(scope="module")
def pair():
    """(primary, hot standby), both logging every statement so the test can see who served what."""
    with native_cluster(fsync=True, extra_conf={"log_statement": "'all'"}) as primary:
        migrations.upgrade(primary.url)
        standby = start_standby(primary)
        try:
            yield primary, standby
        finally:
            standby.destroy()


def _report(url: str, out: Path, *args: str, read_url: str | None = None) -> Path:
    env = {"RMP_READ_DATABASE_URL": read_url} if read_url else {"RMP_READ_DATABASE_URL": ""}
    done = rmp(url, "report", "--out", str(out), *args, env=env)
    assert done.returncode == 0, done.stderr
    (path,) = out.iterdir()
    return path


def _body(report: Path) -> list[str]:
    lines = (report / "report.md").read_text().splitlines()
    assert lines[2].startswith("Run ")                 # run id and generation time: differ by design
    return lines[:2] + lines[3:]


def test_report_and_export_read_from_the_standby_equal_the_primarys(pair, tmp_path):
    primary, standby = pair
    since = (datetime.now(UTC) - timedelta(days=4)).replace(hour=0, minute=0, second=0, microsecond=0)
    path = make_fleet(primary.url, tmp_path / "files", servers=3, days=4, start=since)
    assert rmp(primary.url, "ingest", str(path), "-q").returncode == 0
    with psycopg.connect(primary.url, autocommit=True) as conn:
        refresh_all(conn)
    # the marts the report reads are views: `dbt run` creates them (dbt's own tests of the
    # marts run in test_dbt_marts.py; here they would only repeat that work)
    built = rmp(primary.url, "dbt", "run", timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr

    # forecasts + anomalies (writes: primary) then the report (reads: standby, once caught up)
    from_standby = _report(primary.url, tmp_path / "a", read_url=standby.url)
    served = standby.log_file.read_text().count(QUOTA_QUERY), primary.log_file.read_text().count(QUOTA_QUERY)
    # the same report with every query on the primary
    from_primary = _report(primary.url, tmp_path / "b", "--no-refresh")
    assert _body(from_standby) == _body(from_primary)
    assert "| 1 | 3 | 3 | 3 |" in (from_standby / "report.md").read_text()     # 1 organization, 3 servers
    charts = sorted(p.name for p in (from_standby / "img").iterdir())
    assert charts and charts == sorted(p.name for p in (from_primary / "img").iterdir())
    assert all(filecmp.cmp(from_standby / "img" / c, from_primary / "img" / c, shallow=False) for c in charts)

    # who served the report's reads (both servers log every statement): the standby
    # the first report's, the primary the second's only
    assert served[0] > 0 and served[1] == 0
    assert standby.log_file.read_text().count(QUOTA_QUERY) == served[0]
    assert primary.log_file.read_text().count(QUOTA_QUERY) > 0
    with psycopg.connect(primary.url, autocommit=True) as conn:
        runs = conn.execute("select kind, status from analytics.report_runs order by id").fetchall()
    assert ("report", "ok") in runs and runs.count(("report", "ok")) == 2 and ("forecast", "ok") in runs

    exported = [rmp(primary.url, "export", "forecasts", "--format", "csv", env={"RMP_READ_DATABASE_URL": u})
                for u in (standby.url, "")]
    assert exported[0].returncode == 0 and exported[0].stdout == exported[1].stdout
    assert len(exported[0].stdout.splitlines()) > 1


def _make_chunks(conn: psycopg.Connection, since: datetime, days: int) -> None:
    """Create the raw hypertable's (1-day) chunks for these days before the load.

    TimescaleDB finds a statement's chunks in its catalog with a snapshot of its
    own (timescale/timescaledb#5456): a query racing the commit of a transaction
    that created a chunk can see that transaction's rows in the older chunks but
    not yet in the new one. Measured here on 2.23.1, primary and standby alike
    (docs/scaling.md). The batches below only fill existing chunks, so whole
    batches is exactly what a reader must see."""
    for day in range(days):
        start = since + timedelta(days=day)
        slices = {"collected_at": [int(t.timestamp() * 1_000_000) for t in (start, start + timedelta(days=1))]}
        conn.execute("select _timescaledb_functions.create_chunk('metrics.server_samples', %s::jsonb)",
                     (json.dumps(slices),))


def test_standby_sees_committed_batches_only_while_the_primary_ingests_and_its_lag_is_measured(pair, tmp_path):
    primary, standby = pair
    # days of its own, before the report drill's: the checks below read only these
    since = (datetime.now(UTC) - timedelta(days=10)).replace(hour=0, minute=0, second=0, microsecond=0)
    until = since + timedelta(days=2)
    path = make_fleet(primary.url, tmp_path, servers=3, days=2, start=since)
    total = 3 * 2 * 2880
    seen: list[int] = []
    with psycopg.connect(primary.url, autocommit=True) as conn:
        _make_chunks(conn, since, 2)
    with LagSampler(primary.url, every=0.05) as lag:
        proc = start_ingest(primary.url, path, BATCH)
        with psycopg.connect(primary.url, autocommit=True) as p, \
                psycopg.connect(standby.url, autocommit=True) as s:
            wait_until(lambda: row_count(p, since, until) >= 2 * BATCH, 120, "two batches")
            for _ in range(20):                                  # reads on the standby during the load
                seen.append(row_count(s, since, until))
            pause_inside_batch(proc, native_loader_in_batch(primary.url))
            committed = row_count(p, since, until)
            db.caught_up_read_url(primary.url, standby.url)      # the open batch's WAL is replayed too
            assert row_count(s, since, until) == committed       # ... but its rows are not visible
            assert s.execute("select pg_is_in_recovery()").fetchone()[0]
        code, _, err = finish(proc, timeout=120)
    assert code == 0, err
    assert all(n % BATCH == 0 for n in seen) and seen == sorted(seen), seen   # whole batches, never backwards
    db.caught_up_read_url(primary.url, standby.url)
    with psycopg.connect(standby.url, autocommit=True) as s:
        assert row_count(s, since, until) == total
        assert db_checksums(s, since, until) == file_checksums(path)
    # the lag, sampled from the primary's pg_stat_replication through the whole load
    # (the benchmark's figures, docs/scaling.md): the standby was streaming all along
    found = summary(lag.samples)
    assert found["samples"] > 0 and found["states"] == ["streaming"], found
    assert all(s["bytes_behind"] >= 0 for s in lag.samples)
    # and the measure sees a standby that is behind: with its replay paused, WAL the
    # primary writes is counted as not replayed until replay resumes. (Whether a sample
    # during the load caught it behind depends on timing; this does not.)
    with psycopg.connect(primary.url, autocommit=True) as p, psycopg.connect(standby.url, autocommit=True) as s:
        s.execute("select pg_wal_replay_pause()")
        try:
            p.execute("select pg_logical_emit_message(true, 'rmp-drill', 'lag probe')")
            paused = replay_lag(p)
            assert paused["state"] == "streaming" and paused["bytes_behind"] > 0, paused
        finally:
            s.execute("select pg_wal_replay_resume()")
        db.caught_up_read_url(primary.url, standby.url)
