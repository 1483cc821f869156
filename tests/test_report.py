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
from analytics.report import (
    ReportFailed,
    anomaly_context,
    gather,
    human,
    markdown_escape,
    per_day,
    write_report,
)
from ingest.loader import load_rows
from transform.dbt_runner import run_dbt

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_has_every_section_and_its_images(db, migrated_url, fleet, tmp_path):  # noqa: F811
    run_forecasts(migrated_url)
    run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_esd"], days=DAYS)
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
    for text, metric in ((html, "disk_percent"), (md, "disk\\_percent")):
        for name in images:
            assert f"img/{name}" in text
        assert f"web-01 (Acme): {metric} reaches 90 % at" in text
        assert "Organizations nearest their quotas" in text
    # the incident: a row of web-01's table (start, end, peak) linked to its chart
    assert "<h3>web-01 (Acme)</h3>" in html
    assert (f'<td class="time">{spike:%Y-%m-%d %H:%M} UTC</td><td class="time">{spike:%Y-%m-%d %H:%M} UTC</td>\n'
            "<td>99.0 % (up)</td>" in html)
    assert f'<a href="#incident-{anomaly_id}">chart</a>' in html and f'<figure id="incident-{anomaly_id}">' in html
    assert f"| cpu\\_percent | {spike:%Y-%m-%d %H:%M} UTC | {spike:%Y-%m-%d %H:%M} UTC | 99.0 % (up) |" in md
    assert f"[chart](img/anomaly_1_{anomaly_id}.png)" in md
    # every forecast shows its backtest MASE against seasonal-naive and its band's measured coverage
    assert "backtest MASE" in html and "vs seasonal-naive" in html and "95 % band measured coverage" in html
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
    for text, metric in (((path / "index.html").read_text(), "disk_percent"),
                         ((path / "report.md").read_text(), "disk\\_percent")):
        assert f"full-01 (Acme): {metric} already above 90 % since {since:%Y-%m-%d %H:%M} UTC" in text
        assert f"web-01 (Acme): {metric} reaches 90 % at" in text
        # the full disk went over in the past, so it is listed first
        assert text.index("full-01 (Acme)") < text.index(f"web-01 (Acme): {metric}")


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
        rd = gather(conn, days=4, detector="stl_mad")
        (row,) = rd.anomalies
        assert row["resolution"] == "5m" and row["organization"] == "Acme"
        plotted = anomaly_context(conn, row)
    assert (plotted.index[1:] - plotted.index[:-1]).unique().tolist() == [timedelta(minutes=5)]
    assert plotted[spike_at] == 99.0 and plotted[spike_at + timedelta(minutes=5)] == 99.0
    assert plotted.index[0] == spike_at - timedelta(days=1)
    path = write_report(migrated_url, tmp_path, days=4, detector="stl_mad")
    assert "stl_mad on 5m data" in (path / "index.html").read_text()
    assert (path / "img" / f"anomaly_1_{row['id']}.png").read_bytes()[:8] == PNG


def test_human_units_and_rates_per_day():
    assert human(1_234_567_890_123, "B") == "1.2 TB"
    assert human(505e9, "B") == "505.0 GB"
    assert human(999, "B") == "999 B"
    assert human(2_500_000, "B/s") == "2.5 MB/s"
    assert human(93.456, "%") == "93.5 %"
    assert per_day(5e9, "B") == "+5.0 GB/day"
    assert per_day(-0.25, "%") == "-0.2 %/day"
    assert human(None, "B") == ""


