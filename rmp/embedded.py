"""Start, stop and find the embedded TimescaleDB server (``embedded/server.mjs``).

The server runs as a background Node process; its pid and port go to a pid
file so ``rmp db status|stop|url`` find it again from another shell.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rmp.errors import EngineError
from rmp.settings import EMBEDDED_DIR, Settings, get_settings, is_loopback

START_TIMEOUT_S = 90


def _node_modules_current(embedded_dir: Path) -> bool:
    """Every dependency of package.json is installed at its pinned version."""
    try:
        deps = json.loads((embedded_dir / "package.json").read_text())["dependencies"]
        for name, version in deps.items():
            installed = json.loads((embedded_dir / "node_modules" / name / "package.json").read_text())
            if installed.get("version") != version:
                return False
    except (OSError, ValueError, KeyError):
        return False
    return True


def ensure_node_modules(embedded_dir: Path = EMBEDDED_DIR) -> None:
    """Install the pinned npm packages (package-lock.json) the first time.

    A file lock keeps parallel test workers from running `npm ci` together.
    """
    if _node_modules_current(embedded_dir):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise EngineError("npm not found: the embedded engine needs Node.js 20+ with npm")
    with open(embedded_dir / ".npm-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _node_modules_current(embedded_dir):
            return
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=embedded_dir, capture_output=True, text=True
        )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["?"]
        raise EngineError(f"npm ci in {embedded_dir} failed: {tail[0]}")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Status:
    running: bool
    pid: int | None
    port: int | None


def _read_pid_file(pid_file: Path) -> tuple[int, int] | None:
    try:
        pid, port = pid_file.read_text().split()[:2]
        return int(pid), int(port)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own child, or a zombie would look alive
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(settings: Settings | None = None) -> Status:
    s = settings or get_settings()
    found = _read_pid_file(s.pid_file)
    if found and _alive(found[0]):
        return Status(True, found[0], found[1])
    return Status(False, None, None)


def start(settings: Settings | None = None, *, job_interval: float = 2.0,
          checkpoint_interval: float = 60.0) -> Status:
    """Start the server in the background and wait until it accepts connections."""
    s = settings or get_settings()
    current = status(s)
    if current.running:
        return current
    if not is_loopback(s.host) and not s.allow_remote:
        raise EngineError(
            f"RMP_HOST={s.host} is not a loopback address and the embedded engine trusts every login; "
            "use 127.0.0.1, or set RMP_ALLOW_REMOTE=1 to accept that anyone who reaches the port is any role"
        )
    if port_open(s.host, s.port):
        raise EngineError(
            f"port {s.port} on {s.host} is already taken by another program; "
            "set RMP_PORT to a free port or DATABASE_URL to use that server"
        )
    node = shutil.which("node")
    if node is None:
        raise EngineError("node not found: the embedded engine needs Node.js 20+")
    ensure_node_modules()
    s.home.mkdir(parents=True, exist_ok=True)
    s.pid_file.unlink(missing_ok=True)
    log = open(s.log_file, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [
            node, str(EMBEDDED_DIR / "server.mjs"),
            "--data-dir", str(s.pgdata), "--host", s.host, "--port", str(s.port),
            "--pid-file", str(s.pid_file), "--job-interval", str(job_interval),
            "--checkpoint-interval", str(checkpoint_interval),
            "--idle-in-transaction-timeout", str(s.idle_in_transaction_timeout),
            *(["--allow-remote"] if s.allow_remote else []),
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = s.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise EngineError(f"embedded engine exited with code {proc.returncode}: {tail[0]}")
        if s.pid_file.exists() and port_open(s.host, s.port):
            return status(s)
        time.sleep(0.2)
    proc.terminate()
    raise EngineError(f"embedded engine did not accept connections within {START_TIMEOUT_S} s; see {s.log_file}")


def stop(settings: Settings | None = None, timeout: float = 60) -> bool:
    """SIGTERM the server and wait for its clean shutdown. False if none ran."""
    s = settings or get_settings()
    current = status(s)
    if not current.running:
        s.pid_file.unlink(missing_ok=True)
        return False
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(current.pid):
            break
        time.sleep(0.1)
    else:
        raise EngineError(f"embedded engine (pid {current.pid}) did not stop within {timeout} s")
    s.pid_file.unlink(missing_ok=True)
    return True


class EmbeddedServer:
    """A private embedded server for tests and benchmarks: own data dir, own port."""

    def __init__(self, home: Path, port: int | None = None, *, job_interval: float = 1.0,
                 checkpoint_interval: float = 60.0, idle_in_transaction_timeout: float = 60.0):
        self.settings = Settings(database_url=None, home=Path(home), data_dir=None, port=port or free_port(),
                                 idle_in_transaction_timeout=idle_in_transaction_timeout)
        self.job_interval = job_interval
        self.checkpoint_interval = checkpoint_interval

    @property
    def url(self) -> str:
        return self.settings.embedded_url

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Status:
        return start(self.settings, job_interval=self.job_interval,
                     checkpoint_interval=self.checkpoint_interval)

    def stop(self) -> bool:
        return stop(self.settings)
