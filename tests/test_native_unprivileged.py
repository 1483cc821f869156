"""The native engine run by an unprivileged OS user: the path every non-root user takes.

As root (CI containers) rmp.native hands the cluster to the ``postgres`` OS user
and runs initdb/pg_ctl through ``runuser``; the other path — the caller owns the
cluster and runs the tools itself — is what a developer's login takes. This test
takes it through a real unprivileged user: a forked child drops to that user
(setgid/setuid) and runs ``rmp db start --engine native`` / ``status`` / ``stop``
(the click commands, in-process: the interpreter may live where that user cannot
read, e.g. under /root) with ``RMP_HOME`` in the user's home. The parent checks
the server's real state: the postmaster runs as that user, the data directory is
the user's, a query answers with TimescaleDB loaded.

Not root: every native test of the suite already runs the cluster as the calling
(unprivileged) user, so this one is skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from rmp import native
from rmp.embedded import free_port
from rmp_app.commands import db as db_commands

pytestmark = pytest.mark.native_only

USER = "rmp-unprivileged"


def _unprivileged_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("not root: every native test already runs the cluster as the calling, unprivileged user")
    if not native.available():
        pytest.skip(f"native engine not installed: run `bash {native.INSTALLER}`")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip(f"no OS user {USER!r} and no useradd to create it")
    subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", USER],
                   check=True, capture_output=True)
    return pwd.getpwnam(USER)


def _as_user(user: pwd.struct_passwd, env: dict[str, str], *argv: str) -> tuple[int, str]:
    """Run ``rmp db <argv>`` as ``user`` in a forked child; its exit code and output."""
    with tempfile.TemporaryFile("w+") as out:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 70
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
                sys.stdout = sys.stderr = os.fdopen(1, "w", buffering=1)  # not pytest's capture
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
                os.chdir(user.pw_dir)
                os.environ.update({"HOME": user.pw_dir, "USER": user.pw_name, **env})
                try:
                    db_commands.db.main(args=list(argv), prog_name="rmp db", standalone_mode=False)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # noqa: BLE001 - report anything, exit the child
                print(f"{type(exc).__name__}: {exc}", flush=True)
                code = 71
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        return os.waitstatus_to_exitcode(status), out.read()


def _alive(pid: int, wait: float = 10.0) -> bool:
    """The process runs (not gone, not a zombie waiting for its parent), after up to ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


def test_unprivileged_user_runs_the_native_engine_as_itself():
    user = _unprivileged_user()
    home = Path(user.pw_dir) / f"rmp-home-{os.getpid()}"
    env = {"RMP_HOME": str(home), "RMP_NATIVE_PORT": str(free_port()), "RMP_ENGINE": "native"}
    server = native.NativeServer(home / "native", port=int(env["RMP_NATIVE_PORT"]))
    try:
        code, out = _as_user(user, env, "start", "--engine", "native")
        assert code == 0, out
        st = server.status()
        assert st.running and st.port == int(env["RMP_NATIVE_PORT"]), out
        assert f"started (pid {st.pid})" in out

        # the postmaster and every backend run as the unprivileged user; the data is its own
        assert os.stat(f"/proc/{st.pid}").st_uid == user.pw_uid
        pgdata = os.stat(server.pgdata)
        assert (pgdata.st_uid, pgdata.st_mode & 0o777) == (user.pw_uid, 0o700)
        assert os.stat(server.pgdata / "PG_VERSION").st_uid == user.pw_uid

        with psycopg.connect(server.url, autocommit=True) as conn:
            backend_pid, data_dir = conn.execute(
                "select pg_backend_pid(), current_setting('data_directory')").fetchone()
            assert os.stat(f"/proc/{backend_pid}").st_uid == user.pw_uid
            assert data_dir == str(server.pgdata)
            assert conn.execute("select extversion from pg_extension where extname = 'timescaledb'"
                                ).fetchone() == (native.TIMESCALEDB_VERSION,)
            conn.execute("create table t (at timestamptz not null, v int)")
            conn.execute("select create_hypertable('t', by_range('at'))")
            conn.execute("insert into t select now() - i * interval '1 hour', i from generate_series(1, 48) i")
            assert conn.execute("select count(*), sum(v) from t").fetchone() == (48, 1176)

        code, out = _as_user(user, env, "status", "--engine", "native")
        assert (code, out.strip()) == (0, f"native running (pid {st.pid}) on port {st.port}")

        code, out = _as_user(user, env, "stop", "--engine", "native")
        assert (code, out.strip()) == (0, "stopped")
        assert not server.status().running
        assert not _alive(st.pid), "the postmaster still runs after `rmp db stop`"

        code, out = _as_user(user, env, "status", "--engine", "native")
        assert (code, out.strip()) == (1, "native not running")
    finally:
        st = server.status()
        if st.running:  # a failed assertion above: do not leave the user's server behind
            os.kill(st.pid, signal.SIGQUIT)
        shutil.rmtree(home, ignore_errors=True)
