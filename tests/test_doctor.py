"""`rmp doctor` on a live migrated database: passes when healthy, names what is broken."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from rmp import doctor
from rmp_app.cli import cli


def _refresh_job(db, view: str) -> tuple[int, dict]:
    return db.execute(
        "select job_id, config from timescaledb_information.jobs"
        " where proc_name = 'policy_refresh_continuous_aggregate' and hypertable_name = %s",
        (view,),
    ).fetchone()


def test_doctor_passes_on_a_fresh_migrated_database(db, migrated_url, monkeypatch):
    checks = doctor.run(db)
    assert doctor.problems(checks) == []
    names = {c.name for c in checks}
    for view in ("server_metrics_1m", "server_metrics_5m", "server_metrics_1h", "server_metrics_1d",
                 "site_usage_daily"):
        assert f"refresh window metrics.{view}" in names
        assert f"refresh metrics.{view}" in names
    assert "retention metrics.server_samples" in names

    monkeypatch.setenv("DATABASE_URL", migrated_url)
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"all {len(checks)} checks passed"


def test_doctor_fails_naming_the_aggregate_whose_refresh_reaches_past_retention(db, migrated_url, monkeypatch):
    job_id, config = _refresh_job(db, "server_metrics_1h")
    db.execute("select alter_job(%s, config => jsonb_set(config, '{start_offset}', '\"100 days\"'))"
               " from timescaledb_information.jobs where job_id = %s", (job_id, job_id))
    try:
        bad = doctor.problems(doctor.run(db))
        assert [c.name for c in bad] == ["refresh window metrics.server_metrics_1h"]
        assert "100 days" in bad[0].detail and "90 days" in bad[0].detail

        monkeypatch.setenv("DATABASE_URL", migrated_url)
        result = CliRunner().invoke(cli, ["doctor", "--quiet"])
        assert result.exit_code == 1
        assert result.stdout.splitlines() == [f"FAIL {bad[0].name}: {bad[0].detail}"]
        assert "1 problem(s) found" in result.stderr
    finally:
        db.execute("select alter_job(%s, config => %s)", (job_id, Jsonb(config)))
    assert doctor.problems(doctor.run(db)) == []


def test_doctor_fails_when_a_policy_is_missing(db):
    db.execute("select remove_retention_policy('metrics.server_metrics_5m')")
    try:
        bad = doctor.problems(doctor.run(db))
        assert [(c.name, c.detail) for c in bad] == [
            ("retention metrics.server_metrics_5m", "drop_after none, the catalog says 90 days")
        ]
    finally:
        db.execute("select add_retention_policy('metrics.server_metrics_5m', drop_after => interval '90 days')")


def test_doctor_reports_a_job_whose_last_run_failed(db):
    db.execute(
        "create or replace procedure public.doctor_test_failing_job(job_id int, config jsonb)"
        " language plpgsql as $$ begin raise exception 'disk on fire'; end $$"
    )
    job_id = db.execute("select add_job('public.doctor_test_failing_job', '1 hour')").fetchone()[0]
    try:
        # The scheduler (background workers, or the embedded server's job runner) runs it at once.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = db.execute("select last_run_status from timescaledb_information.job_stats where job_id = %s",
                                (job_id,)).fetchone()
            if status and status[0] == "Failed":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the scheduler did not run the job within 60 s")
        bad = doctor.problems(doctor.run(db))
        assert [c.name for c in bad] == [f"job {job_id} public.doctor_test_failing_job -"]
        assert "disk on fire" in bad[0].detail
    finally:
        db.execute("select delete_job(%s)", (job_id,))
        db.execute("drop procedure public.doctor_test_failing_job(int, jsonb)")
