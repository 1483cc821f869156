"""bench.scale at its --quick size on the test engine: the JSON has every key the
issue asks for and its figures agree with each other (never its timings)."""

from __future__ import annotations

import json

from bench import scale


def test_quick_scale_run_is_complete_and_consistent(db, migrated_url, tmp_path):
    result = scale.run(migrated_url, cleanup=True, out_dir=tmp_path, **scale.QUICK)
    assert scale.check(result) == []
    summary = result["summary"]
    assert set(scale.SUMMARY_KEYS) <= set(summary)
    q = scale.QUICK
    assert summary["servers"] == q["servers"] and summary["rows"] == q["servers"] * q["hours"] * 120
    # the bulk load put every generated row in the table exactly once
    assert result["storage"]["server_metrics"]["rows"] == summary["rows"] + result["live"]["rows"]
    # the live writers: one batch per writer per tick, one row per server per batch
    assert result["live"]["rows"] == result["live"]["batches"] * q["servers"] // q["writers"]
    assert set(result["refresh_one_hour"]) == set(scale.TIERS)
    assert {k.rsplit("_", 1)[0] for k in result["dashboards_ms"]} == {
        "24h", "7d", "30d", "organization_totals", "fleet_last_point"}
    assert result["dbt_build"] == {"status": "skipped"} and summary["dbt_build_s"] is None
    # written to disk as one JSON document
    written = json.loads((tmp_path / f"scale-{result['engine']}-{q['servers']}x{q['hours']}h.json").read_text())
    assert written["summary"] == json.loads(json.dumps(summary, default=str))
    assert db.execute("select count(*) from tenancy.organizations where slug like 'bench-scale-%'").fetchone()[0] == 0
