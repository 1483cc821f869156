"""`rmp demo` end to end, as a newcomer runs it, at a small size."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timedelta

import pytest

from ingest.generator import generate_fleet
from rmp_app.demo import EXAMPLE_QUERIES

SERVERS, DAYS, SEED, ORGS = 6, 4, 42, 3


@pytest.fixture
def demo_run(db, migrated_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": migrated_url, "RMP_HOME": str(tmp_path / "home")}
    args = ["rmp", "demo", "--servers", str(SERVERS), "--days", str(DAYS), "--seed", str(SEED),
            "--organizations", str(ORGS), "--workdir", str(tmp_path / "work"),
            "--reports-dir", str(tmp_path / "reports")]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    rows_after_first = db.execute("select count(*) from metrics.server_metrics").fetchone()[0]
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    return first, second, rows_after_first


def test_demo_end_to_end(demo_run, db, tmp_path):
    first, second, rows_after_first = demo_run
    # The same fleet the demo generated (its start is recorded beside the files).
    start = datetime.fromisoformat(json.loads((tmp_path / "work" / "demo.json").read_text())["start"])
    fleet = generate_fleet(seed=SEED, organizations=ORGS, servers=SERVERS, days=DAYS, start=start)

    # Idempotent: the second run loads nothing new.
    assert rows_after_first == fleet.server_metric_rows
    assert db.execute("select count(*) from metrics.server_metrics").fetchone()[0] == fleet.server_metric_rows
    assert "0 loaded" in second.stderr.replace(",", "")

    report = re.search(r"Report: (\S+index\.html)", first.stdout).group(1)
    html_path = tmp_path / "reports" / report.split("/reports/")[1]
    md = (html_path.parent / "report.md").read_text()
    html = html_path.read_text()
    # scaling events that follow the generated load, loaded once, summarised in the report
    from ingest.scaling_events import scaling_events

    events = scaling_events(fleet)
    assert db.execute("select count(*) from metrics.scaling_events").fetchone()[0] == len(events) > 0
    assert db.execute("select sum(count_events) from marts.scaling_event_summary").fetchone()[0] == len(events)
    section = html.split("<h2>Scaling events</h2>")[1]
    assert "<table>" in section.split("<h2>")[0] and "## Scaling events" in md
    images = re.findall(r'src="(img/[^"]+\.png)"', html)
    assert len(images) >= 3
    for img in images:
        assert (html_path.parent / img).stat().st_size > 1000

    # The disk the generator fills past 90 % is among the predicted exhaustions.
    filling = max(fleet.servers, key=lambda s: s.disk_end_percent)
    assert filling.disk_end_percent > 90
    exhaustion = md.split("## Servers predicted to exhaust capacity soonest")[1].split("\n## ")[0]
    # Markdown escapes the underscore; a disk that is over 90 % by the end is "already above".
    assert re.search(rf"### {re.escape(filling.name)} \(.*\): disk\\?_percent (reaches|already above) 90",
                     exhaustion)
    crossing = db.execute(
        "select f.threshold_crossing_at from analytics.forecasts f join tenancy.servers s on s.id = f.entity_id"
        " join tenancy.organizations o on o.id = s.organization_id"
        " where f.entity_type = 'server' and f.metric = 'disk_percent' and s.name = %s and o.slug = %s",
        [filling.name, filling.organization],
    ).fetchone()[0]
    assert crossing is not None and crossing <= fleet.end + timedelta(days=1)

    # Every injected anomaly is detected (an anomaly of its server and metric overlaps its
    # window, to the hour), and the report shows at least one of them.
    assert fleet.labels
    anomalies_section = md.split("## Anomaly incidents per server")[1].split("\n## ")[0]
    # one block per server: "### <server> (<organization>)" then a table row per incident
    server_blocks = anomalies_section.split("\n### ")[1:]
    shown = 0
    for label in fleet.labels:
        found = db.execute(
            "select count(*) from analytics.anomalies a join tenancy.servers s on s.id = a.server_id"
            " join tenancy.organizations o on o.id = s.organization_id"
            " where s.name = %s and o.slug = %s and a.metric like %s"
            " and a.started_at < %s and a.ended_at >= %s - interval '1 hour'",
            [label.server, label.organization, label.metric.split("_")[0] + "%", label.end, label.start],
        ).fetchone()[0]
        assert found >= 1, f"injected {label} not detected"
        if any(b.startswith(f"{label.server} (") and f"\n| {label.metric.split('_')[0]}" in b for b in server_blocks):
            shown += 1
    assert shown >= 1

    # The example queries printed for psql run and return rows.
    for _title, query in EXAMPLE_QUERIES:
        assert query in first.stdout
        assert db.execute(query).fetchall(), query

    runs = db.execute("select kind, status from analytics.report_runs order by id").fetchall()
    assert runs.count(("report", "ok")) == 2
