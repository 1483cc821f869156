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


@pytest.fixture(scope="session")
def migrated_url(engine_url) -> str:
    """The engine with `alembic upgrade head` applied (schema, aggregates, policies)."""
    from rmp import migrations

    migrations.upgrade(engine_url)
    _wait_for_first_job_runs(engine_url)
    return engine_url


def _wait_for_first_job_runs(url: str, timeout: float = 60) -> None:
    """New policies are due at once; let them run now, not in the middle of a test."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            pending = conn.execute(
                "select count(*) from timescaledb_information.jobs j"
                " left join timescaledb_information.job_stats s using (job_id)"
                " where j.scheduled and s.last_run_started_at is null"
            ).fetchone()[0]
            if pending == 0:
                return
            time.sleep(0.5)


# Tables every test starts without rows. metric_types is re-seeded afterwards.
_DATA_SCHEMAS = ("tenancy", "metrics", "analytics")


def empty_data_tables(conn: psycopg.Connection) -> None:
    """TRUNCATE every table (hypertables included) and continuous aggregate of the data schemas."""
    from psycopg import sql

    from rmp.settings import SQL_DIR

    tables = conn.execute(
        """
        select n.nspname, c.relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%s) and c.relkind in ('r', 'p')
        union all
        select view_schema, view_name from timescaledb_information.continuous_aggregates
        where view_schema = any(%s)
        order by 1, 2
        """,
        (list(_DATA_SCHEMAS), list(_DATA_SCHEMAS)),
    ).fetchall()
    if tables:
        names = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)
        conn.execute(sql.SQL("truncate {} restart identity cascade").format(names))
    conn.execute((SQL_DIR / "idempotent" / "metric-types.sql").read_text())


@pytest.fixture
def db(migrated_url):
    """An autocommit connection to the migrated engine; every data table is emptied afterwards."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        yield conn
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        empty_data_tables(conn)
