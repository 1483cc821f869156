"""The engine a benchmark runs on: the same choice as the tests (rmp.testing:
``DATABASE_URL`` if set, else a throw-away engine of its own).

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

from rmp.testing import timescale_engine


@dataclass(frozen=True)
class BenchEngine:
    url: str
    # True: a throw-away engine nobody else uses (no cleanup needed).
    private: bool


def migrate(url: str) -> None:
    from rmp.migrations import upgrade

    upgrade(url)


@contextlib.contextmanager
def bench_engine(workdir: Path | None = None) -> Iterator[BenchEngine]:
    """A migrated engine for one benchmark; a private one is stopped afterwards."""
    with contextlib.ExitStack() as stack:
        home = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rmp-bench-")))
        url = stack.enter_context(timescale_engine(home))
        migrate(url)
        yield BenchEngine(url=url, private=not os.environ.get("DATABASE_URL"))
