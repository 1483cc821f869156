"""Recreate continuous aggregates with a new query, keeping their rows and what reads them.

TimescaleDB cannot change a continuous aggregate's query, so a revision that
must (0010_interval_true_rates) drops and recreates it. Done plainly that loses

* the views built on it (tenant views, dbt's staging and mart views, an
  analyst's own), which ``drop ... cascade`` takes along, and
* its history where the raw rows are gone: retention keeps raw rows 90 days,
  the 1 h tier a year and the 1 d tier forever.

``rebuild(conn, specs)`` therefore, in the caller's transaction:

1. records every view (and function) that depends on the aggregates,
   recursively: definition, options (security_barrier, security_invoker),
   owner, grants and comments;
2. renames each old aggregate and creates the new one under its name, with no data;
3. fills the new one's materialization hypertable below the old one's
   watermark: every (bucket, entity) whose raw rows are all still there is
   recomputed from them with the new query; one whose raw rows retention
   dropped (fewer raw rows than the old aggregate counted) keeps the old row,
   the columns the old aggregate lacked given by the spec's ``carry``;
4. sets the new watermark from what was materialized, with TimescaleDB's own
   procedure (the one its ``cagg_migrate()`` uses), so the real-time part
   starts where the old one did and the refresh policy continues from there;
5. drops the old aggregates and recreates the recorded objects in dependency
   order (a view that no longer fits the new columns is skipped and named
   in the result: ``rmp dbt run`` rebuilds dbt's).

Dropping an aggregate leaves its pending materialization ranges in TimescaleDB's
catalog, which breaks pg_restore; the caller applies sql/idempotent/ afterwards
(as revision 0010 does), whose timescaledb-catalog-orphans.sql removes them.

Core layer: psycopg only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# render(view, source) -> the CREATE MATERIALIZED VIEW of the aggregate, reading ``source``
Render = Callable[[sql.Composable, sql.Composable], sql.Composable]


@dataclass(frozen=True)
class RebuildSpec:
    schema: str
    name: str
    source: str          # the raw hypertable, schema-qualified: metrics.server_metrics
    time_column: str     # of the source: collected_at
    entity_column: str   # the aggregate's group key besides the bucket: server_id
    bucket_width: str    # '1 hour'
    render: Render
    # SQL for columns the old aggregate does not have, over the old row (alias o);
    # a column in neither is null in the rows kept from the old aggregate.
    carry: dict[str, str] = field(default_factory=dict)


@dataclass
class _Saved:
    oid: int
    schema: str
    name: str
    kind: str            # 'v' view, 'm' materialized view, 'f' function
    definition: str
    options: list[str]
    owner: str
    grants: list[tuple[str, str, bool, str | None]]   # (grantee, privilege, grantable, column)
    comments: list[tuple[str | None, str]]             # (column or None, comment)


def rebuild(conn: psycopg.Connection, specs: list[RebuildSpec]) -> list[str]:
    """Recreate the aggregates of ``specs``; returns the dependent objects that could not
    be recreated (empty when everything that read the old aggregates reads the new ones)."""
    oids = [_oid(conn, s.schema, s.name) for s in specs]
    saved = _dependents(conn, oids)
    own = {oid: _describe(conn, oid, "v") for oid in oids}
    for spec, oid in zip(specs, oids, strict=True):
        _replace(conn, spec, own[oid])
    return _restore(conn, saved)


def restore_after(conn: psycopg.Connection, relations: list[str], change: Callable[[], None]) -> list[str]:
    """Record what depends on ``relations`` (schema-qualified names), run ``change`` (which may
    drop it, e.g. a column dropped with cascade), recreate what ``change`` dropped; returns
    the objects that could not be recreated."""
    saved = _dependents(conn, [_oid(conn, *r.split(".")) for r in relations], skip_aggregates=True)
    change()
    gone = [s for s in saved if conn.execute(
        "select to_regprocedure(%s) is null" if s.kind == "f" else "select to_regclass(%s) is null",
        (s.name if s.kind == "f" else f"{_quote(conn, s.schema)}.{_quote(conn, s.name)}",)).fetchone()[0]]
    return _restore(conn, gone)


def _quote(conn: psycopg.Connection, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def _oid(conn: psycopg.Connection, schema: str, name: str) -> int:
    return conn.execute("select to_regclass(%s)::oid", (f"{schema}.{name}",)).fetchone()[0]


def _dependents(conn: psycopg.Connection, oids: list[int], *, skip_aggregates: bool = False) -> list[_Saved]:
    """Views depending on ``oids`` (through their rewrite rules), recursively, and functions
    depending on those views or their row types; deepest last. Internal views of
    TimescaleDB (schema _timescaledb_internal) go with their aggregate and are not recorded."""
    rows = conn.execute(
        """
        with recursive views (oid, depth) as (
            select r.ev_class, 1
            from pg_depend d join pg_rewrite r on r.oid = d.objid
            where d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
              and d.refobjid = any(%(oids)s) and r.ev_class <> d.refobjid
            union all
            select r.ev_class, views.depth + 1
            from views
            join pg_depend d on d.refobjid = views.oid and d.refclassid = 'pg_class'::regclass
                and d.classid = 'pg_rewrite'::regclass
            join pg_rewrite r on r.oid = d.objid
            where r.ev_class <> views.oid
        ),
        deepest as (
            select views.oid, max(views.depth) as depth
            from views join pg_class c on c.oid = views.oid join pg_namespace n on n.oid = c.relnamespace
            where n.nspname <> '_timescaledb_internal' and c.oid <> all(%(oids)s)
            group by views.oid
        ),
        functions as (
            select distinct d.objid as oid, deepest.depth
            from deepest
            join pg_class c on c.oid = deepest.oid
            join pg_depend d on d.classid = 'pg_proc'::regclass
                and ((d.refclassid = 'pg_class'::regclass and d.refobjid = deepest.oid)
                     or (d.refclassid = 'pg_type'::regclass and d.refobjid = c.reltype))
        )
        select oid, 'r' as what, depth from deepest
        union all
        select oid, 'f', max(depth) from functions group by oid
        order by 3, 2 desc, 1
        """,
        {"oids": oids},
    ).fetchall()
    caggs = {r[0] for r in conn.execute(
        "select c.oid from _timescaledb_catalog.continuous_agg ca"
        " join pg_namespace n on n.nspname = ca.user_view_schema"
        " join pg_class c on c.relnamespace = n.oid and c.relname = ca.user_view_name")}
    saved = []
    for oid, what, _depth in rows:
        if oid in caggs and skip_aggregates:
            continue   # a change to a raw table that leaves the aggregate in place
        if oid in caggs:
            raise psycopg.errors.FeatureNotSupported(
                f"continuous aggregate {_name(conn, oid)} is built on an aggregate this revision recreates")
        saved.append(_describe(conn, oid, "f" if what == "f" else None))
    return saved


def _name(conn: psycopg.Connection, oid: int) -> str:
    return conn.execute("select %s::regclass::text", (oid,)).fetchone()[0]


def _describe(conn: psycopg.Connection, oid: int, kind: str | None) -> _Saved:
    if kind == "f":
        schema, name, definition, owner = conn.execute(
            "select n.nspname, p.proname, pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner)"
            " from pg_proc p join pg_namespace n on n.oid = p.pronamespace where p.oid = %s", (oid,)).fetchone()
        grants = [(g, p, gr, None) for g, p, gr in conn.execute(
            "select coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'public'), a.privilege_type, a.is_grantable"
            " from pg_proc p cross join aclexplode(p.proacl) a where p.oid = %s", (oid,))]
        comment = conn.execute("select obj_description(%s, 'pg_proc')", (oid,)).fetchone()[0]
        signature = conn.execute("select %s::regprocedure::text", (oid,)).fetchone()[0]
        return _Saved(oid, schema, signature, "f", definition, [], owner, grants,
                      [(None, comment)] if comment else [])
    schema, name, relkind, options, owner = conn.execute(
        "select n.nspname, c.relname, c.relkind, coalesce(c.reloptions, '{}'), pg_get_userbyid(c.relowner)"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = %s", (oid,)).fetchone()
    definition = conn.execute("select pg_get_viewdef(%s::oid)", (oid,)).fetchone()[0]
    grants = [(g, p, gr, None) for g, p, gr in conn.execute(
        "select coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'public'), a.privilege_type, a.is_grantable"
        " from pg_class c cross join aclexplode(c.relacl) a where c.oid = %s", (oid,))]
    grants += [(g, p, gr, col) for col, g, p, gr in conn.execute(
        "select att.attname, coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'public'), a.privilege_type,"
        " a.is_grantable from pg_attribute att cross join aclexplode(att.attacl) a"
        " where att.attrelid = %s and att.attnum > 0 and not att.attisdropped", (oid,))]
    comments = [(None, c) for (c,) in conn.execute(
        "select obj_description(%s, 'pg_class') where obj_description(%s, 'pg_class') is not null", (oid, oid))]
    comments += list(conn.execute(
        "select attname, col_description(attrelid, attnum) from pg_attribute"
        " where attrelid = %s and attnum > 0 and not attisdropped and col_description(attrelid, attnum) is not null",
        (oid,)))
    return _Saved(oid, schema, name, kind or relkind, definition.strip().rstrip(";"), list(options), owner,
                  grants, comments)


def _mat_table(conn: psycopg.Connection, schema: str, name: str) -> tuple[int, sql.Composable]:
    mat_id, mat_schema, mat_name = conn.execute(
        "select h.id, h.schema_name, h.table_name from _timescaledb_catalog.continuous_agg ca"
        " join _timescaledb_catalog.hypertable h on h.id = ca.mat_hypertable_id"
        " where ca.user_view_schema = %s and ca.user_view_name = %s", (schema, name)).fetchone()
    return mat_id, sql.Identifier(mat_schema, mat_name)


def _columns(conn: psycopg.Connection, table: sql.Composable) -> list[str]:
    return [r[0] for r in conn.execute(sql.SQL(
        "select attname from pg_attribute where attrelid = {}::regclass and attnum > 0 and not attisdropped"
        " order by attnum").format(sql.Literal(table.as_string(conn))))]


def _replace(conn: psycopg.Connection, spec: RebuildSpec, old: _Saved) -> None:
    view = sql.Identifier(spec.schema, spec.name)
    old_name = f"{spec.name}_before_rebuild"
    old_mat_id, old_mat = _mat_table(conn, spec.schema, spec.name)
    # As text: a never-refreshed aggregate's watermark is the type's minimum (4714 BC), beyond Python's dates.
    watermark = conn.execute(sql.SQL(
        "select _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(%s))::text"
        " where exists (select from {})").format(old_mat), (old_mat_id,)).fetchone()
    watermark = sql.SQL("{}::timestamptz").format(sql.Literal(watermark[0])) if watermark else None
    conn.execute(sql.SQL("alter materialized view {} rename to {}").format(view, sql.Identifier(old_name)))
    conn.execute(spec.render(view, sql.Identifier(*spec.source.split("."))))
    new_mat_id, new_mat = _mat_table(conn, spec.schema, spec.name)
    columns = _columns(conn, new_mat)
    old_columns = set(_columns(conn, old_mat))
    recomputed = kept = 0
    if watermark is not None:
        # Raw rows below the old watermark, through the new query: every bucket the old
        # aggregate had materialized and whose raw rows are still there.
        raw = sql.SQL("(select * from {source} where {time} < {watermark}) as {alias}").format(
            source=sql.Identifier(*spec.source.split(".")), time=sql.Identifier(spec.time_column),
            watermark=watermark, alias=sql.Identifier(spec.source.split(".")[-1]))
        select = _select_of(spec.render(sql.Identifier(spec.schema, "unused"), raw).as_string(conn))
        recomputed = conn.execute(sql.SQL("insert into {} {}").format(new_mat, sql.SQL(select))).rowcount
        key = sql.SQL("n.bucket = o.bucket and n.{entity} = o.{entity}").format(
            entity=sql.Identifier(spec.entity_column))
        # Retention dropped some of the bucket's raw rows: the old row counted them all.
        recomputed -= conn.execute(sql.SQL(
            "delete from {new} n using {old} o where {key} and o.sample_count > n.sample_count").format(
            new=new_mat, old=old_mat, key=key)).rowcount
        values = sql.SQL(", ").join(
            sql.SQL("o.{}").format(sql.Identifier(c)) if c in old_columns
            else sql.SQL(spec.carry.get(c, "null")) for c in columns)
        kept = conn.execute(sql.SQL(
            "insert into {new} ({cols}) select {values} from {old} o"
            " where o.bucket < {watermark} and not exists (select from {new} n where {key})").format(
            new=new_mat, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), values=values, old=old_mat,
            watermark=watermark, key=key)).rowcount
        conn.execute("call _timescaledb_functions.cagg_migrate_update_watermark(%s)", (new_mat_id,))
    log.info("%s.%s rebuilt: %d materialized rows recomputed from raw rows, %d kept from the old aggregate",
             spec.schema, spec.name, recomputed, kept)
    _apply_privileges(conn, old, view, "materialized view")
    conn.execute(sql.SQL("drop materialized view {} cascade").format(sql.Identifier(spec.schema, old_name)))


def _select_of(create_statement: str) -> str:
    """The SELECT of a rendered ``create materialized view ... as select ... with no data; alter ...``."""
    text = create_statement.lower()
    start = text.index("\nselect", text.index("create materialized view")) + 1   # past the header comments
    end = text.index("with no data", start)
    return create_statement[start:end]


def _apply_privileges(conn: psycopg.Connection, saved: _Saved, target: sql.Composable, what: str) -> None:
    owner = sql.Identifier(saved.owner)
    conn.execute(sql.SQL("alter {} {} owner to {}").format(sql.SQL(what), target, owner))
    on = sql.SQL("function") if saved.kind == "f" else sql.SQL("table")
    for grantee, privilege, grantable, column in saved.grants:
        who = sql.SQL("public") if grantee == "public" else sql.Identifier(grantee)
        cols = sql.SQL(" ({})").format(sql.Identifier(column)) if column else sql.SQL("")
        conn.execute(sql.SQL("grant {priv}{cols} on {on} {target} to {who}{option}").format(
            priv=sql.SQL(privilege), cols=cols, on=on, target=target, who=who,
            option=sql.SQL(" with grant option" if grantable else "")))
    for column, comment in saved.comments:
        if column is None:
            conn.execute(sql.SQL("comment on {} {} is {}").format(sql.SQL(what), target, sql.Literal(comment)))
        elif saved.kind != "f":
            conn.execute(sql.SQL("comment on column {}.{} is {}").format(
                target, sql.Identifier(column), sql.Literal(comment)))


def _restore(conn: psycopg.Connection, saved: list[_Saved]) -> list[str]:
    failed: list[str] = []
    for obj in saved:
        label = obj.name if obj.kind == "f" else f"{obj.schema}.{obj.name}"
        try:
            with conn.transaction():   # a savepoint: one object that no longer fits is skipped
                if obj.kind == "f":
                    conn.execute(obj.definition)
                    target = sql.SQL(obj.name)   # regprocedure text: quoted as needed
                    _apply_privileges(conn, obj, target, "function")
                    continue
                target = sql.Identifier(obj.schema, obj.name)
                what = "materialized view" if obj.kind == "m" else "view"
                options = sql.SQL(" with ({})").format(sql.SQL(", ").join(map(sql.SQL, obj.options))) \
                    if obj.options else sql.SQL("")
                conn.execute(sql.SQL("create {what} {target}{options} as {definition}").format(
                    what=sql.SQL(what), target=target, options=options, definition=sql.SQL(obj.definition)))
                _apply_privileges(conn, obj, target, what)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("%s was not recreated: %s", label, first)
            failed.append(f"{label}: {first}")
    return failed
