"""Every setting of the platform, in one place, read from the environment.

Engines: ``DATABASE_URL`` points at any TimescaleDB 2.13+ server; without it
the embedded engine (``embedded/``) is used, with its data directory and port
below. What the platform knows about its schema (retention tiers, the
collection interval, metric columns) is in ``rmp.catalog``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DIR = ROOT / "embedded"
SQL_DIR = ROOT / "sql"
DBT_DIR = ROOT / "dbt"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default_factory=lambda: os.environ.get("DATABASE_URL") or None)
    home: Path = field(default_factory=lambda: Path(os.environ.get("RMP_HOME", ROOT / ".rmp")))
    host: str = field(default_factory=lambda: os.environ.get("RMP_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(os.environ.get("RMP_PORT", "55432")))
    user: str = field(default_factory=lambda: os.environ.get("RMP_USER", "postgres"))
    # PGlite's only database is template1; dbt needs the name to match.
    database: str = field(default_factory=lambda: os.environ.get("RMP_DATABASE", "template1"))
    reports_dir: Path = field(default_factory=lambda: Path(os.environ.get("RMP_REPORTS_DIR", ROOT / "reports")))

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
    def embedded_url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def get_settings() -> Settings:
    return Settings()
