"""`rmp report` against the real engine: files with images, run records, failure leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from test_forecast_db import COLUMNS, DAYS, GB, fleet, marts, rows_for, start_of_history  # noqa: F401 - fixtures used by name

from analytics import data
from analytics.pipeline import run_anomalies, run_forecasts
from analytics.report import ReportFailed, anomaly_context, gather, write_report
from ingest.loader import load_rows

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_has_every_section_and_its_images(db, migrated_url, fleet, tmp_path):  # noqa: F811
    run_forecasts(migrated_url)
    run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_mad"], days=DAYS)
    path = write_report(migrated_url, tmp_path, days=DAYS, top=5)

    assert path.parent == tmp_path and path.name.startswith("report-")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary directory left
    images = sorted(p.name for p in (path / "img").iterdir())
    anomaly_id = db.execute("select id from analytics.anomalies").fetchone()[0]
    assert images == sorted([
        "fleet_overview.png",
        f"exhaustion_1_{fleet['web']}.png",
        f"anomaly_1_{anomaly_id}.png",
    ])
    for name in images:
        assert (path / "img" / name).read_bytes()[:8] == PNG
    html = (path / "index.html").read_text()
    md = (path / "report.md").read_text()
    spike = fleet["start"] + timedelta(hours=24 * 15 + 10)
    for text in (html, md):
        for name in images:
            assert f"img/{name}" in text
        assert "web-01 (Acme): disk_percent reaches 90" in text
        assert f"web-01 cpu_percent: up {spike:%Y-%m-%d %H:%M} UTC" in text
        assert "Organizations nearest their quotas" in text
    run = db.execute("select kind, status, output_path, error from analytics.report_runs"
                     " where kind = 'report'").fetchall()
    assert run == [("report", "ok", str(path), None)]


def test_failed_report_is_recorded_and_leaves_no_files(db, migrated_url, fleet, tmp_path):  # noqa: F811
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(ReportFailed, match=r"report run \d+ failed: FileExistsError"):
        write_report(migrated_url, blocker, days=DAYS)
    status, error, output = db.execute(
        "select status, error, output_path from analytics.report_runs where kind = 'report'").fetchone()
    assert status == "failed" and "FileExistsError" in error and output is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-directory"]


def test_cli_report_failure_exits_non_zero_with_one_line(db, migrated_url, fleet, tmp_path):  # noqa: F811
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**os.environ, "DATABASE_URL": migrated_url}
    done = subprocess.run([sys.executable, "-m", "rmp_app", "report", "--no-refresh", "--out", str(blocker / "reports")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ERROR" in lines[0] and "report run" in lines[0]
    assert "Traceback" not in done.stderr
    assert db.execute("select status from analytics.report_runs").fetchall() == [("failed",)]


def test_cli_report_writes_a_report(db, migrated_url, fleet, tmp_path):  # noqa: F811
    env = {**os.environ, "DATABASE_URL": migrated_url}
    done = subprocess.run([sys.executable, "-m", "rmp_app", "report", "--days", str(DAYS), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    (report_dir,) = list(tmp_path.iterdir())
    assert done.stdout.strip() == f"report written to {report_dir / 'index.html'} and {report_dir / 'report.md'}"
    assert (report_dir / "img" / "fleet_overview.png").read_bytes()[:8] == PNG
    kinds = db.execute("select kind, status from analytics.report_runs order by id").fetchall()
    assert kinds == [("forecast", "ok"), ("report", "ok")]


def test_report_says_already_above_for_a_full_disk(db, migrated_url, fleet, tmp_path):  # noqa: F811
    full = db.execute("insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes,"
                      " disk_total_bytes) values (%s, 'full-01', 8, %s, %s) returning id",
                      (fleet["org"], 16 * GB, 500 * GB)).fetchone()[0]
    load_rows(db, "server_metrics", COLUMNS, rows_for(full, fleet["start"], DAYS, 1.5, disk_start=60.0))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    run_forecasts(migrated_url, metrics=["disk"])
    path = write_report(migrated_url, tmp_path, days=DAYS, top=5)
    since = fleet["start"] + timedelta(days=20)
    for text in ((path / "index.html").read_text(), (path / "report.md").read_text()):
        assert f"full-01 (Acme): disk_percent already above 90 % since {since:%Y-%m-%d %H:%M} UTC" in text
        assert "web-01 (Acme): disk_percent reaches 90 % at" in text
        # the full disk went over in the past, so it is listed first
        assert text.index("full-01 (Acme)") < text.index("web-01 (Acme): disk_percent")


def test_anomaly_chart_plots_a_short_spike_at_the_resolution_it_was_found_at(db, migrated_url, tmp_path):
    org = db.execute("insert into tenancy.organizations (name, slug) values ('Acme', 'acme') returning id").fetchone()[0]
    sid = db.execute("insert into tenancy.servers (organization_id, name) values (%s, 'web-09') returning id",
                     (org,)).fetchone()[0]
    start = start_of_history()
    rows = list(rows_for(sid, start, 4, 0.0))
    spike_at = start + timedelta(days=3, hours=14, minutes=10)
    # a 10-minute burst to 99 %: two 5-minute buckets; the hourly mean barely moves
    rows = [r[:2] + ((99.0,) if spike_at <= r[1] < spike_at + timedelta(minutes=10) else (r[2],)) + r[3:]
            for r in rows]
    load_rows(db, "server_metrics", COLUMNS, rows)
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_5m', null, null)")
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_mad"], resolution="5m", days=4)
    stored = db.execute("select started_at, ended_at, resolution from analytics.anomalies").fetchall()
    assert stored == [(spike_at, spike_at + timedelta(minutes=5), "5m")]

    with data.connect(migrated_url) as conn:
        rd = gather(conn, days=4)
        (row,) = rd.anomalies
        assert row["resolution"] == "5m" and row["organization"] == "Acme"
        plotted = anomaly_context(conn, row)
    assert (plotted.index[1:] - plotted.index[:-1]).unique().tolist() == [timedelta(minutes=5)]
    assert plotted[spike_at] == 99.0 and plotted[spike_at + timedelta(minutes=5)] == 99.0
    assert plotted.index[0] == spike_at - timedelta(days=1)
    path = write_report(migrated_url, tmp_path, days=4)
    assert "stl_mad on 5m data" in (path / "index.html").read_text()
    assert (path / "img" / f"anomaly_1_{row['id']}.png").read_bytes()[:8] == PNG
