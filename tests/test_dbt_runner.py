"""transform.dbt_runner and `rmp dbt`: URL -> profile variables, flags, exit codes, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.conninfo import conninfo_to_dict

from rmp import testing
from rmp.db import is_embedded
from rmp.embedded import free_port
from rmp.settings import DBT_DIR
from transform.dbt_runner import DbtUrlError, dbt_args, profile_env


def test_url_and_target_become_the_profile_variables():
    assert profile_env("postgresql://postgres@127.0.0.1:55432/template1", target="embedded") == {
        "RMP_DBT_TARGET": "embedded",
        "RMP_DBT_HOST": "127.0.0.1",
        "RMP_DBT_PORT": "55432",
        "RMP_DBT_USER": "postgres",
        "RMP_DBT_PASSWORD": "",
        "RMP_DBT_DBNAME": "template1",
    }


def test_server_url_keeps_credentials_database_and_sslmode():
    env = profile_env("postgresql://analyst:s%40cret@db.example.com/metrics?sslmode=require", target="server")
    assert env == {
        "RMP_DBT_TARGET": "server",
        "RMP_DBT_HOST": "db.example.com",
        "RMP_DBT_PORT": "5432",
        "RMP_DBT_USER": "analyst",
        "RMP_DBT_PASSWORD": "s@cret",
        "RMP_DBT_DBNAME": "metrics",
        "RMP_DBT_SSLMODE": "require",
    }


def test_target_is_asked_of_the_server_not_guessed_from_the_database_name(engine, engine_url):
    embedded = engine.kind == "embedded"
    assert is_embedded(engine_url) is embedded
    env = profile_env(engine_url)
    assert env["RMP_DBT_TARGET"] == ("embedded" if embedded else "server")
    assert env["RMP_DBT_DBNAME"] == conninfo_to_dict(engine_url)["dbname"]
    if engine.admin_url is not None:
        # a real server has a template1 database too: it is still the server target
        template1 = testing.with_database(engine.admin_url, "template1")
        assert is_embedded(template1) is False
        assert profile_env(template1)["RMP_DBT_TARGET"] == "server"


def test_unreachable_server_gets_the_server_target_and_dbt_reports_the_failure():
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/rmp"
    assert profile_env(down)["RMP_DBT_TARGET"] == "server"


@pytest.mark.parametrize("url", ["postgresql:///metrics", "postgresql://u@%2Frun%2Fpostgresql/metrics"])
def test_url_without_tcp_host_is_a_user_error(url):
    with pytest.raises(DbtUrlError, match="must name a TCP host"):
        profile_env(url)


def test_project_flags_added_once_and_only_where_dbt_takes_them():
    assert dbt_args(["build", "--select", "marts"]) == [
        "build", "--select", "marts", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
    ]
    assert dbt_args(["docs", "generate", "--project-dir=/elsewhere"]) == [
        "docs", "generate", "--project-dir=/elsewhere", "--profiles-dir", str(DBT_DIR),
    ]
    assert dbt_args(["--version"]) == ["--version"]


def rmp_dbt(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmp_app", "dbt", *args],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )


def test_cli_help_is_rmps_own():
    out = rmp_dbt("--help", env={})
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # click wraps the help
    assert "Run dbt on the project's dbt/ against the platform's database" in text
    assert "the exit code is dbt's" in text


def test_cli_without_engine_is_one_line_error(tmp_path):
    env = {"RMP_HOME": str(tmp_path), "DATABASE_URL": ""}
    out = rmp_dbt("build", env=env)
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == [
        "rmp: error: no database: set DATABASE_URL or start the embedded engine with `rmp db start`"
    ]


def test_cli_connects_to_the_urls_database_and_passes_exit_codes(db, migrated_url, tmp_path):
    env = {"DATABASE_URL": migrated_url, "DBT_TARGET_PATH": str(tmp_path / "target"),
           "DBT_LOG_PATH": str(tmp_path / "logs")}
    debug = rmp_dbt("debug", env=env)
    assert debug.returncode == 0, debug.stdout[-2000:]
    assert f"database: {conninfo_to_dict(migrated_url)['dbname']}" in debug.stdout

    # one sample two days old: the freshness check errors and dbt exits 1
    db.execute("insert into tenancy.organizations (name, slug) values ('o', 'o')")
    db.execute("insert into tenancy.servers (organization_id, name) select id, 's' from tenancy.organizations")
    db.execute(
        "insert into metrics.server_metrics (server_id, collected_at, cpu_percent) "
        "select id, %s, 1 from tenancy.servers",
        (datetime.now(UTC) - timedelta(days=2),),
    )
    fresh = rmp_dbt("source", "freshness", "--select", "source:metrics.server_metrics", env=env)
    assert fresh.returncode == 1, fresh.stdout[-2000:]
    assert "ERROR STALE freshness of metrics.server_metrics" in fresh.stdout

    unknown = rmp_dbt("no-such-command", env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == ["rmp: dbt could not run: No such command 'no-such-command'."]
