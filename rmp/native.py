"""The native engine: a private PostgreSQL cluster with TimescaleDB from the installed binaries.

A real, multi-process server (background workers, many sessions, real locks)
run with PostgreSQL's own tools: ``initdb`` once, then ``pg_ctl start|stop``.
It listens on 127.0.0.1 only (no Unix socket), keeps its data in its own
directory and loads ``timescaledb`` through ``shared_preload_libraries``.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to
the ``postgres`` OS user and every server binary runs through ``runuser``.

Why not pytest-postgresql or testing.postgresql: both run ``initdb``/``postgres``
as the calling user (refused as root), testing.postgresql stops the server when
the Python process exits and pytest-postgresql's executor is a pytest plugin
that removes its data directory when collected and forces ``fsync`` off;
``rmp db start`` needs a cluster that outlives the command and keeps its data.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from rmp.embedded import free_port, port_open
from rmp.errors import EngineError

INSTALLER = "scripts/install-native-timescaledb.sh"
TIMESCALEDB_VERSION = "2.23.1"
SERVER_USER = "postgres"  # the OS user that owns the cluster when we run as root
SUPERUSER = "postgres"  # the database superuser initdb creates
START_TIMEOUT_S = 60

# Each database with the extension holds one scheduler worker while it has
# jobs, plus one worker per running job; sized for a handful of databases
# (one per test worker, the demo, a restore drill) with jobs running at once.
MAX_BACKGROUND_WORKERS = 24
CONF = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "shared_preload_libraries": "'timescaledb'",
    "timescaledb.max_background_workers": str(MAX_BACKGROUND_WORKERS),
    # background workers + parallel query workers + logical replication launcher
    "max_worker_processes": str(MAX_BACKGROUND_WORKERS + 8 + 2),
    "max_connections": "200",
    "timescaledb.telemetry_level": "off",
    "wal_level": "replica",  # pg_basebackup and streaming replicas work
    "max_wal_senders": "5",
    "logging_collector": "off",
    "log_line_prefix": "'%m [%p] %d '",
    "timezone": "'UTC'",
    # The marts' views (CTEs over the organization tree) are planned at costs
    # of 10^11+ from estimates, far above jit_*_above_cost, so every dashboard
    # or quota query paid ~8 s of LLVM compilation for ~0.1 s of execution
    # (bench marts, EXPLAIN ANALYZE: JIT 7,992 ms of 8,121 ms).
    "jit": "off",
}


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def find_pg_bin() -> Path:
    """PostgreSQL's bin dir: ``RMP_PG_BINDIR``, else ``pg_config --bindir``, else Debian's 15."""
    candidates = [Path(os.environ["RMP_PG_BINDIR"])] if os.environ.get("RMP_PG_BINDIR") else []
    found = _pg_config_bindir()
    if found:
        candidates.append(found)
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    for path in candidates:
        if (path / "pg_ctl").is_file() and (path / "initdb").is_file():
            return path
    raise EngineError(f"PostgreSQL server binaries not found (pg_config, RMP_PG_BINDIR); install them with {INSTALLER}")


def _pg_config(bindir: Path, flag: str) -> str:
    pg_config = bindir / "pg_config"
    exe = str(pg_config) if pg_config.is_file() else (shutil.which("pg_config") or "pg_config")
    return subprocess.run([exe, flag], capture_output=True, text=True, check=True).stdout.strip()


def installed_version(bindir: Path | None = None) -> str | None:
    """The TimescaleDB version installed for these PostgreSQL binaries, or None."""
    try:
        bindir = bindir or find_pg_bin()
        control = Path(_pg_config(bindir, "--sharedir")) / "extension" / "timescaledb.control"
        libdir = Path(_pg_config(bindir, "--pkglibdir"))
    except (EngineError, OSError, subprocess.CalledProcessError):
        return None
    if not control.is_file():
        return None
    for line in control.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "default_version":
            version = value.strip().strip("'")
            return version if (libdir / f"timescaledb-{version}.so").is_file() else None
    return None


def available() -> bool:
    """True when PostgreSQL's server binaries and the TimescaleDB extension are installed."""
    return installed_version() is not None


def require_installed(bindir: Path | None = None) -> Path:
    bindir = bindir or find_pg_bin()
    if installed_version(bindir) is None:
        raise EngineError(f"TimescaleDB is not installed for {bindir}: run `bash {INSTALLER}`")
    return bindir


