"""`rmp forecast` / `rmp anomalies` jobs against the real engine: hand-built rows
loaded through the ingest loader, aggregates refreshed, results read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.pipeline import run_anomalies, run_forecasts
from ingest.loader import load_rows

GB = 1_000_000_000
DAYS = 21
STEP = timedelta(minutes=5)
COLUMNS = ["server_id", "collected_at", "cpu_percent", "memory_percent", "memory_used_bytes",
           "disk_percent", "disk_used_bytes", "disk_total_bytes", "network_rx_bytes", "network_tx_bytes"]


def start_of_history() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=DAYS + 1)


def rows_for(server_id: int, start: datetime, days: int, disk_per_day: float, spikes: tuple[int, ...] = (),
             disk_start: float = 40.0):
    """5-minute rows: disk `disk_start` % + `disk_per_day`/day (of 500 GB), a daily cpu cycle, flat memory.
    `spikes`: hours (from start) where cpu sits at 99 % for the whole hour."""
    rng = np.random.default_rng(server_id)
    n = days * 288
    t = np.arange(n)
    cpu = 30 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.0, n)
    for h in spikes:
        cpu[h * 12:(h + 1) * 12] = 99.0
    disk_pct = disk_start + disk_per_day * t / 288
    for i in range(n):
        yield (server_id, start + i * STEP, float(np.clip(cpu[i], 0, 100)), 50.0, 8 * GB,
               float(disk_pct[i]), int(disk_pct[i] / 100 * 500 * GB), 500 * GB, 3000, 1500)


@pytest.fixture(scope="module")
def marts(migrated_url, tmp_path_factory):
    """The marts organization forecasts read; views over live data, so built once."""
    from transform.dbt_runner import run_dbt

    work = tmp_path_factory.mktemp("dbt")
    built = run_dbt(["run", "--select", "+org_metrics_hourly", "+org_resource_usage"], migrated_url, work_dir=work)
    assert built.success, built.statuses()


@pytest.fixture
def fleet(db: psycopg.Connection, marts):
    org = db.execute("insert into tenancy.organizations (name, slug) values ('Acme', 'acme') returning id").fetchone()[0]
    db.execute("insert into tenancy.licences (organization_id, max_disk_bytes, max_memory_bytes)"
               " values (%s, %s, %s)", (org, 1000 * GB, 100 * GB))
    ids = [db.execute("insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes,"
                      " disk_total_bytes) values (%s, %s, 8, %s, %s) returning id",
                      (org, name, 16 * GB, 500 * GB)).fetchone()[0] for name in ("web-01", "db-01")]
    start = start_of_history()
    load_rows(db, "server_metrics", COLUMNS, rows_for(ids[0], start, DAYS, 1.0, spikes=(24 * 15 + 10,)))
    # the second server reports for the last 2 days only: too little history
    load_rows(db, "server_metrics", COLUMNS, rows_for(ids[1], start + timedelta(days=DAYS - 2), 2, 0.0))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    return {"org": org, "web": ids[0], "db": ids[1], "start": start}


def test_forecasts_land_with_their_keys_and_the_disk_crossing(db, migrated_url, fleet):
    summary = run_forecasts(migrated_url)
    rows = db.execute(
        "select entity_type, entity_id, metric, status, model, threshold, threshold_crossing_at,"
        " slope_per_day, horizon_start, jsonb_array_length(forecast), run_id"
        " from analytics.forecasts order by 1, 2, 3").fetchall()
    keys = [(r[0], r[1], r[2], r[3]) for r in rows]
    assert keys == sorted([
        ("organization", fleet["org"], "disk_used_bytes", "insufficient_data"),
        ("organization", fleet["org"], "memory_used_bytes", "insufficient_data"),
        *[("server", fleet["web"], m, "ok") for m in
          ("cpu_percent", "disk_percent", "memory_percent", "network_bytes_per_sec")],
        *[("server", fleet["db"], m, "insufficient_data") for m in
          ("cpu_percent", "disk_percent", "memory_percent", "network_bytes_per_sec")],
    ])
    assert summary.series == 10 and summary.ok == 4 and summary.insufficient == 6
    assert {r[10] for r in rows} == {summary.run_id}
    disk = next(r for r in rows if r[1] == fleet["web"] and r[2] == "disk_percent")
    assert disk[5] == 90.0
    assert disk[7] == pytest.approx(1.0, abs=0.01)
    true_crossing = fleet["start"] + timedelta(days=50)  # 40 % + 1 %/day reaches 90 % on day 50
    last = disk[8] - timedelta(hours=1)
    assert abs((disk[6] - last) / (true_crossing - last) - 1) < 0.10
    assert disk[9] == 14 * 24
    short = [r for r in rows if r[3] == "insufficient_data"]
    assert all(r[6] is None and r[7] is None and r[9] == 0 for r in short)
    run = db.execute("select kind, status, finished_at is not null from analytics.report_runs where id = %s",
                     (summary.run_id,)).fetchone()
    assert run == ("forecast", "ok", True)


def test_rerunning_forecasts_replaces_rows(db, migrated_url, fleet):
    run_forecasts(migrated_url)
    second = run_forecasts(migrated_url)
    count, runs = db.execute("select count(*), array_agg(distinct run_id) from analytics.forecasts").fetchone()
    assert count == 10
    assert runs == [second.run_id]


def test_organization_quota_forecast_against_licence(db, migrated_url, fleet):
    # with both servers reporting for the whole window the organization series is complete
    load_rows(db, "server_metrics", COLUMNS,
              rows_for(fleet["db"], fleet["start"], DAYS - 2, 0.0))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    run_forecasts(migrated_url, metrics=["disk"])
    row = db.execute(
        "select status, threshold, slope_per_day, threshold_crossing_at from analytics.forecasts"
        " where entity_type = 'organization' and metric = 'disk_used_bytes'").fetchone()
    assert row[0] == "ok"
    assert row[1] == 1000 * GB
    # web-01 grows 1 % of 500 GB a day, db-01 is flat: 5 GB/day
    assert row[2] == pytest.approx(5 * GB, rel=0.02)
    # at the end: 500 GB * 61 % + 500 GB * 40 % = 505 GB; (1000 - 505) / 5 = 99 days to the limit
    days_left = (row[3] - (fleet["start"] + timedelta(days=DAYS))) / timedelta(days=1)
    assert days_left == pytest.approx(99, rel=0.10)


def test_anomalies_found_stored_and_not_duplicated(db, migrated_url, fleet):
    summary = run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_mad"], days=DAYS)
    rows = db.execute("select server_id, metric, detector, started_at, ended_at, direction, observed"
                      " from analytics.anomalies order by started_at").fetchall()
    spike_hour = fleet["start"] + timedelta(hours=24 * 15 + 10)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (fleet["web"], "cpu_percent", "stl_mad", spike_hour, spike_hour, "up")]
    assert rows[0][6] == pytest.approx(99.0)
    assert summary.skipped_short == 1  # db-01: two days of hours is too short for STL
    again = run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_mad"], days=DAYS)
    assert again.anomalies == 1
    assert db.execute("select count(*) from analytics.anomalies").fetchone()[0] == 1


def test_seed_rule_flags_the_spike_hour_against_the_previous_hour(db, migrated_url, fleet):
    run_anomalies(migrated_url, metrics=["cpu"], detectors=["baseline_rule"], days=DAYS,
                  server_ids=[fleet["web"]])
    spike_hour = fleet["start"] + timedelta(hours=24 * 15 + 10)
    starts = [r[0] for r in db.execute(
        "select started_at from analytics.anomalies where detector = 'baseline_rule'").fetchall()]
    assert spike_hour in starts


def test_full_disk_is_stored_already_above_and_clipped_at_100(db, migrated_url, fleet):
    org = fleet["org"]
    full = db.execute("insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes,"
                      " disk_total_bytes) values (%s, 'full-01', 8, %s, %s) returning id",
                      (org, 16 * GB, 500 * GB)).fetchone()[0]
    # 60 % + 1.5 %/day: hour 479 averages 89.97 %, hour 480 (day 20) 90.03 %; the line would reach 112 % in 14 days
    load_rows(db, "server_metrics", COLUMNS, rows_for(full, fleet["start"], DAYS, 1.5, disk_start=60.0))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    run_forecasts(migrated_url, metrics=["disk"], server_ids=[full])
    crossing, lo, hi, above, top_yhat, top_hi, horizon_start = db.execute(
        "select threshold_crossing_at, crossing_lo_at, crossing_hi_at, is_above_threshold,"
        " (select max((p->>'yhat')::float8) from jsonb_array_elements(forecast) p),"
        " (select max((p->>'hi')::float8) from jsonb_array_elements(forecast) p), horizon_start"
        " from analytics.forecasts where entity_id = %s and metric = 'disk_percent'", (full,)).fetchone()
    assert above is True
    assert crossing == lo == hi == fleet["start"] + timedelta(days=20)
    assert crossing < horizon_start
    assert top_yhat == 100.0 and top_hi == 100.0
    web_above = db.execute("select is_above_threshold from analytics.forecasts"
                           " where entity_id = %s and metric = 'disk_percent'", (fleet["web"],)).fetchone()
    assert web_above is None  # web-01 was not forecast in this run (server_ids)
