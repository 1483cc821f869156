"""Schema migrations: alembic revisions that apply the plain SQL in ``sql/``.

``sql/preinstall/NNN-*.sql`` create tables once (each revision names the
files it applies); ``sql/idempotent/*.sql`` (views, functions, catalog rows)
are ``create or replace`` and re-applied after every upgrade, so changing a
view is editing one file. The tiers of metrics.server_metrics are rendered
from one template (``sql/templates/server-metrics-aggregate.sql``) per tier
of ``rmp.catalog.TIERS``; the catalog is published as the view
``metrics.aggregate_tiers`` and policies are (re)set from it by
``metrics.configure_policies`` at the end of every upgrade to head.

Python API used by tests, ``rmp demo`` and ``rmp migrate``::

    upgrade(url)                # to head
    downgrade(url, "base")
    current(url)                # '0002_aggregates' or None
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql

# alembic logs its plugin set-up at INFO on import and every step after; the CLI's
# INFO logging would print them all. -v (DEBUG) keeps them.
log = logging.getLogger(__name__)

if not logging.getLogger().isEnabledFor(logging.DEBUG):
    logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

from rmp import catalog, db  # noqa: E402
from rmp import compact as compact_sql  # noqa: E402
from rmp.errors import UserError  # noqa: E402
from rmp.settings import ROOT, SQL_DIR  # noqa: E402

ALEMBIC_INI = ROOT / "alembic.ini"


class MigrationError(UserError):
    """A revision name that does not exist, or a migration the database refused."""


def _config(url: str) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["url"] = url
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(_config("")).get_current_head()


def revisions() -> list[str]:
    """Revision ids from base to head."""
    script = ScriptDirectory.from_config(_config(""))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current(url: str | None = None) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    target = url or db.database_url()
    with db.engine(target).connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table_schema": "public"}).get_current_revision()


def _steps(before: str | None, revision: str, *, up: bool) -> list[str]:
    """The revisions to stop at on the way from ``before`` to ``revision``, one by one, so that
    every revision runs with the policy jobs paused, the jobs an earlier revision of the same run
    created too (a refresh of a just-recreated aggregate deadlocked with the next revision's DDL).
    [revision] itself when it is not a plain id on the chain ('-1', '+2', an unknown name: alembic
    resolves it, or says why not)."""
    chain = revisions()
    if revision == "head":
        revision = chain[-1]
    if revision not in (*chain, "base") or (before is not None and before not in chain):
        return [revision]
    here = chain.index(before) if before else -1
    there = chain.index(revision) if revision != "base" else -1
    if up and there > here:
        return chain[here + 1:there + 1]
    if not up and there < here:
        return chain[there:here][::-1] if revision != "base" else [*chain[:here][::-1], "base"]
    return [revision]


def upgrade(url: str | None = None, revision: str = "head") -> str | None:
    """Upgrade to ``revision`` and return the revision reached."""
    target = url or db.database_url()
    before = current(target)
    for step in _steps(before, revision, up=True):
        with policy_jobs_paused(target):
            _run(command.upgrade, target, step)
    now = current(target)
    if now == head():
        # Policies follow the catalog once the schema is at head (a tier a revision
        # just created gets its own), with every job paused again: the jobs an
        # earlier revision of this run created may be running. Revisions apply the
        # idempotent SQL themselves; with nothing to migrate, re-apply it so an
        # edited view takes effect.
        for attempt in range(3):
            try:
                with policy_jobs_paused(target), db.engine(target).begin() as conn:
                    if now == before:
                        apply_idempotent(conn)
                    configure_policies(conn)
                break
            except sa.exc.DBAPIError as exc:
                # a job the scheduler started as it was paused takes its own lock, then
                # ours: PostgreSQL rolls this transaction back; the job ends, we redo it
                if attempt == 2 or not isinstance(exc.orig, psycopg.errors.DeadlockDetected):
                    raise
                log.warning("policy (re)configuration chosen as deadlock victim; retrying")
    return now


def downgrade(url: str | None = None, revision: str = "-1") -> str | None:
    target = url or db.database_url()
    for step in _steps(current(target), revision, up=False):
        with policy_jobs_paused(target):
            _run(command.downgrade, target, step)
    return current(target)


@contextmanager
def policy_jobs_paused(url: str, timeout: float = 120) -> Iterator[None]:
    """Unschedule the platform's policy jobs and wait for running ones to finish.

    On a real server TimescaleDB's background workers refresh and compress
    while a migration runs; a revision's DDL waiting on a job that waits on the
    revision's locks is a deadlock. Jobs the migration recreates come back
    scheduled; the others are scheduled again afterwards, even on failure.
    """
    with db.connect(url, autocommit=True) as conn:
        exists = conn.execute("select to_regprocedure('metrics.policy_job_ids()') is not null").fetchone()[0]
        paused = [] if not exists else [r[0] for r in conn.execute(
            "select job_id from timescaledb_information.jobs"
            " where scheduled and job_id in (select metrics.policy_job_ids()) order by job_id")]
        for job_id in paused:
            conn.execute("select alter_job(%s, scheduled => false)", (job_id,))
        _wait_until_idle(conn, paused, timeout)
    try:
        yield
    finally:
        if paused:
            with db.connect(url, autocommit=True) as conn:
                conn.execute(
                    "select alter_job(job_id, scheduled => true) from timescaledb_information.jobs"
                    " where job_id = any(%s) and not scheduled", (paused,))


def _wait_until_idle(conn: psycopg.Connection, job_ids: list[int], timeout: float) -> None:
    # job_stats says 'Running' only once a launched worker has registered its run; a worker
    # the scheduler launched just before alter_job() is already a backend named "... [id]".
    deadline = time.monotonic() + timeout
    while job_ids and time.monotonic() < deadline:
        running = conn.execute(
            "select (select count(*) from timescaledb_information.job_stats"
            "        where job_id = any(%s) and job_status = 'Running')"
            "     + (select count(*) from pg_stat_activity, unnest(%s::int[]) as j(id)"
            "        where pid <> pg_backend_pid() and application_name like '%%[' || j.id || ']')",
            (job_ids, job_ids)).fetchone()[0]
        if running == 0:
            return
        time.sleep(0.2)
    if job_ids:
        log.warning("policy jobs still running after %.0f s; migrating anyway", timeout)


def _run(fn, url: str, revision: str) -> None:
    try:
        fn(_config(url), revision)
    except Exception as exc:
        # alembic's own errors (unknown revision ...) and the database's refusals
        # become one line; anything else is a bug and keeps its traceback.
        from alembic.util import CommandError

        if isinstance(exc, CommandError):
            raise MigrationError(str(exc)) from exc
        if isinstance(exc, sa.exc.DBAPIError) and isinstance(exc.orig, psycopg.Error):
            first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            raise MigrationError(f"migration to {revision} failed: {first}") from exc
        raise


# ---------------------------------------------------------------- helpers --
# Used by the revisions in alembic/versions with op.get_bind().


def _driver_cursor(conn: sa.Connection) -> psycopg.Cursor:
    # The raw psycopg cursor: no parameter parsing, so '%' and ':x' in SQL files stay as written.
    return conn.connection.dbapi_connection.cursor()


def apply_sql(conn: sa.Connection, *relative_paths: str) -> None:
    """Run SQL files (paths relative to ``sql/``) in the given order, in the caller's transaction."""
    with _driver_cursor(conn) as cur:
        for rel in relative_paths:
            path = SQL_DIR / rel
            cur.execute(path.read_text())


def idempotent_files() -> list[Path]:
    return sorted((SQL_DIR / "idempotent").glob("*.sql"))


def apply_idempotent(conn: sa.Connection) -> None:
    """Publish the catalog, then re-apply sql/idempotent/*.sql (which may read it)."""
    publish_catalog(conn)
    publish_raw_layout(conn)
    apply_sql(conn, *(str(p.relative_to(SQL_DIR)) for p in idempotent_files()))


def configure_policies(conn: sa.Connection, policies: dict | None = None) -> None:
    """(Re)set refresh, compression and retention policies from the catalog."""
    policies = {**(policies or catalog.policies()), "raw_hypertables": raw_hypertables(conn)}
    with _driver_cursor(conn) as cur:
        cur.execute("select metrics.configure_policies(%s::jsonb)", (json.dumps(policies),))


def raw_hypertables(conn: sa.Connection) -> list[str]:
    """catalog.RAW_HYPERTABLES as this database has them: before revision 0012 server_metrics'
    rows are in the hypertable server_metrics itself."""
    compact = is_compact(conn)
    return [t if compact or t != compact_sql.TABLE else "server_metrics" for t in catalog.RAW_HYPERTABLES]


def publish_raw_layout(conn: sa.Connection) -> None:
    """Two functions the SQL of sql/idempotent/ renders its triggers with, so the same files serve
    every revision: ``metrics.raw_table()``, the hypertable that holds server_metrics' rows
    (server_samples from revision 0012 on), and ``metrics.raw_column(name, alias)``, the SQL
    that reads a server_metrics column from a row of it aliased ``alias`` (a transition table,
    ``old``/``new``)."""
    compact = is_compact(conn)
    cases = sql.SQL(" ").join(
        sql.SQL("when {} then {}").format(sql.Literal(c.name), sql.Literal(compact_sql.decoded_column(c.name, "@")))
        for c in catalog.SERVER_METRICS)
    table = compact_sql.QUALIFIED if compact else f"{catalog.SCHEMA}.server_metrics"
    with _driver_cursor(conn) as cur:
        cur.execute(sql.SQL(
            "create or replace function metrics.raw_column(name text, alias text) returns text"
            " language sql immutable as $f$ select replace({body}, '@', alias) $f$"
        ).format(body=sql.SQL("case name {} else '@.' || name end").format(cases) if compact
                 else sql.SQL("'@.' || name")))
        cur.execute(sql.SQL(
            "create or replace function metrics.raw_table() returns regclass language sql stable"
            " as $f$ select {}::regclass $f$").format(sql.Literal(table)))


def _create_hypertable(cur: psycopg.Cursor, name: str, columns: str) -> None:
    """A raw hypertable shaped like 002-metrics.sql's: 1-day chunks, the de-duplicating key,
    the time index, compressed by server, newest first."""
    table = sql.Identifier(catalog.SCHEMA, name)
    cur.execute(sql.SQL("create table {} ({})").format(table, sql.SQL(columns)))
    cur.execute("select create_hypertable(%s::regclass, by_range('collected_at', interval '1 day'),"
                " create_default_indexes => false)", (f"{catalog.SCHEMA}.{name}",))
    cur.execute(sql.SQL("create unique index {} on {} (server_id, collected_at desc)").format(
        sql.Identifier(f"{name}_server_time_uidx"), table))
    cur.execute(sql.SQL("create index {} on {} (collected_at desc)").format(sql.Identifier(f"{name}_time_idx"), table))
    cur.execute(sql.SQL("alter table {} set (timescaledb.compress, timescaledb.compress_segmentby = 'server_id',"
                        " timescaledb.compress_orderby = 'collected_at desc')").format(table))


def create_server_samples_hypertable(conn: sa.Connection, columns: list[catalog.MetricColumn]) -> None:
    """metrics.server_samples, from the catalog (rmp/compact.py), holding ``columns``."""
    with _driver_cursor(conn) as cur:
        _create_hypertable(cur, compact_sql.TABLE, compact_sql.create_table_columns(columns))
        cur.execute(f"comment on table {compact_sql.QUALIFIED} is 'The rows of metrics.server_metrics (a view "
                    "over this table) in a layout that compresses by over 90 %: see rmp/catalog.py Stored.'")


def create_server_metrics_hypertable(conn: sa.Connection, name: str = "server_metrics") -> None:
    """The hypertable metrics.server_metrics as it was before revision 0012, from the catalog."""
    columns = ["server_id bigint not null references tenancy.servers (id) on delete cascade",
               "collected_at timestamptz not null"]
    for c in metric_columns_of(conn, compact_sql.QUALIFIED):
        lower, upper = c.bounds
        check = f"{c.name} >= {lower}" if upper is None else f"{c.name} between {lower} and {upper}"
        columns.append(f"{c.name} {c.sql_type} constraint {c.check_name} check ({check})")
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    lower, upper = interval.bounds
    columns.append(f"{interval.name} {interval.sql_type} not null default {interval.default} "
                   f"constraint {interval.check_name} check ({interval.name} between {lower} and {upper})")
    with _driver_cursor(conn) as cur:
        _create_hypertable(cur, name, ", ".join(columns))


def metric_columns_of(conn: sa.Connection, relation: str) -> list[catalog.MetricColumn]:
    """The catalog's metric columns the relation has (server_metrics: by name; server_samples:
    by the first column that stores it), in the catalog's order."""
    have = set(conn.execute(sa.text(
        "select attname from pg_attribute where attrelid = cast(:r as regclass) and attnum > 0 and not attisdropped"),
        {"r": relation}).scalars())
    stored = relation == compact_sql.QUALIFIED
    return [c for c in catalog.SERVER_METRICS if (c.storage_columns()[0][0] if stored else c.name) in have]


def create_compact_view(conn: sa.Connection, without: str | None = None) -> None:
    """The view metrics.server_metrics over server_samples, and the triggers that let INSERT,
    COPY and UPDATE through it (DELETE needs none: PostgreSQL updates a simple view itself).

    INSERT, COPY and UPDATE are set-based, as on the table before: the INSTEAD OF row trigger
    only appends the encoded row to a private buffer (``pg_temp.rmp_server_samples_pending``,
    ``..._changed``; on commit delete rows), and one AFTER statement trigger applies the buffer
    to server_samples with one INSERT (an UPDATE: one DELETE of the old rows, one INSERT of the
    new), so the read path's statement triggers on server_samples run once per statement, not
    once per row. A re-sent sample (same server and time) is ignored, as
    ``rmp ingest`` ignores it. Not security_invoker: the rights on the view are what the rights
    on the table were (a tenant view reads it with its owner's rights); the triggers write with
    their caller's, so a writer needs them on server_samples too (tenant-security.sql grants them)."""
    metrics = [c for c in metric_columns_of(conn, compact_sql.QUALIFIED) if c.name != without]
    names, values = compact_sql.encoded("new", metrics)
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    columns = ", ".join(names)
    with _driver_cursor(conn) as cur:
        cur.execute(f"create view metrics.server_metrics as select\n    "
                    f"{compact_sql.decoded('s', metrics)}\nfrom {compact_sql.QUALIFIED} as s")
        cur.execute(f"alter view metrics.server_metrics alter column {interval.name} set default {interval.default}")
        # No security definer, no search_path: the buffer is the caller's own temporary table,
        # and the per-row function must stay cheap (a few microseconds).
        cur.execute(f"""
            create or replace function metrics.server_metrics_write() returns trigger language plpgsql as $f$
            begin
                if tg_op = 'INSERT' then
                    if pg_catalog.to_regclass('pg_temp.rmp_server_samples_pending') is null then
                        create temporary table rmp_server_samples_pending
                            (like {compact_sql.QUALIFIED} including defaults) on commit delete rows;
                    end if;
                    insert into pg_temp.rmp_server_samples_pending ({columns}) values ({', '.join(values)});
                else
                    if pg_catalog.to_regclass('pg_temp.rmp_server_samples_changed') is null then
                        create temporary table rmp_server_samples_changed
                            (old_server_id bigint, old_collected_at timestamptz,
                             like {compact_sql.QUALIFIED} including defaults) on commit delete rows;
                    end if;
                    insert into pg_temp.rmp_server_samples_changed (old_server_id, old_collected_at, {columns})
                    values (old.server_id, old.collected_at, {', '.join(values)});
                end if;
                return new;
            end
            $f$""")
        cur.execute(f"""
            create or replace function metrics.server_metrics_flush() returns trigger language plpgsql as $f$
            begin
                if tg_op = 'INSERT' then
                    if pg_catalog.to_regclass('pg_temp.rmp_server_samples_pending') is not null then
                        with pending as (delete from pg_temp.rmp_server_samples_pending returning *)
                        insert into {compact_sql.QUALIFIED} ({columns})
                        select {columns} from pending order by server_id, collected_at
                        on conflict (server_id, collected_at) do nothing;
                    end if;
                elsif pg_catalog.to_regclass('pg_temp.rmp_server_samples_changed') is not null then
                    -- old rows out, new rows in, in two statements: one UPDATE of the whole set would
                    -- check each new key against rows not yet moved (set collected_at = collected_at
                    -- + 10 minutes collides or not depending on the join's order)
                    delete from {compact_sql.QUALIFIED} as s using pg_temp.rmp_server_samples_changed as changed
                    where s.server_id = changed.old_server_id and s.collected_at = changed.old_collected_at;
                    insert into {compact_sql.QUALIFIED} ({columns})
                    select {columns} from pg_temp.rmp_server_samples_changed order by server_id, collected_at;
                    delete from pg_temp.rmp_server_samples_changed;
                end if;
                return null;
            end
            $f$""")
        cur.execute("create trigger server_metrics_write instead of insert or update on metrics.server_metrics"
                    " for each row execute function metrics.server_metrics_write()")
        cur.execute("create trigger server_metrics_flush after insert or update on metrics.server_metrics"
                    " for each statement execute function metrics.server_metrics_flush()")
        cur.execute("comment on view metrics.server_metrics is 'One row per server per sample, stored in "
                    "metrics.server_samples (revision 0012) in a layout that compresses by over 90 %. INSERT, "
                    "COPY, UPDATE and DELETE work here; a re-sent sample (same server and time) is ignored. "
                    "ON CONFLICT and TRUNCATE: on metrics.server_samples.'")


TIER_TEMPLATE = SQL_DIR / "templates" / "server-metrics-aggregate.sql"
SITE_USAGE_DAILY_TEMPLATE = SQL_DIR / "templates" / "site-usage-daily-aggregate.sql"


def interval_expression(table: str, *, column: bool) -> sql.Composable:
    """What a sample's interval is in an aggregate's SQL: the column ``interval_seconds``
    of the raw table (revision 0010 on) or, before it, the constant every sample was assumed to cover."""
    if column:
        return sql.Identifier(catalog.SAMPLE_INTERVALS[table].name)
    return sql.SQL("{}::double precision").format(sql.Literal(catalog.SAMPLE_INTERVALS[table].default))


def render_tier(tier: catalog.Aggregate, *, interval_column: bool = True, compact: bool = True,
                view: sql.Composable | None = None, source: sql.Composable | None = None) -> sql.Composed:
    """The CREATE MATERIALIZED VIEW of one tier, from the one template. ``compact``: the rows
    are in metrics.server_samples (revision 0012 on), read through rmp/compact.py's expressions;
    before it, the columns of the hypertable metrics.server_metrics."""
    metrics = {c.name: sql.SQL(compact_sql.decoded_column(c.name, "")) if compact else sql.Identifier(c.name)
               for c in catalog.SERVER_METRICS}
    table = compact_sql.TABLE if compact else tier.source
    return sql.SQL(TIER_TEMPLATE.read_text()).format(
        view=view or sql.Identifier(catalog.SCHEMA, tier.name),
        bucket_width=sql.Literal(tier.bucket_width),
        source=source or sql.Identifier(catalog.SCHEMA, table),
        interval_seconds=interval_expression(tier.source, column=interval_column),
        **metrics,
    )


def render_site_usage_aggregate(*, interval_column: bool = True, view: sql.Composable | None = None,
                                source: sql.Composable | None = None) -> sql.Composed:
    """The CREATE MATERIALIZED VIEW of the daily site usage aggregate (catalog.SITE_USAGE_DAILY)."""
    a = catalog.SITE_USAGE_DAILY
    return sql.SQL(SITE_USAGE_DAILY_TEMPLATE.read_text()).format(
        view=view or sql.Identifier(catalog.SCHEMA, a.name),
        source=source or sql.Identifier(catalog.SCHEMA, a.source),
        interval_seconds=interval_expression(a.source, column=interval_column),
    )


def is_compact(conn: sa.Connection) -> bool:
    """Whether server_metrics' rows are in metrics.server_samples (revision 0012 on)."""
    return bool(conn.execute(sa.text("select to_regclass(:t) is not null"), {"t": compact_sql.QUALIFIED}).scalar())


def create_tier(conn: sa.Connection, tier: catalog.Aggregate, *, interval_column: bool = True) -> None:
    with _driver_cursor(conn) as cur:
        cur.execute(render_tier(tier, interval_column=interval_column, compact=is_compact(conn)))


def rebuild_aggregates(conn: sa.Connection, *, interval_column: bool, compact: bool = False,
                       site_usage: bool = True) -> list[str]:
    """Recreate every aggregate (tiers and site usage) with rates over the sample interval
    (``interval_column``) or over the assumed constant, keeping rows and dependent views
    (rmp/aggregate_rebuild.py). Returns the dependent objects that could not be recreated."""
    from rmp.aggregate_rebuild import RebuildSpec, rebuild

    def carry(table: str) -> dict[str, str]:
        # a row kept from before 0010: every sample was taken to cover the default interval
        return {"sampled_seconds": f"o.sample_count * {catalog.SAMPLE_INTERVALS[table].default}"}

    # The revision runs with today's catalog: a tier a later revision adds does not exist
    # yet at this one (metrics.configure_policies skips it the same way).
    specs = [
        RebuildSpec(catalog.SCHEMA, t.name, compact_sql.QUALIFIED if compact else f"{catalog.SCHEMA}.{t.source}",
                    "collected_at", "server_id", t.bucket_width, lambda view, source, t=t: render_tier(
                        t, interval_column=interval_column, compact=compact, view=view, source=source),
                    carry(t.source))
        for t in catalog.TIERS
        if conn.execute(sa.text("select to_regclass(:name) is not null"), {"name": t.qualified}).scalar()
    ]
    a = catalog.SITE_USAGE_DAILY
    if site_usage:
        specs.append(RebuildSpec(catalog.SCHEMA, a.name, f"{catalog.SCHEMA}.{a.source}", "collected_at", "site_id",
                                 a.bucket_width, lambda view, source: render_site_usage_aggregate(
                                     interval_column=interval_column, view=view, source=source), carry(a.source)))
    return rebuild(conn.connection.dbapi_connection, specs)


def add_interval_column(conn: sa.Connection, interval: catalog.SampleInterval) -> None:
    """``interval_seconds`` on a raw hypertable: not null, the catalog's default and bounds."""
    lower, upper = interval.bounds
    with _driver_cursor(conn) as cur:
        cur.execute(sql.SQL(
            "alter table {table} add column {name} {type} not null default {default}"
            " constraint {check} check ({name} between {lower} and {upper})").format(
            table=sql.Identifier(catalog.SCHEMA, interval.table), name=sql.Identifier(interval.name),
            type=sql.SQL(interval.sql_type), default=sql.Literal(interval.default),
            check=sql.Identifier(interval.check_name), lower=sql.Literal(lower), upper=sql.Literal(upper)))


def drop_aggregate(conn: sa.Connection, aggregate: catalog.Aggregate) -> None:
    """Drop a continuous aggregate; its refresh/compression/retention jobs go with it."""
    with _driver_cursor(conn) as cur:
        cur.execute(sql.SQL("drop materialized view if exists {} cascade").format(
            sql.Identifier(catalog.SCHEMA, aggregate.name)))


def add_metric_column(conn: sa.Connection, column: catalog.MetricColumn) -> None:
    """A new metric column of server_metrics with its CHECK, from the catalog entry: on the table
    before revision 0012; from it on, its storage columns on server_samples and the view and its
    triggers re-rendered (what reads the view is kept: rmp/aggregate_rebuild.py restore_after)."""
    if is_compact(conn):
        _recreate_compact_view(conn, f"alter table {compact_sql.QUALIFIED} add column "
                               + ", add column ".join(compact_sql.column_definitions(column)))
        return
    lower, upper = column.bounds
    name = sql.Identifier(column.name)
    if upper is None:
        check = sql.SQL("{} >= {}").format(name, sql.Literal(lower))
    else:
        check = sql.SQL("{} between {} and {}").format(name, sql.Literal(lower), sql.Literal(upper))
    with _driver_cursor(conn) as cur:
        cur.execute(sql.SQL("alter table metrics.server_metrics add column {} {} constraint {} check ({})").format(
            name, sql.SQL(column.sql_type), sql.Identifier(column.check_name), check))


def drop_metric_column(conn: sa.Connection, column: catalog.MetricColumn) -> None:
    if is_compact(conn):
        _recreate_compact_view(conn, f"alter table {compact_sql.QUALIFIED} "
                               + ", ".join(f"drop column if exists {name}" for name, _ in column.storage_columns()),
                               without=column.name)
        return
    with _driver_cursor(conn) as cur:
        cur.execute(sql.SQL("alter table metrics.server_metrics drop column if exists {}").format(
            sql.Identifier(column.name)))


def warn_not_recreated(failed: list[str]) -> None:
    """What a revision that rebuilt objects could not recreate (rmp/aggregate_rebuild.py), one warning each."""
    for line in failed:
        log.warning("not recreated (rebuild it, e.g. `rmp dbt run`): %s", line)


def _recreate_compact_view(conn: sa.Connection, alter_table: str, without: str | None = None) -> None:
    from rmp.aggregate_rebuild import restore_after

    pg = conn.connection.dbapi_connection

    def change() -> None:
        pg.execute("drop view metrics.server_metrics cascade")
        pg.execute(alter_table)
        create_compact_view(conn, without=without)

    warn_not_recreated(restore_after(pg, ["metrics.server_metrics"], change))


def publish_catalog(conn: sa.Connection) -> None:
    """The tiers as rows of the view metrics.aggregate_tiers, for readers that speak only SQL
    (the tenant views, tenant.server_buckets() and so Grafana). Re-rendered on every migration;
    tenant.aggregate_tiers goes with it (cascade) and sql/idempotent/tier-read-path.sql recreates it."""
    rows = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join([
            sql.Literal(t.name), sql.Literal(t.resolution), sql.Literal(t.source),
            sql.SQL("{}::interval").format(sql.Literal(t.bucket_width)),
            sql.SQL("{}::interval").format(sql.Literal(t.retention)),
            sql.SQL("{}::interval").format(sql.Literal(t.refresh_start_offset)),
            sql.SQL("{}::interval").format(sql.Literal(t.serves_window_up_to)),
        ]))
        for t in catalog.TIERS
    )
    with _driver_cursor(conn) as cur:
        cur.execute("drop view if exists metrics.aggregate_tiers cascade")
        cur.execute(sql.SQL(
            "create view metrics.aggregate_tiers as select * from (values {rows}) as tiers "
            "(view_name, resolution, source, bucket_width, retention, refresh_start_offset, serves_window_up_to)"
        ).format(rows=rows))
        cur.execute(
            "comment on view metrics.aggregate_tiers is 'The tiers of metrics.server_metrics, finest first, "
            "published from rmp/catalog.py by every migration (serves_window_up_to: the longest dashboard "
            "window the tier serves; null = any longer one). Read-only: edit the catalog.'"
        )
