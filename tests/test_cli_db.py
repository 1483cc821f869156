"""`rmp db start|status|url|stop` as a user runs them, and psql against the result."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from rmp.embedded import free_port


def rmp(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["rmp", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def env(tmp_path):
    e = {**os.environ, "RMP_HOME": str(tmp_path / "home"), "RMP_PORT": str(free_port())}
    e.pop("DATABASE_URL", None)
    yield e
    rmp("db", "stop", env=e)


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql client not installed")
def test_db_start_then_psql_sees_timescaledb(env):
    started = rmp("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert rmp("db", "status", env=env).returncode == 0
    url = rmp("db", "url", env=env).stdout.strip()
    assert url == f"postgresql://postgres@127.0.0.1:{env['RMP_PORT']}/template1"
    out = subprocess.run(
        ["psql", url, "-Atc", "select extversion from pg_extension where extname = $$timescaledb$$"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().startswith("2.")
    again = rmp("db", "start", env=env)
    assert again.returncode == 0 and "already running" in again.stdout
    stopped = rmp("db", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    status = rmp("db", "status", env=env)
    assert status.returncode == 1 and status.stdout.strip() == "not running"
    assert rmp("db", "stop", env=env).stdout.strip() == "not running"


def test_db_start_refuses_a_taken_port(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(env["RMP_PORT"])))
        s.listen()
        out = rmp("db", "start", env=env)
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == [
        f"rmp: error: port {env['RMP_PORT']} on 127.0.0.1 is already taken by another program; "
        "set RMP_PORT to a free port or DATABASE_URL to use that server"
    ]


def test_db_url_without_engine_is_one_line_error(env):
    out = rmp("db", "url", env=env)
    assert out.returncode == 3
    assert out.stderr.strip() == (
        "rmp: error: no database: set DATABASE_URL or start the embedded engine with `rmp db start`"
    )
    assert "Traceback" not in out.stderr
