"""Clusters made from another native cluster: a streaming hot standby
(``pg_basebackup -R``) and a base backup to restore with a WAL archive.

For the reliability drills (tests/test_drill_replica.py, test_drill_backup.py)
and the replica-lag benchmark (bench/replica_lag.py), what docs/scaling.md and
docs/backups.md tell an operator to do. Built on rmp.native.NativeServer;
its ``start()`` creates a database, which a standby refuses, so these are
started with ``pg_ctl`` directly and handed back as NativeServer objects
(status, stop, kill, destroy, url all work on them).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from rmp.embedded import free_port
from rmp.native import NativeServer
from rmp.testing import scratch_dir


def run_tool(server: NativeServer, tool: str, *args: str, timeout: float = 300) -> str:
    """A PostgreSQL program from the server's bin dir, as the user the server runs as."""
    cmd = [str(server.pg_bin / tool), *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def pg_ctl_start(server: NativeServer, conf: dict[str, str] | None = None) -> None:
    """Start a data directory that already exists (a standby, a restore) on its own port."""
    with open(server.pgdata / "postgresql.auto.conf", "a") as fh:
        fh.writelines(f"{k} = {v}\n" for k, v in {"port": str(server.port), **(conf or {})}.items())
    server.log_file.touch()
    give_to_postgres(server.log_file)
    run_tool(server, "pg_ctl", "start", "-D", str(server.pgdata), "-l", str(server.log_file), "-w",
             "-t", "120", timeout=130)


def basebackup(primary: NativeServer, target: Path, *extra: str) -> None:
    """``pg_basebackup`` of the whole cluster into ``target`` (streamed WAL, fast checkpoint)."""
    give_to_postgres(target.parent)
    run_tool(primary, "pg_basebackup", "-h", primary.host, "-p", str(primary.port), "-U", "postgres",
             "-D", str(target), "--checkpoint=fast", "--wal-method=stream", *extra)


def start_standby(primary: NativeServer, **conf: str) -> NativeServer:
    """A hot standby streaming from ``primary``: ``pg_basebackup -R`` then start."""
    standby = NativeServer(scratch_dir("standby-"), free_port(), database=primary.database)
    give_to_postgres(standby.workdir)
    basebackup(primary, standby.pgdata, "-R")
    pg_ctl_start(standby, {"hot_standby": "on", **conf})
    return standby


def replay_lag(primary_conn) -> dict | None:
    """How far the standby is behind, as the primary sees it (``pg_stat_replication``):
    bytes of WAL written on the primary and not yet replayed on the standby (and not
    yet flushed there), and PostgreSQL's own replay/flush/write lag in seconds (the
    time a recent commit took to be replayed; null while the standby is idle and
    caught up). None when no standby is connected."""
    row = primary_conn.execute(
        "select pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn),"
        " extract(epoch from replay_lag), extract(epoch from flush_lag), extract(epoch from write_lag), state"
        " from pg_stat_replication order by pid limit 1").fetchone()
    if row is None:
        return None
    behind, unflushed, replay, flush, write, state = row
    return {"bytes_behind": int(behind), "bytes_not_flushed": int(unflushed),
            "replay_lag_s": None if replay is None else float(replay),
            "flush_lag_s": None if flush is None else float(flush),
            "write_lag_s": None if write is None else float(write), "state": state}