def test_markdown_escape_neutralises_markup():
    assert markdown_escape("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown_escape("a_b|c*d[e](f)`g`") == "a\\_b\\|c\\*d\\[e\\](f)\\`g\\`"


HOSTILE_ORG = "<script>alert(1)</script>"
HOSTILE_SERVER = '<img src=x onerror="alert(2)">'


def test_hostile_server_and_organization_names_appear_only_escaped(db, migrated_url, fleet, tmp_path):  # noqa: F811
    db.execute("update tenancy.organizations set name = %s where id = %s", (HOSTILE_ORG, fleet["org"]))
    db.execute("update tenancy.servers set name = %s where id = %s", (HOSTILE_SERVER, fleet["web"]))
    run_forecasts(migrated_url)
    run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_esd"], days=DAYS)
    path = write_report(migrated_url, tmp_path, days=DAYS, top=5)
    html = (path / "index.html").read_text()
    md = (path / "report.md").read_text()
    for text in (html, md):
        assert "<script" not in text and "<img src=x" not in text and "alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # headings, table cells and alt attributes
    assert "<h3>&lt;img src=x onerror=&#34;alert(2)&#34;&gt; (&lt;script&gt;alert(1)&lt;/script&gt;)</h3>" in html
    assert 'alt="&lt;img src=x onerror=&#34;alert(2)&#34;&gt; disk_percent forecast"' in html
    assert "### &lt;img src=x onerror=\"alert(2)\"&gt; (&lt;script&gt;alert(1)&lt;/script&gt;)" in md


def test_org_forecast_rows_label_used_vs_allocated_and_say_when_the_limit_is_exceeded(
        db, migrated_url, fleet, tmp_path):  # noqa: F811
    # two servers of 500 GB allocated against a 750 GB licence: 133.3 % allocated, while ~505 GB is used
    db.execute("update tenancy.licences set max_disk_bytes = %s where organization_id = %s", (750 * GB, fleet["org"]))
    load_rows(db, "server_metrics", COLUMNS, rows_for(fleet["db"], fleet["start"], DAYS - 2, 0.0))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    run_forecasts(migrated_url, metrics=["disk"])
    result = run_dbt(["run", "--select", "+capacity_forecasts"], migrated_url, work_dir=tmp_path)
    assert result.exit_code == 0, result.exception
    path = write_report(migrated_url, tmp_path / "out", days=DAYS, top=10)
    html = (path / "index.html").read_text()
    md = (path / "report.md").read_text()
    # the quota table: allocated disk, in TB/GB with one decimal, 133.3 % exceeded
    assert ('<tr><td>Acme</td><td class="text">disk allocated (sum of server disk sizes)</td>\n'
            '<td>1.0 TB</td><td>750.0 GB</td>\n<td class="bad">133.3 % exceeded</td></tr>') in html
    assert "| Acme | disk allocated (sum of server disk sizes) | 1.0 TB | 750.0 GB | 133.3 % exceeded |" in md
    # the forecast row of the same organization: used disk, its rate per day, and that the limit is already over
    row = html[html.index("<td>Acme</td><td class=\"text\">disk used (sum over servers)</td>"):]
    row = row[:row.index("</tr>")]
    assert "+5.0 GB/day" in row and "<td>750.0 GB</td>" in row
    assert ("limit already exceeded by disk allocated (sum of server disk sizes) (133.3 %)</span>; "
            "used reaches the limit") in row
    assert "stays below" not in row and ">ok<" not in row
    assert "**limit already exceeded by disk allocated (sum of server disk sizes) (133.3 %)**; used reaches" in md


def test_low_confidence_forecasts_are_marked(db, migrated_url, fleet, tmp_path):  # noqa: F811
    run_forecasts(migrated_url, metrics=["disk"])
    path = write_report(migrated_url, tmp_path, days=DAYS, top=5)
    assert "low confidence" not in (path / "index.html").read_text()  # the trend model beat seasonal-naive
    db.execute("update analytics.forecasts set model = 'seasonal_naive', is_low_confidence = true,"
               " mase = seasonal_naive_mase where entity_id = %s and metric = 'disk_percent'", (fleet["web"],))
    path = write_report(migrated_url, tmp_path, days=DAYS, top=5)
    html = (path / "index.html").read_text()
    assert '<span class="low">low confidence: no model beat seasonal-naive in the backtest</span>' in html
    assert "**Low confidence**: no model beat seasonal-naive in the backtest." in (path / "report.md").read_text()
