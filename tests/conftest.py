"""Fixtures: every test runs against a real TimescaleDB (see rmp/testing.py).

Each pytest-xdist worker gets its own engine, so workers never share state.
"""

from __future__ import annotations

import psycopg
import pytest

from rmp.testing import timescale_engine


@pytest.fixture(scope="session")
def engine_url(tmp_path_factory) -> str:
    """URL of a bare engine (timescaledb extension present, no project schema)."""
    with timescale_engine(tmp_path_factory.mktemp("engine")) as url:
        yield url


@pytest.fixture
def raw_conn(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as conn:
        yield conn
