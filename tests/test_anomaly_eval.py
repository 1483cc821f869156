"""bench/anomaly_eval on a NAB-format directory it has never seen, against the real engine."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from bench.anomaly_eval import EvalInputError, metric_for, prf, read_inputs, run, score


def write_nab(directory, spike_at: int, name: str = "host_cpu_test.csv") -> None:
    """Five days of 5-minute cpu with a daily cycle and one 2-hour burst to 95 % at `spike_at`."""
    n = 288 * 5
    t = np.arange(n)
    rng = np.random.default_rng(1)
    values = 30 + 15 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1.0, n)
    values[spike_at:spike_at + 24] = 95.0
    idx = pd.date_range("2014-02-01", periods=n, freq="5min")
    pd.DataFrame({"timestamp": idx.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
        directory / name, index=False)
    start, end = idx[spike_at] - pd.Timedelta(hours=3), idx[spike_at] + pd.Timedelta(hours=5)
    (directory / "anomaly_windows.json").write_text(json.dumps(
        {name: [[f"{start:%Y-%m-%d %H:%M:%S}.000000", f"{end:%Y-%m-%d %H:%M:%S}.000000"]]}))


def test_score_and_prf_arithmetic():
    w = [(pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")),
         (pd.Timestamp("2024-01-10", tz="UTC"), pd.Timestamp("2024-01-11", tz="UTC"))]
    hour = timedelta(hours=1)
    found = [(pd.Timestamp("2024-01-01 23:00", tz="UTC"),) * 2,  # bucket 23:00-24:00 ends as window 1 starts
             (pd.Timestamp("2024-01-02 12:00", tz="UTC"),) * 2,  # inside window 1
             (pd.Timestamp("2024-01-05", tz="UTC"),) * 2]  # in no window
    s = score(found, w, hour)
    assert s == {"windows": 2, "detected": [True, False], "anomalies": 3, "true_positives": 1, "false_positives": 2}
    assert prf(2, 1, 3, 1) == {"precision": 0.3333, "recall": 0.5, "f1": 0.4}


def test_unseen_series_scored_through_the_ingest_path(db, migrated_url, tmp_path):
    data = tmp_path / "nab"
    data.mkdir()
    write_nab(data, spike_at=288 * 3 + 120)  # day 4, 10:00
    out = tmp_path / "anomaly_eval.json"
    report = run(migrated_url, data, resolutions=["1h"], out_dir=tmp_path, generated={"skip": True},
                 speed_series=0)
    seed = report["summary"]["baseline_rule@1h"]
    assert seed["detected"] == 1
    assert json.loads(out.read_text())["summary"] == report["summary"]
    assert report["metrics"] == {"host_cpu_test.csv": "cpu_percent"}
    for detector in ("stl_mad", "stl_esd"):
        stl = report["summary"][f"{detector}@1h"]
        assert (stl["windows"], stl["detected"], stl["anomalies"], stl["false_positives"]) == (1, 1, 1, 0)
        assert (stl["precision"], stl["recall"], stl["f1"]) == (1.0, 1.0, 1.0)
    assert {r["detector"]: (r["windows"], r["detected"], r["false_positives"]) for r in report["per_file"]} == {
        "baseline_rule": (1, 1, seed["false_positives"]), "stl_mad": (1, 1, 0), "stl_esd": (1, 1, 0)}
    assert "| host_cpu_test.csv | cpu_percent | 1/1 (1) | 0 (" in (tmp_path / "anomaly_eval.md").read_text()
    # the benchmark's organization is removed afterwards
    assert db.execute("select count(*) from tenancy.organizations where slug = 'bench-nab'").fetchone()[0] == 0


def test_a_file_name_naming_no_metric_goes_in_as_the_generic_metric(db, migrated_url, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write_nab(first, spike_at=288 * 3 + 120, name="grok_asg_anomaly.csv")
    write_nab(second, spike_at=288 * 2 + 60, name="rogue_agent_key_hold.csv")
    report = run(migrated_url, [first, second], resolutions=["1h"], out_dir=tmp_path, generated={"skip": True},
                 speed_series=0)
    assert report["metrics"] == {"grok_asg_anomaly.csv": "generic", "rogue_agent_key_hold.csv": "generic"}
    esd = report["summary"]["stl_esd@1h"]
    assert (esd["windows"], esd["detected"], esd["false_positives"]) == (2, 2, 0)
    # the retention jobs run again afterwards
    assert db.execute("select bool_and(scheduled) from timescaledb_information.jobs"
                      " where proc_name in ('policy_retention', 'apply_organization_retention')").fetchone()[0]


def test_a_cpu_file_outside_percent_goes_in_as_generic():
    from pathlib import Path

    assert metric_for(Path("ec2_cpu_x.csv"), pd.Series([5.0, 250.0])) == ("metric_samples", "generic")
    assert metric_for(Path("ec2_cpu_x.csv"), pd.Series([5.0, 25.0])) == ("server_metrics", "cpu_percent")
    assert metric_for(Path("nyc_taxi.csv")) == ("metric_samples", "generic")


def test_bad_input_names_the_file(tmp_path):
    (tmp_path / "anomaly_windows.json").write_text(json.dumps({"x_cpu.csv": []}))
    (tmp_path / "x_cpu.csv").write_text("time,val\n2014-01-01 00:00:00,1\n")
    with pytest.raises(EvalInputError, match=r"x_cpu.csv:1: header must be timestamp,value"):
        read_inputs(tmp_path)
    with pytest.raises(EvalInputError, match="anomaly_windows.json: missing"):
        read_inputs(tmp_path / "nowhere")
