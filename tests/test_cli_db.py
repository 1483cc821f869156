"""`rmp db start|status|url|stop` as a user runs them, on both engines, and psql against the result."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from rmp import native
from rmp.embedded import free_port
from rmp.testing import scratch_dir


def rmp(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["rmp", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def env(tmp_path):
    # RMP_HOME outside pytest's private tmp tree: as root the native cluster belongs to postgres
    home = scratch_dir("cli-") / "home"
    e = {**os.environ, "RMP_HOME": str(home), "RMP_PORT": str(free_port()),
         "RMP_NATIVE_PORT": str(free_port())}
    e.pop("DATABASE_URL", None)
    e.pop("RMP_ENGINE", None)
    yield e
    rmp("db", "stop", env=e)
    rmp("db", "stop", "--engine", "native", env=e)
    shutil.rmtree(home.parent, ignore_errors=True)


@pytest.mark.embedded_only
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
    assert status.returncode == 1 and status.stdout.strip() == "embedded not running"
    assert rmp("db", "stop", env=env).stdout.strip() == "not running"


def psql(url: str, query: str) -> str:
    return subprocess.run(["psql", url, "-Atc", query], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.native_only
@pytest.mark.skipif(shutil.which("psql") is None, reason="psql client not installed")
def test_native_db_start_status_url_stop(env):
    started = rmp("db", "start", "--engine", "native", env=env)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("native TimescaleDB started")
    assert f"data in {env['RMP_HOME']}/native/pgdata" in started.stdout
    url = rmp("db", "url", "--engine", "native", env=env).stdout.strip()
    assert url == f"postgresql://postgres@127.0.0.1:{env['RMP_NATIVE_PORT']}/rmp"
    # RMP_ENGINE selects it for every command
    assert rmp("db", "url", env={**env, "RMP_ENGINE": "native"}).stdout.strip() == url
    assert psql(url, "select extversion from pg_extension where extname = 'timescaledb'") == native.TIMESCALEDB_VERSION
    assert psql(url, "show shared_preload_libraries") == "timescaledb"
    assert psql(url, "show listen_addresses") == "127.0.0.1"
    assert int(psql(url, "show timescaledb.max_background_workers")) >= 8
    # a real server: many sessions and databases, the jobs scheduler running
    assert psql(url, "select count(*) from pg_stat_activity where backend_type like 'TimescaleDB%'") != "0"
    status = rmp("db", "status", "--engine", "native", env=env)
    assert status.returncode == 0 and status.stdout.startswith("native running (pid ")
    assert rmp("db", "start", "--engine", "native", env=env).stdout.startswith("native TimescaleDB already running")
    assert rmp("db", "stop", "--engine", "native", env=env).stdout.strip() == "stopped"
    stopped = rmp("db", "status", "--engine", "native", env=env)
    assert stopped.returncode == 1 and stopped.stdout.strip() == "native not running"
    # committed data survives a stop and start
    assert rmp("db", "start", "--engine", "native", env=env).returncode == 0
    assert psql(url, "select extversion from pg_extension where extname = 'timescaledb'") == native.TIMESCALEDB_VERSION


def test_native_engine_refuses_without_the_extension(env, tmp_path):
    """PostgreSQL without TimescaleDB: one line naming the installer."""
    try:
        real = native.find_pg_bin()
    except native.EngineError:
        pytest.skip("PostgreSQL server binaries not installed")
    fake = tmp_path / "pgbin"
    (fake / "share" / "extension").mkdir(parents=True)
    (fake / "lib").mkdir()
    for tool in ("initdb", "pg_ctl", "postgres"):
        (fake / tool).symlink_to(real / tool)
    (fake / "pg_config").write_text(
        "#!/bin/sh\n"
        f'case "$1" in --sharedir) echo {fake}/share;; --pkglibdir) echo {fake}/lib;; --bindir) echo {fake};; esac\n')
    (fake / "pg_config").chmod(0o755)
    out = rmp("db", "start", "--engine", "native", env={**env, "RMP_PG_BINDIR": str(fake)})
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == [
        f"rmp: error: TimescaleDB is not installed for {fake}: run `bash scripts/install-native-timescaledb.sh`"
    ]


def test_db_rejects_an_unknown_engine(env):
    out = rmp("db", "url", env={**env, "RMP_ENGINE": "sqlite"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["rmp: error: RMP_ENGINE='sqlite': use one of embedded, native"]


@pytest.mark.embedded_only
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


@pytest.mark.embedded_only
def test_db_url_without_engine_is_one_line_error(env):
    out = rmp("db", "url", env=env)
    assert out.returncode == 3
    assert out.stderr.strip() == (
        "rmp: error: no database: set DATABASE_URL or start the embedded engine with `rmp db start`"
    )
    assert "Traceback" not in out.stderr
