"""Engines for tests and benchmarks: real TimescaleDB servers, never a mock.

Kinds of engine:

- ``embedded``: a private embedded server (``rmp/embedded.py``), one per worker;
  its only database is ``template1``.
- ``native``: a private PostgreSQL cluster with TimescaleDB (``rmp/native.py``),
  one per worker, each test database a real database of its own.
- ``server``: ``DATABASE_URL`` — any TimescaleDB server (the Docker image, a
  managed service); a database of its own per worker when the login may create one.
- ``docker``: a ``timescale/timescaledb`` container through testcontainers.

``RMP_TEST_ENGINE`` = ``native`` | ``embedded`` | ``both`` | ``docker`` picks;
default: ``server`` when ``DATABASE_URL`` is set, else ``both`` where the
native engine is installed and ``embedded`` otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from rmp import native
from rmp.embedded import EmbeddedServer
from rmp.errors import UserError

log = logging.getLogger(__name__)

# The TimescaleDB minor version the native engine and docker-compose.yml run.
TIMESCALE_IMAGE = os.environ.get("RMP_TIMESCALE_IMAGE", "timescale/timescaledb:2.23.1-pg17")
KINDS = ("embedded", "native", "server", "docker")
NATIVE_SKIPPED = (f"native engine skipped: TimescaleDB is not installed for PostgreSQL's pg_config; "
                  f"run `bash {native.INSTALLER}` (then RMP_TEST_ENGINE=both)")


@dataclass
class Selection:
    kinds: list[str]
    note: str | None = None  # one line for the user (what was skipped and how to enable it)


def selected_engines() -> Selection:
    """The engines the tests (and ``python -m bench``) run on, from ``RMP_TEST_ENGINE``."""
    wanted = os.environ.get("RMP_TEST_ENGINE", "").strip().lower() or "auto"
    if wanted == "auto":
        if os.environ.get("DATABASE_URL"):
            return Selection(["server"])
        if native.available():
            return Selection(["native", "embedded"])
        return Selection(["embedded"], NATIVE_SKIPPED)
    if wanted == "both":
        if os.environ.get("DATABASE_URL"):
            return Selection(["server", "embedded"])
        return Selection(["native", "embedded"])
    if wanted in ("native", "embedded", "docker"):
        return Selection([wanted])
    raise UserError(f"RMP_TEST_ENGINE={wanted!r}: use native, embedded, both or docker")


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no usable Docker engine
        return False


def worker_id() -> str:
    """``gw0``, ``gw1`` … under pytest-xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database of the same server."""
    import sqlalchemy as sa

    return sa.make_url(url).set(database=dbname).render_as_string(hide_password=False)


def can_create_databases(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return bool(conn.execute(
            "select rolsuper or rolcreatedb from pg_roles where rolname = current_user").fetchone()[0])


def recreate_database(url: str, dbname: str) -> str:
    """Drop (if present) and create ``dbname`` on the server of ``url``, with the
    timescaledb extension; returns its URL. The connection goes to ``url``'s own
    database, so nothing assumes a ``postgres`` or ``template1`` database exists."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    target = with_database(url, dbname)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("create extension if not exists timescaledb")
    return target


