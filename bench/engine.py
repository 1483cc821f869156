"""The engine a benchmark runs on: the same kinds as the tests (rmp.testing):
``DATABASE_URL`` if set, else a throw-away engine of its own — the native
server (PostgreSQL + TimescaleDB), the embedded one, or each in turn.

Either way the project's migrations are applied first, so a benchmark sees
the same schema, aggregates and policies as production.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rmp import native
from rmp.errors import UserError
from rmp.testing import NATIVE_SKIPPED, start_engine

CHOICES = ("embedded", "native", "both")
DESCRIPTIONS = {
    "embedded": "embedded (PGlite + TimescaleDB, WebAssembly, one backend)",
    "native": f"native (PostgreSQL {{pg}} + TimescaleDB {native.TIMESCALEDB_VERSION}, multi-process)",
    "server": "DATABASE_URL",
    "docker": "timescale/timescaledb container",
}


@dataclass(frozen=True)
class BenchEngine:
    url: str
    # True: a throw-away engine nobody else uses (no cleanup needed).
    private: bool
    kind: str = "embedded"


def rmp_command() -> str:
    """The `rmp` command of the environment this benchmark runs in (what a user of
    that environment types), not whichever `rmp` comes first on PATH: another
    environment's may run other code, or none."""
    here = Path(sys.executable).parent / "rmp"
    if not here.exists():
        raise UserError(f"no rmp command beside {sys.executable}: install the project there (pip install -e .)")
    return str(here)


def engine_kinds(choice: str | None) -> tuple[list[str], str | None]:
    """The engines ``--engine`` names (default: both where the native engine is
    installed, else embedded; DATABASE_URL's server when set), and a note when
    the native one had to be skipped."""
    if os.environ.get("DATABASE_URL") and choice is None:
        return ["server"], None
    if choice is None:
        return (["native", "embedded"], None) if native.available() else (["embedded"], NATIVE_SKIPPED)
    if choice == "both":
        return ["native", "embedded"], None
    if choice in ("embedded", "native"):
        return [choice], None
    raise UserError(f"--engine {choice!r}: use {', '.join(CHOICES)}")


def describe(kind: str) -> str:
    text = DESCRIPTIONS.get(kind, kind)
    if "{pg}" in text:
        import subprocess

        try:
            # "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
            out = subprocess.run([str(native.find_pg_bin() / "postgres"), "--version"],
                                 capture_output=True, text=True).stdout.split()
            text = text.replace("{pg}", out[2] if len(out) > 2 else "?")
        except (UserError, OSError):
            text = text.replace("{pg}", "?")
    return text


def migrate(url: str) -> None:
    from rmp.migrations import upgrade

    upgrade(url)


@contextlib.contextmanager
def bench_engine(workdir: Path | None = None, kind: str | None = None) -> Iterator[BenchEngine]:
    """A migrated engine of ``kind`` for one benchmark (default: the first of
    ``engine_kinds(None)``); a private one is stopped afterwards."""
    kind = kind or engine_kinds(None)[0][0]
    with contextlib.ExitStack() as stack:
        home = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rmp-bench-")))
        engine = start_engine(kind, home, database="rmp_bench", durable=True)  # fsync on, as in production
        stack.callback(engine.close)
        migrate(engine.url)
        # DATABASE_URL's own database (no CREATEDB) is shared: benchmarks clean up after themselves there
        yield BenchEngine(url=engine.url, private=kind != "server" or engine.admin_url is not None, kind=kind)