def _as_root() -> bool:
    return os.geteuid() == 0


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as: ``postgres`` when we are root, else ourselves (None)."""
    if not _as_root():
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise EngineError(f"running as root needs the OS user {SERVER_USER!r} to own the cluster (PostgreSQL refuses root)") from None


def _give_to_server_user(path: Path) -> None:
    """As root: the cluster directory belongs to ``postgres``, and every directory
    above it lets that user pass (search bit only, nothing listed)."""
    user = _server_user()
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


@dataclass
class Status:
    running: bool
    pid: int | None
    port: int | None


class NativeServer:
    """A private TimescaleDB cluster under ``workdir``: ``workdir/pgdata``, ``workdir/postgres.log``.

    ``start()`` runs ``initdb`` the first time, then ``pg_ctl start`` and makes
    ``database`` with the extension. Usable as a context manager (stopped on exit).
    ``fsync=False`` is for throwaway test clusters: a killed postmaster loses
    nothing committed (the OS still has the pages), only a machine crash would.
    """

    def __init__(self, workdir: Path, port: int | None = None, *, database: str = "rmp",
                 host: str = "127.0.0.1", fsync: bool = True, extra_conf: dict[str, str] | None = None):
        self.workdir = Path(workdir).absolute()
        self.host = host
        self.database = database
        self.fsync = fsync
        self.extra_conf = extra_conf or {}
        self._port = port

    # -- where things are --------------------------------------------------
    @property
    def pg_bin(self) -> Path:
        return find_pg_bin()

    @property
    def pgdata(self) -> Path:
        return self.workdir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def port(self) -> int:
        """The running server's port, else the one asked for, else the configured one, else a free one."""
        running = self.status().port
        if running:
            return running
        if self._port is None:
            self._port = self._configured_port() or free_port(self.host)
        return self._port

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    # -- running the server's tools ----------------------------------------
    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.pg_bin / tool), *args]
        if _server_user() is not None:
            cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, cwd="/")

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def init(self) -> None:
        """``initdb`` (UTF-8, trust on 127.0.0.1) and the platform's settings in postgresql.conf."""
        require_installed(self.pg_bin)
        self.workdir.mkdir(parents=True, exist_ok=True)
        _give_to_server_user(self.workdir)
        result = self._run("initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
                           "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
            raise EngineError(f"initdb {self.pgdata} failed: {tail[0]}")
        conf = {**CONF, "port": str(self.port), "fsync": "on" if self.fsync else "off",
                "synchronous_commit": "on" if self.fsync else "off", **self.extra_conf}
        lines = "".join(f"{key} = {value}\n" for key, value in conf.items())
        with open(self.pgdata / "postgresql.conf", "a") as f:
            f.write(f"\n# written by rmp.native\n{lines}")
        # replication connections from 127.0.0.1 (pg_basebackup, replicas)
        with open(self.pgdata / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")

    def _configured_port(self) -> int | None:
        try:
            text = (self.pgdata / "postgresql.conf").read_text()
        except OSError:
            return None
        port = None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port":
                port = int(value.split("#")[0].strip())
        return port

    # -- lifecycle ---------------------------------------------------------
    def status(self) -> Status:
        """Running or not, from ``postmaster.pid`` (pid on line 1, port on line 4)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return Status(False, None, None)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return Status(False, None, None)
        except PermissionError:
            pass
        return Status(True, pid, port)

    def start(self) -> Status:
        """Start (``initdb`` first if needed), wait until it accepts connections, create ``database``."""
        current = self.status()
        if current.running:
            self.create_database(self.database)
            return current
        require_installed(self.pg_bin)
        if not self.initialized():
            self.init()
        _give_to_server_user(self.workdir)  # parents may have been made private since init
        if port_open(self.host, self.port):
            raise EngineError(f"port {self.port} on {self.host} is already taken; set RMP_NATIVE_PORT to a free port")
        self.log_file.touch()
        _give_to_server_user(self.log_file)
        result = self._run("pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file),
                           "-w", "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}",
                           timeout=START_TIMEOUT_S + 10)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace").strip().splitlines()
            fatal = [line for line in log if "FATAL" in line or "ERROR" in line][-1:] or log[-1:] or ["no output"]
            raise EngineError(f"native TimescaleDB did not start: {fatal[0]} (log: {self.log_file})")
        self.create_database(self.database)
        return self.status()

    def stop(self, mode: str = "fast", timeout: float = 60) -> bool:
        """``pg_ctl stop -m smart|fast|immediate``. False if it was not running."""
        if not self.status().running:
            return False
        result = self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", mode, "-w", "-t", str(int(timeout)),
                           timeout=timeout + 10)
        if result.returncode != 0 and self.status().running:
            raise EngineError(f"pg_ctl stop failed: {(result.stderr or result.stdout).strip()}")
        return True

    def kill(self, timeout: float = 30) -> int | None:
        """SIGKILL the postmaster (a crash, for drills) and wait until its backends are gone.

        The data directory keeps its stale ``postmaster.pid``; the next ``start()``
        runs crash recovery. Returns the pid killed, or None if none ran.
        """
        current = self.status()
        if not current.running:
            return None
        os.kill(current.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        # children notice the postmaster's death and exit; the port frees with them
        while time.monotonic() < deadline:
            if not self.status().running and not port_open(self.host, current.port) and not self._children_alive():
                return current.pid
            time.sleep(0.1)
        raise EngineError(f"backends of the killed postmaster {current.pid} still run after {timeout} s")

    def _children_alive(self) -> bool:
        """Any process still attached to this data directory (orphaned backends)."""
        data = str(self.pgdata)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.readlink(proc / "cwd") == data:
                    return True
            except OSError:
                continue
        return False

    def __enter__(self) -> NativeServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------
    def create_database(self, name: str, *, extension: bool = True) -> str:
        """Create ``name`` (if missing) with the timescaledb extension; returns its URL."""
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        if extension:
            with psycopg.connect(self.url_for(name), autocommit=True) as conn:
                conn.execute("create extension if not exists timescaledb")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def destroy(self) -> None:
        """Stop (immediately) and remove the cluster's directory."""
        if self.status().running:
            self.stop(mode="immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)