def drop_database(url: str, dbname: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


@dataclass
class Engine:
    """A running engine of one kind: ``url`` is this worker's database on it."""

    kind: str
    url: str
    # A server that can hold more databases (native, server with CREATEDB, docker).
    admin_url: str | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @contextlib.contextmanager
    def fresh_database(self, name: str, workdir: Path) -> Iterator[str]:
        """An empty database with the extension: a new database on a server,
        a new private engine on the embedded kind (its only database is template1)."""
        if self.admin_url is None:
            with timescale_engine(workdir, self.kind) as url:
                yield url
            return
        dbname = f"{name}_{worker_id()}"
        url = recreate_database(self.admin_url, dbname)
        try:
            yield url
        finally:
            drop_database(self.admin_url, dbname)

    def close(self) -> None:
        self._stack.close()


def start_engine(kind: str, workdir: Path, database: str | None = None, *, durable: bool = False) -> Engine:
    """Start (or attach to) an engine of ``kind`` with a database for this worker
    (``database``, default ``rmp_test_<worker>``; the embedded engine has only template1).
    ``durable``: a native cluster with fsync on, as production runs (benchmarks);
    tests use fsync off (throwaway data, nothing is lost when only a process dies)."""
    engine = Engine(kind=kind, url="")
    stack = engine._stack
    workdir = Path(workdir)
    dbname = database or f"rmp_test_{worker_id()}"
    try:
        if kind == "embedded":
            server = stack.enter_context(EmbeddedServer(workdir / "embedded", job_interval=1.0))
            engine.url = server.url
        elif kind == "native":
            cluster = stack.enter_context(native_cluster(scratch_dir(f"{worker_id()}-"), fsync=durable))
            engine.admin_url = cluster.url_for("postgres")
            engine.url = cluster.create_database(dbname)
        elif kind == "server":
            url = os.environ.get("DATABASE_URL")
            if not url:
                raise UserError("engine kind 'server' needs DATABASE_URL")
            if can_create_databases(url):
                engine.admin_url = url
                engine.url = recreate_database(url, dbname)
                stack.callback(drop_database, url, dbname)
            else:
                engine.url = url
        elif kind == "docker":
            from testcontainers.postgres import PostgresContainer

            # jit off as docker-compose.yml runs it (rmp/native.py says why)
            pg = stack.enter_context(PostgresContainer(TIMESCALE_IMAGE, driver=None)
                                     .with_command(["postgres", "-c", "jit=off"]))
            engine.admin_url = pg.get_connection_url()
            engine.url = recreate_database(engine.admin_url, dbname)
        else:
            raise UserError(f"unknown engine kind {kind!r}: one of {', '.join(KINDS)}")
    except BaseException:
        stack.close()
        raise
    return engine


@contextlib.contextmanager
def timescale_engine(workdir: Path, kind: str | None = None) -> Iterator[str]:
    """Yields the URL of a TimescaleDB engine that lives as long as the context
    (``kind`` default: the first of ``selected_engines()``)."""
    engine = start_engine(kind or selected_engines().kinds[0], workdir)
    try:
        yield engine.url
    finally:
        engine.close()


def scratch_dir(prefix: str) -> Path:
    """A new directory for a throwaway native cluster, outside pytest's tmp tree.

    As root the cluster belongs to ``postgres``, which must be able to reach it;
    every pytest session makes ``/tmp/pytest-of-root`` private (0700) again, so
    clusters live under ``/tmp/rmp-native-<uid>`` (search-only for others).
    Each directory records the process that made it; clusters left behind by a
    process that is gone (a killed test run) are stopped and removed here.
    """
    base = Path(tempfile.gettempdir()) / f"rmp-native-{os.getuid()}"
    base.mkdir(mode=0o711, exist_ok=True)
    base.chmod(0o711)
    reap_stale_clusters(base)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    return path


def reap_stale_clusters(base: Path) -> list[Path]:
    """Stop and remove the clusters under ``base`` whose owner process has exited."""
    reaped = []
    for path in base.iterdir():
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or being made right now
        try:
            os.kill(owner, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(Exception):
            native.NativeServer(path).destroy()
            reaped.append(path)
    return reaped


@contextlib.contextmanager
def native_cluster(workdir: Path | None = None, port: int | None = None,
                   **options) -> Iterator[native.NativeServer]:
    """A private, killable native cluster (``fsync`` off: throwaway), removed afterwards.

    For reliability drills: ``.kill()`` SIGKILLs the postmaster, ``.start()``
    recovers, ``.stop(mode=...)``, ``.pg_bin`` has pg_basebackup,
    ``.create_database(name)``, ``.url``. ``workdir`` default: a new
    ``scratch_dir()`` (pytest's tmp_path is not reachable by ``postgres`` as root).
    """
    native.require_installed()
    options.setdefault("fsync", False)
    server = native.NativeServer(Path(workdir) if workdir else scratch_dir("cluster-"), port=port, **options)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
