"""The engine a benchmark runs on: ``DATABASE_URL`` if set, else a private embedded server.

Either way the project's migrations are applied first, so a benchmark sees
the same schema, aggregates and policies as production.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rmp.embedded import EmbeddedServer


@dataclass(frozen=True)
class BenchEngine:
    url: str
    # True: a throw-away embedded server nobody else uses (no cleanup needed).
    private: bool
    kind: str


def migrate(url: str) -> None:
    from rmp.migrations import upgrade  # the schema engineer's entry point

    upgrade(url)


@contextlib.contextmanager
def bench_engine(workdir: Path | None = None) -> Iterator[BenchEngine]:
    """A migrated engine for one benchmark; a private one is stopped afterwards."""
    if os.environ.get("DATABASE_URL"):
        url = os.environ["DATABASE_URL"]
        migrate(url)
        yield BenchEngine(url=url, private=False, kind="DATABASE_URL")
        return
    with contextlib.ExitStack() as stack:
        home = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rmp-bench-")))
        server = stack.enter_context(EmbeddedServer(home / "embedded", job_interval=1.0))
        migrate(server.url)
        yield BenchEngine(url=server.url, private=True, kind="embedded (PGlite + TimescaleDB, WebAssembly)")
