"""The one place that hands out database connections.

``database_url()`` resolves the engine: ``DATABASE_URL`` when set, otherwise
the engine ``RMP_ENGINE`` names — the embedded server or the native cluster
(started on demand by ``rmp db start`` or ``ensure_engine``).
``read_database_url()`` is where analysts' reads go: ``RMP_READ_DATABASE_URL``
(a hot standby) when set, otherwise the same primary. Everything that writes
uses ``database_url()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

import psycopg

from rmp import embedded
from rmp.errors import EngineError
from rmp.settings import Settings, get_settings

if TYPE_CHECKING:      # imported when an engine is asked for: half a second every rmp command would pay
    import sqlalchemy as sa


def native_server(settings: Settings | None = None):
    """The native engine's cluster as the settings place it (``RMP_HOME/native``, ``RMP_NATIVE_PORT``)."""
    from rmp.native import NativeServer

    s = settings or get_settings()
    return NativeServer(s.native_dir, port=s.native_port, database=s.native_database, host=s.host)


def database_url(settings: Settings | None = None) -> str:
    s = settings or get_settings()
    if s.database_url:
        return s.database_url
    if s.engine == "native":
        server = native_server(s)
        if not server.status().running:
            raise EngineError("no database: set DATABASE_URL or start the native engine with `rmp db start --engine native`")
        return server.url
    st = embedded.status(s)
    if not st.running:
        raise EngineError("no database: set DATABASE_URL or start the embedded engine with `rmp db start`")
    return Settings(database_url=None, home=s.home, port=st.port, user=s.user, database=s.database).embedded_url


def read_database_url(settings: Settings | None = None) -> str:
    """URL for read-only analyst queries: the replica when configured, else the primary."""
    s = settings or get_settings()
    return s.read_database_url or database_url(s)


def caught_up_read_url(url: str | None = None, read_url: str | None = None, *,
                       timeout: float = 60.0) -> str:
    """The read URL once the replica has replayed everything the primary has
    written so far, so a reader sees the caller's own writes (forecasts stored
    just before the report reads them). Same URL as the primary: nothing to wait for."""
    primary = url or database_url()
    reader = read_url or read_database_url()
    if reader == primary:
        return reader
    with connect(primary, autocommit=True) as conn:
        lsn = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with connect(reader, autocommit=True) as conn:
        while True:
            behind = conn.execute(
                "select pg_is_in_recovery() and coalesce(pg_last_wal_replay_lsn() < %s::pg_lsn, true)",
                (lsn,)).fetchone()[0]
            if not behind:
                return reader
            if time.monotonic() > deadline:
                raise EngineError(f"read replica {redact(reader)} has not replayed {lsn} within {timeout:g} s")
            time.sleep(0.05)


def ensure_engine(settings: Settings | None = None) -> str:
    """The database URL, starting the embedded engine when nothing else is configured."""
    s = settings or get_settings()
    if s.database_url:
        return s.database_url
    if s.engine == "native":
        native_server(s).start()
        return database_url(s)
    if not embedded.status(s).running:
        embedded.start(s)
    return database_url(s)


def connect(url: str | None = None, *, autocommit: bool = False, **kwargs) -> psycopg.Connection:
    target = url or database_url()
    try:
        return psycopg.connect(target, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"cannot connect to {redact(target)}: {first}") from exc


@contextmanager
def transaction(url: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection inside one transaction, committed on success."""
    with connect(url) as conn, conn.transaction():
        yield conn


def is_embedded(target: str | psycopg.Connection) -> bool:
    """True when the server is the embedded engine: PGlite, PostgreSQL built for
    WebAssembly (its ``version()`` names emscripten/wasm), one backend for every
    client. Asked of the server, never guessed from the URL: a real server has
    a ``template1`` database too."""
    if isinstance(target, psycopg.Connection):
        version = target.execute("select version()").fetchone()[0]
    else:
        with connect(target, autocommit=True) as conn:
            version = conn.execute("select version()").fetchone()[0]
    return any(mark in version.lower() for mark in ("emscripten", "wasm"))


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    import sqlalchemy as sa

    return sa.create_engine(sqlalchemy_url(url), pool_pre_ping=True)


def engine(url: str | None = None) -> sa.Engine:
    """A SQLAlchemy engine (psycopg 3 driver) for pandas and alembic."""
    return _engine(url or database_url())


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return "<database>"
