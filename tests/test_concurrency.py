"""Many sessions at once on a real server: two `rmp ingest` processes on two
files, TimescaleDB's own background workers refreshing the aggregates every
second, and `rmp dbt build` (4 threads), all at the same time.

Only a multi-session server can run this (the embedded engine serves one
client at a time), so it is native-only. Every row must land exactly once,
every process must exit 0, and no background job may fail.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest

from ingest.fleet_writers import write_fleet, write_fleet_files, write_tenancy
from ingest.generator import generate_fleet
from rmp import migrations

pytestmark = pytest.mark.native_only

REFRESHED = ("server_metrics_1m", "server_metrics_5m", "server_metrics_1h")


def _split_by_server(source, first, second) -> tuple[int, int]:
    """Write half of the servers' rows to each file; return the row counts."""
    with open(source, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    servers = sorted({r[header.index("server")] for r in rows})
    half = set(servers[: len(servers) // 2])
    counts = []
    for path, keep in ((first, lambda s: s in half), (second, lambda s: s not in half)):
        chosen = [r for r in rows if keep(r[header.index("server")])]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(chosen)
        counts.append(len(chosen))
    return counts[0], counts[1]


def _rmp(url: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rmp_app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DATABASE_URL": url, **(env or {})})


@pytest.fixture
def refresh_every_second(db):
    """The refresh policies of three aggregates due every second; their schedules are restored after."""
    jobs = db.execute(
        "select job_id, schedule_interval from timescaledb_information.jobs"
        " where proc_name = 'policy_refresh_continuous_aggregate'"
        " and hypertable_schema = 'metrics' and hypertable_name = any(%s)", (list(REFRESHED),)).fetchall()
    assert len(jobs) == len(REFRESHED)
    for job_id, _ in jobs:
        db.execute("select alter_job(%s, schedule_interval => interval '1 second', next_start => now())", (job_id,))
    yield [job_id for job_id, _ in jobs]
    for job_id, interval in jobs:  # a job recreated by configure_policies has its own schedule already
        db.execute("select alter_job(job_id, schedule_interval => %s) from timescaledb_information.jobs"
                   " where job_id = %s", (interval, job_id))


def test_two_ingests_refresh_policies_and_dbt_build_at_once(db, migrated_url, refresh_every_second, tmp_path):
    fleet = generate_fleet(seed=11, organizations=2, servers=6, days=2, sites_per_server=0,
                           anomalies_per_server=0)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        write_tenancy(conn, fleet)
    (source,) = write_fleet_files(fleet, tmp_path / "fleet", "csv", site_usage=False)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    rows_first, rows_second = _split_by_server(source, first, second)
    assert rows_first > 0 and rows_second > 0
    started = datetime.now(UTC)
    runs_before = dict(db.execute(
        "select job_id, total_runs from timescaledb_information.job_stats where job_id = any(%s)",
        (refresh_every_second,)).fetchall())

    dbt_env = {"DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs")}
    procs = {
        "ingest first": _rmp(migrated_url, "ingest", str(first), "--batch-rows", "2000"),
        "ingest second": _rmp(migrated_url, "ingest", str(second), "--batch-rows", "2000"),
        "dbt build": _rmp(migrated_url, "dbt", "build", env=dbt_env),
    }
    results = {name: (p.wait(timeout=600), *p.communicate()) for name, p in procs.items()}
    for name, (code, out, err) in results.items():
        assert code == 0, f"{name} exited {code}: {err[-2000:] or out[-2000:]}"
        assert "deadlock" not in (out + err).lower(), name
        assert "concurrently updated" not in (out + err).lower(), name

    # every row exactly once, per server
    expected = {}
    for path in (first, second):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                expected[row["server"]] = expected.get(row["server"], 0) + 1
    got = dict(db.execute(
        "select s.name, count(*) from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id"
        " group by s.name").fetchall())
    assert got == expected
    assert sum(got.values()) == rows_first + rows_second

    # the background workers refreshed while the loads ran, and never failed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = dict(db.execute(
            "select job_id, total_runs from timescaledb_information.job_stats where job_id = any(%s)",
            (refresh_every_second,)).fetchall())
        if all(runs[j] > runs_before.get(j, 0) for j in refresh_every_second):
            break
        time.sleep(0.5)
    assert all(runs[j] > runs_before.get(j, 0) for j in refresh_every_second), (runs_before, runs)
    errors = db.execute(
        "select job_id, err_message from timescaledb_information.job_errors where start_time >= %s",
        (started,)).fetchall()
    assert errors == []

    # the aggregates, refreshed to the end, count every loaded sample once
    for view in REFRESHED:
        db.execute(f"call refresh_continuous_aggregate('metrics.{view}', null, null)")
    hourly = db.execute("select sum(sample_count) from metrics.server_metrics_1h").fetchone()[0]
    assert hourly == rows_first + rows_second


def test_reconfiguring_policies_while_background_jobs_run(db, migrated_url, refresh_every_second):
    """`rmp migrate upgrade` re-applies the idempotent SQL and every policy while
    the workers refresh every second: no deadlock, and every job comes back scheduled."""
    fleet = generate_fleet(seed=12, organizations=1, servers=3, days=1, sites_per_server=0, anomalies_per_server=0)
    write_fleet(fleet, migrated_url)
    expected_jobs = db.execute("select count(*) from metrics.policy_job_ids()").fetchone()[0]
    for _ in range(3):
        running_before = time.monotonic() + 30
        while time.monotonic() < running_before:  # start while a refresh is running when we can catch one
            if db.execute("select count(*) from timescaledb_information.job_stats"
                          " where job_id = any(%s) and job_status = 'Running'",
                          (refresh_every_second,)).fetchone()[0]:
                break
            time.sleep(0.05)
        assert migrations.upgrade(migrated_url) == migrations.head()
        jobs = db.execute(
            "select count(*), count(*) filter (where scheduled) from timescaledb_information.jobs"
            " where job_id in (select metrics.policy_job_ids())").fetchone()
        assert jobs == (expected_jobs, expected_jobs)
