"""A private PostgreSQL 15 + TimescaleDB cluster for the reliability drills.

Each drill that kills, stops, replicates or restores a server gets its OWN
cluster (never the shared per-worker test engine). Uses Debian's
``/usr/lib/postgresql/15`` binaries with the TimescaleDB build installed into
them; when run as root every server-side command runs as the ``postgres`` OS
user (initdb and postgres refuse root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("RMP_PG_BIN", "/usr/lib/postgresql/15/bin"))


def native_available() -> bool:
    """PostgreSQL 15 binaries and the timescaledb extension files are installed."""
    share = PG_BIN.parent.parent.parent.parent / "share" / "postgresql" / "15" / "extension"
    return (PG_BIN / "pg_ctl").is_file() and (share / "timescaledb.control").is_file()


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _own(path: Path) -> None:
    """Directories the server writes must belong to the user it runs as."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, pw.pw_uid, pw.pw_gid)


class Cluster:
    """initdb'd data directory + pg_ctl; ``kill()`` is ``kill -9`` of the postmaster."""

    def __init__(self, root: Path, port: int, *, settings: dict[str, str] | None = None,
                 init: bool = True):
        self.root = Path(root)
        self.port = port
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.settings = settings or {}
        self.pg_bin = PG_BIN
        if init:
            self._initdb()

    # -- life cycle --------------------------------------------------------------
    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        """A PostgreSQL program from pg_bin, run as the server's OS user."""
        return subprocess.run([*_as_postgres(), str(self.pg_bin / args[0]), *args[1:]], check=check,
                              capture_output=True, text=True, **kw)

    def _initdb(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _own(self.root)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        conf = {
            "shared_preload_libraries": "'timescaledb'",
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "port": str(self.port),
            "timescaledb.telemetry_level": "off",
            "max_wal_senders": "4",
            "wal_level": "replica",
            "fsync": "on",
            **self.settings,
        }
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write("\n# reliability drill\n")
            fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
        with open(self.data / "pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 trust\n")

    def start(self, timeout: float = 60) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
                 "-o", f"-p {self.port}", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit), like a power cut of the server."""
        pid = self.pid
        if pid is None:
            raise RuntimeError("cluster is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:      # orphaned backends exit on their own
            if not Path(f"/proc/{pid}").exists() and not _any_process_in(self.data):
                return
            time.sleep(0.1)

    def url(self, database: str = "rmp") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("select 1")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create_database(self, name: str = "rmp") -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute("create extension if not exists timescaledb")
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- replication and backups -------------------------------------------------
    def basebackup(self, target: Path, *extra: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        _own(target.parent)
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 "-D", str(target), "--checkpoint=fast", *extra)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()


def _any_process_in(data: Path) -> bool:
    """True while a postgres process started from this data directory lives."""
    needle = str(data)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ_cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        mine = ("postgres" in cmd and needle in cmd) or environ_cwd == needle
        if mine and (proc / "stat").read_text().split()[2] != "Z":
            return True
    return False
