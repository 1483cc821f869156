"""Every setting of the platform, in one place, read from the environment.

Engines: ``DATABASE_URL`` points at any TimescaleDB 2.13+ server; without it
``RMP_ENGINE`` picks the engine the platform starts itself: ``embedded`` (the
default, ``embedded/``) or ``native`` (a private PostgreSQL cluster with
TimescaleDB from the installed binaries, ``rmp/native.py``), each with its own
data directory and port below.
``RMP_READ_DATABASE_URL`` (optional) is a read replica that analysts'
reads go to (export, report, forecast and anomaly readers); their writes,
ingest, migrations, jobs and dbt always use the primary. What the platform
knows about its schema (retention tiers, the collection interval, metric
columns) is in ``rmp.catalog``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DIR = ROOT / "embedded"
SQL_DIR = ROOT / "sql"
DBT_DIR = ROOT / "dbt"

ENGINES = ("embedded", "native")


def _engine() -> str:
    value = os.environ.get("RMP_ENGINE", "embedded").strip().lower() or "embedded"
    if value not in ENGINES:
        from rmp.errors import UserError

        raise UserError(f"RMP_ENGINE={value!r}: use one of {', '.join(ENGINES)}")
    return value


def _in_checkout(name: str, env: str, fallback: Path) -> Path:
    """``$env``, else ``name`` in the checkout when this user may write there,
    else ``fallback`` (a tree this user cannot write: an installed package,
    another user's checkout)."""
    if os.environ.get(env):
        return Path(os.environ[env])
    path = ROOT / name
    return path if os.access(path if path.exists() else ROOT, os.W_OK) else fallback


def _home() -> Path:
    return _in_checkout(".rmp", "RMP_HOME", Path.home() / ".rmp")


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default_factory=lambda: os.environ.get("DATABASE_URL") or None)
    # a hot standby of the primary for analysts' reads; None: read from the primary
    read_database_url: str | None = field(
        default_factory=lambda: os.environ.get("RMP_READ_DATABASE_URL") or None)
    # RMP_HOME; default .rmp/ in the checkout, ~/.rmp when this user cannot write there
    home: Path = field(default_factory=_home)
    host: str = field(default_factory=lambda: os.environ.get("RMP_HOST", "127.0.0.1"))
    # The embedded engine authenticates by trust: a non-loopback RMP_HOST is
    # refused unless this says the user accepts that anyone reaching it is any role.
    allow_remote: bool = field(
        default_factory=lambda: os.environ.get("RMP_ALLOW_REMOTE", "").lower() in ("1", "true", "yes")
    )
    # Seconds a client may hold the embedded engine's one session idle inside a
    # transaction before it is disconnected (25P03); 0 disables.
    idle_in_transaction_timeout: float = field(
        default_factory=lambda: float(os.environ.get("RMP_IDLE_IN_TRANSACTION_TIMEOUT", "60"))
    )
    port: int = field(default_factory=lambda: int(os.environ.get("RMP_PORT", "55432")))
    user: str = field(default_factory=lambda: os.environ.get("RMP_USER", "postgres"))
    # The embedded engine's database: PGlite has only template1.
    database: str = field(default_factory=lambda: os.environ.get("RMP_DATABASE", "template1"))
    engine: str = field(default_factory=_engine)
    # The native engine: its own port and database (a real server has many).
    native_port: int = field(default_factory=lambda: int(os.environ.get("RMP_NATIVE_PORT", "55433")))
    native_database: str = field(default_factory=lambda: os.environ.get("RMP_NATIVE_DATABASE", "rmp"))
    # RMP_REPORTS_DIR; default reports/ in the checkout, RMP_HOME/reports when this user cannot write there
    reports_dir: Path = field(default_factory=lambda: _in_checkout("reports", "RMP_REPORTS_DIR", _home() / "reports"))

    # None: ``home/pgdata``.
    data_dir: Path | None = field(
        default_factory=lambda: Path(os.environ["RMP_DATA_DIR"]) if os.environ.get("RMP_DATA_DIR") else None
    )

    @property
    def pgdata(self) -> Path:
        return self.data_dir or self.home / "pgdata"

    @property
    def pid_file(self) -> Path:
        return self.home / "embedded.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "embedded.log"

    @property
    def native_dir(self) -> Path:
        """The native cluster's directory (``pgdata/`` and ``postgres.log`` inside)."""
        return self.home / "native"

    @property
    def embedded_url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def get_settings() -> Settings:
    return Settings()
