"""Engine selection for tests and benchmarks: a real TimescaleDB, never a mock.

Order: ``DATABASE_URL`` if set; else a ``timescale/timescaledb`` container via
testcontainers when a Docker engine answers; else a private embedded server.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from rmp.embedded import EmbeddedServer

log = logging.getLogger(__name__)

TIMESCALE_IMAGE = os.environ.get("RMP_TIMESCALE_IMAGE", "timescale/timescaledb:latest-pg17")


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no usable Docker engine
        return False


@contextlib.contextmanager
def timescale_engine(workdir: Path) -> Iterator[str]:
    """Yields the URL of a TimescaleDB engine that lives as long as the context."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    if os.environ.get("RMP_TEST_ENGINE", "auto") in ("auto", "docker") and docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(TIMESCALE_IMAGE, driver=None) as pg:
            yield pg.get_connection_url()
        return
    with EmbeddedServer(workdir / "embedded", job_interval=1.0) as server:
        yield server.url
