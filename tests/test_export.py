"""`rmp export`: CSV and JSON parse back to exactly the numbers in the database."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
from test_forecast_db import DAYS, fleet, marts  # noqa: F401 - the fixtures are used by name

from analytics.export import ExportError, export, fetch
from analytics.pipeline import run_anomalies, run_forecasts


@pytest.fixture
def results(db, migrated_url, fleet):  # noqa: F811
    run_forecasts(migrated_url)
    run_anomalies(migrated_url, metrics=["cpu"], detectors=["stl_mad", "baseline_rule"], days=DAYS)
    return fleet


def test_forecasts_json_round_trips(db, results, tmp_path):
    out = tmp_path / "forecasts.json"
    n, _ = export(db, "forecasts", "json", out)
    parsed = json.loads(out.read_text())
    rows = db.execute("select entity_type, entity_id, metric, slope_per_day, r_squared, mase,"
                      " threshold_crossing_at, forecast from analytics.forecasts"
                      " order by entity_type, entity_id, metric, horizon_start").fetchall()
    assert n == len(parsed) == len(rows) == 10
    for p, r in zip(parsed, rows, strict=True):
        assert (p["entity_type"], p["entity_id"], p["metric"]) == r[:3]
        assert (p["slope_per_day"], p["r_squared"], p["mase"]) == r[3:6]  # exact floats
        assert (None if p["threshold_crossing_at"] is None
                else datetime.fromisoformat(p["threshold_crossing_at"])) == r[6]
        assert p["forecast"] == r[7]


def test_anomalies_csv_round_trips(db, results, tmp_path):
    out = tmp_path / "anomalies.csv"
    export(db, "anomalies", "csv", out)
    parsed = list(csv.DictReader(io.StringIO(out.read_text())))
    rows = db.execute("select server_id, detector, started_at, observed, expected, score, direction"
                      " from analytics.anomalies order by server_id, metric, detector, started_at").fetchall()
    assert len(parsed) == len(rows) > 0
    for p, r in zip(parsed, rows, strict=True):
        assert (int(p["server_id"]), p["detector"], datetime.fromisoformat(p["started_at"])) == r[:3]
        assert (float(p["observed"]), float(p["expected"]), float(p["score"]), p["direction"]) == r[3:]


def test_aggregate_export_filtered_by_server(db, results):
    _, text = export(db, "server_metrics_1h", "csv", None, entity_id=results["db"])
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 48  # two days of hours for db-01
    assert {p["server_id"] for p in parsed} == {str(results["db"])}
    cols, rows = fetch(db, "server_metrics_1h", entity_id=results["db"])
    first = dict(zip(cols, rows[0], strict=True))
    assert float(parsed[0]["disk_avg_percent"]) == first["disk_avg_percent"]
    assert int(parsed[0]["sample_count"]) == first["sample_count"] == 12


def test_unknown_names_are_refused_without_touching_sql(db):
    with pytest.raises(ExportError, match="cannot export 'tenancy.users'"):
        fetch(db, "tenancy.users")
    with pytest.raises(ExportError, match="unknown format 'xml'"):
        export(db, "forecasts", "xml", None)


def test_cli_rejects_a_relation_outside_the_allow_list(migrated_url):
    env = {**os.environ, "DATABASE_URL": migrated_url}
    done = subprocess.run([sys.executable, "-m", "rmp_app", "export", "pg_authid"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "Invalid value for '{forecasts|anomalies" in done.stderr
    assert "Traceback" not in done.stderr


def test_analyst_exports_aggregates_of_its_organizations_through_the_tenant_views(db, migrated_url, fleet):  # noqa: F811
    import psycopg
    from psycopg.conninfo import make_conninfo

    from rmp import tenancy

    other = db.execute("insert into tenancy.organizations (name, slug) values ('Other', 'other') "
                       "returning id").fetchone()[0]
    stranger = db.execute("insert into tenancy.servers (organization_id, name) values (%s, 'x-01') returning id",
                          (other,)).fetchone()[0]
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) "
               "select %s, now() - interval '3 hours' + g * interval '30 s', 5 from generate_series(0, 9) g",
               (stranger,))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    db.execute("drop role if exists export_ana")
    db.execute("create role export_ana login")
    try:
        tenancy.grant(db, "acme", "export_ana")
        _, everything = fetch(db, "server_metrics_1h")
        with psycopg.connect(make_conninfo(migrated_url, user="export_ana")) as analyst:
            cols, rows = fetch(analyst, "server_metrics_1h")
            _, text = export(analyst, "server_metrics_1h", "csv", None)
        server = cols.index("server_id")
        assert {r[server] for r in rows} == {fleet["web"], fleet["db"]}
        assert rows == [r for r in everything if r[server] != stranger]
        assert len(text.splitlines()) == 1 + len(rows)
    finally:
        db.execute("drop owned by export_ana")
        db.execute("drop role export_ana")
