"""Fixtures: every database test runs on every selected engine (rmp/testing.py).

``RMP_TEST_ENGINE`` = native | embedded | both | docker; default: both where the
native engine (PostgreSQL + TimescaleDB from the installed binaries) is
installed, embedded otherwise, and only ``DATABASE_URL``'s server when it is set.
Tests that use ``engine`` (directly or through ``engine_url``, ``migrated_url``,
``db``, ``raw_conn``) are parametrized by engine: ``test_x[native]``, ``test_x[embedded]``.

Each pytest-xdist worker has its own engines: a private embedded server and a
private native cluster with a database ``rmp_test_<worker>``; workers never
share state. Markers: ``embedded_only`` (about the embedded server itself) and
``native_only`` (needs a multi-session server).
"""

from __future__ import annotations

import contextlib

import psycopg
import pytest

from rmp import testing

SELECTION = testing.selected_engines()
_COUNTED = ("passed", "failed", "error", "skipped")


def pytest_configure(config):
    config.addinivalue_line("markers", "embedded_only: about the embedded server itself; runs on the embedded engine only")
    config.addinivalue_line("markers", "native_only: needs a multi-session server (concurrency); skipped on the embedded engine")


def pytest_report_header(config):
    lines = [f"rmp engines: {', '.join(SELECTION.kinds)} (RMP_TEST_ENGINE=native|embedded|both|docker)"]
    if SELECTION.note:
        lines.append(SELECTION.note)
    return lines


def pytest_generate_tests(metafunc):
    if "engine" not in metafunc.fixturenames:
        return
    embedded_only = metafunc.definition.get_closest_marker("embedded_only") is not None
    native_only = metafunc.definition.get_closest_marker("native_only") is not None
    kinds = [k for k in SELECTION.kinds
             if not (embedded_only and k != "embedded") and not (native_only and k == "embedded")]
    if not kinds:
        wanted = "embedded" if embedded_only else "native"
        reason = f"needs the {wanted} engine; selected: {', '.join(SELECTION.kinds)}"
        if wanted == "native" and SELECTION.note:
            reason = SELECTION.note
        params = [pytest.param(wanted, marks=pytest.mark.skip(reason=reason))]
    else:
        params = kinds
    metafunc.parametrize("engine", params, indirect=True, scope="session", ids=str)


def pytest_collection_modifyitems(config, items):
    """Tag each test with its engine, so the summary can count per engine (xdist too);
    skip engine-marked tests that bring their own server when that engine is not selected."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("engine") if callspec else None
        if kind is None:
            for marker, marked_kind in (("embedded_only", "embedded"), ("native_only", "native")):
                if item.get_closest_marker(marker):
                    kind = marked_kind
                    if marked_kind not in SELECTION.kinds:
                        reason = SELECTION.note if marked_kind == "native" and SELECTION.note else \
                            f"needs the {marked_kind} engine; selected: {', '.join(SELECTION.kinds)}"
                        item.add_marker(pytest.mark.skip(reason=reason))
        item.user_properties.append(("rmp_engine", kind or "none"))


def pytest_terminal_summary(terminalreporter):
    """One line per engine: how many tests passed/failed/skipped and their summed time."""
    per_engine: dict[str, dict[str, float]] = {}
    for outcome in _COUNTED:
        for report in terminalreporter.stats.get(outcome, []):
            props = dict(getattr(report, "user_properties", []) or [])
            if "rmp_engine" not in props:
                continue
            counts = per_engine.setdefault(props["rmp_engine"], dict.fromkeys((*_COUNTED, "seconds"), 0))
            counts[outcome] += 1
    for reports in terminalreporter.stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", []) or [])
            if props.get("rmp_engine") in per_engine:
                per_engine[props["rmp_engine"]]["seconds"] += getattr(report, "duration", 0) or 0
    if not per_engine:
        return
    terminalreporter.section("tests per engine")
    for kind in sorted(per_engine, key=lambda k: (k == "none", k)):
        c = per_engine[kind]
        label = "no database" if kind == "none" else kind
        terminalreporter.write_line(
            f"{label}: {c['passed']:.0f} passed, {c['failed']:.0f} failed, {c['error']:.0f} errors, "
            f"{c['skipped']:.0f} skipped; {c['seconds']:.0f} s of test time")
    if SELECTION.note:
        terminalreporter.write_line(SELECTION.note)


class _Engines:
    """This worker's engines, started on first use and kept for the session
    (pytest may switch between engine parameters several times)."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._engines: dict[str, testing.Engine] = {}
        self._migrated: set[str] = set()

    def get(self, kind: str) -> testing.Engine:
        if kind not in self._engines:
            self._engines[kind] = testing.start_engine(kind, self._tmp.mktemp(f"engine-{kind}"))
        return self._engines[kind]

    def migrated(self, kind: str) -> str:
        url = self.get(kind).url
        if kind not in self._migrated:
            from rmp import migrations

            migrations.upgrade(url)
            _wait_for_first_job_runs(url)
            self._migrated.add(kind)
        return url

    def close(self) -> None:
        for engine in self._engines.values():
            with contextlib.suppress(Exception):
                engine.close()


@pytest.fixture(scope="session")
def engines(tmp_path_factory):
    pool = _Engines(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def engine(request, engines) -> testing.Engine:
    """The engine of this test (parametrized: kind, url, fresh_database())."""
    return engines.get(request.param)


@pytest.fixture(scope="session")
def engine_url(engine) -> str:
    """URL of a bare engine (timescaledb extension present, no project schema)."""
    return engine.url


@pytest.fixture
def raw_conn(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def migrated_url(engine, engines) -> str:
    """The engine with `alembic upgrade head` applied (schema, aggregates, policies)."""
    return engines.migrated(engine.kind)


@pytest.fixture
def native_server():
    """A private, killable native cluster for this test (crash drills, replicas, restores)."""
    if "native" not in SELECTION.kinds and not testing.native.available():
        pytest.skip(SELECTION.note or "native engine not installed")
    with testing.native_cluster() as server:
        yield server


def _wait_for_first_job_runs(url: str, timeout: float = 60) -> None:
    """New policies are due at once; let their first runs start and finish now, not in the middle of a test.
    Only the project's jobs (ids from 1000): TimescaleDB's own telemetry job (id 1)
    never runs with telemetry off, and waiting for it cost every native worker the
    whole timeout."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            pending = conn.execute(
                "select count(*) from timescaledb_information.jobs j"
                " left join timescaledb_information.job_stats s using (job_id)"
                " where j.job_id >= 1000 and j.scheduled"
                " and (s.last_run_started_at is null or s.job_status = 'Running')"
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
