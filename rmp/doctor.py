"""`rmp doctor`: audit a live database against what the migrations promise.

Checks the extension version, the migration revision, every expected
hypertable, continuous aggregate and policy (from rmp.catalog),
the invariant that each aggregate's refresh window lies inside its source's
retention horizon (else a refresh after a retention run deletes aggregated
history), jobs that failed their last run or are overdue, and that a
``pg_dump`` of the database would restore (TimescaleDB's catalog obeys its own
foreign keys). Reads only; changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from rmp.catalog import AGGREGATES, HYPERTABLES, RAW_HYPERTABLES, RAW_RETENTION

MIN_TIMESCALEDB = (2, 13)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run(conn: psycopg.Connection, *, overdue_grace: timedelta = timedelta(minutes=10)) -> list[Check]:
    """Every check, in report order. ``conn`` should be in autocommit mode."""
    checks = [_extension(conn)]
    if not checks[0].ok:
        return checks
    checks.append(_revision(conn))
    checks += _hypertables(conn)
    checks += _aggregates(conn)
    checks += _policies(conn)
    checks += _refresh_inside_retention(conn)
    checks += _jobs(conn, overdue_grace)
    checks.append(_dump_restorable(conn))
    return checks


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def _extension(conn: psycopg.Connection) -> Check:
    row = conn.execute("select extversion from pg_extension where extname = 'timescaledb'").fetchone()
    if row is None:
        return Check("extension", False, "timescaledb extension is not installed (create extension timescaledb)")
    version = row[0]
    parts = tuple(int(p) for p in version.split("-")[0].split(".")[:2])
    ok = parts >= MIN_TIMESCALEDB
    want = ".".join(map(str, MIN_TIMESCALEDB))
    return Check("extension", ok, f"timescaledb {version}" + ("" if ok else f" is older than {want}"))


def _revision(conn: psycopg.Connection) -> Check:
    from rmp import migrations

    head = migrations.head()
    if conn.execute("select to_regclass('public.alembic_version')").fetchone()[0] is None:
        return Check("migrations", False, f"database is not migrated (run `rmp migrate upgrade`; head is {head})")
    rows = conn.execute("select version_num from public.alembic_version").fetchall()
    current = rows[0][0] if rows else None
    if current != head:
        return Check("migrations", False, f"database is at revision {current or 'base (empty)'}, head is {head} (run `rmp migrate upgrade`)")
    return Check("migrations", True, f"at head {head}")


def _hypertables(conn: psycopg.Connection) -> list[Check]:
    present = {r[0] for r in conn.execute(
        "select hypertable_name from timescaledb_information.hypertables where hypertable_schema = 'metrics'")}
    return [
        Check(f"hypertable metrics.{name}", name in present, "present" if name in present else "missing")
        for name in HYPERTABLES
    ]


def _aggregates(conn: psycopg.Connection) -> list[Check]:
    found = {r[0]: r for r in conn.execute(
        "select view_name, materialized_only, compression_enabled"
        " from timescaledb_information.continuous_aggregates where view_schema = 'metrics'")}
    checks = []
    for aggregate in AGGREGATES:
        name = aggregate.name
        row = found.get(name)
        if row is None:
            checks.append(Check(f"aggregate metrics.{name}", False, "missing"))
            continue
        issues = []
        if row[1]:
            issues.append("materialized_only = true (dashboards would not see the newest data)")
        if aggregate.compress_after is not None and not row[2]:
            issues.append("compression not enabled")
        checks.append(Check(f"aggregate metrics.{name}", not issues, "; ".join(issues) or "present, real-time"))
    return checks


def _jobs_by_target(conn: psycopg.Connection) -> dict[tuple[str, str], dict]:
    """(proc_name, relation name) -> job row; relation is the hypertable or aggregate view."""
    rows = conn.execute(
        "select job_id, proc_name, hypertable_name, config from timescaledb_information.jobs"
        " where hypertable_schema = 'metrics'"
    ).fetchall()
    return {(r[1], r[2]): {"job_id": r[0], "config": r[3] or {}} for r in rows}


def _same_interval(conn: psycopg.Connection, a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return conn.execute("select %s::interval = %s::interval", (a, b)).fetchone()[0]


def _policies(conn: psycopg.Connection) -> list[Check]:
    jobs = _jobs_by_target(conn)
    checks: list[Check] = []

    def retention(relation: str, tier_value: str | None) -> None:
        job = jobs.get(("policy_retention", relation))
        got = job["config"].get("drop_after") if job else None
        ok = _same_interval(conn, got, tier_value)
        want = tier_value or "none (kept forever)"
        checks.append(Check(f"retention metrics.{relation}", ok,
                            f"drop_after {got or 'none'}" + ("" if ok else f", the catalog says {want}")))

    def present(proc: str, relation: str, label: str) -> None:
        job = jobs.get((proc, relation))
        checks.append(Check(f"{label} metrics.{relation}", job is not None,
                            f"job {job['job_id']}" if job else f"no {label} policy"))

    for table in RAW_HYPERTABLES:
        present("policy_compression", table, "compression")
        retention(table, RAW_RETENTION)
    for aggregate in AGGREGATES:
        present("policy_refresh_continuous_aggregate", aggregate.name, "refresh")
        if aggregate.compress_after is not None:
            present("policy_compression", aggregate.name, "compression")
        retention(aggregate.name, aggregate.retention)

    org = conn.execute(
        "select job_id, config from timescaledb_information.jobs"
        " where proc_schema = 'metrics' and proc_name = 'apply_organization_retention'"
    ).fetchall()
    if len(org) != 1:
        checks.append(Check("organization retention job", False, f"{len(org)} jobs (expected 1)"))
    else:
        got = (org[0][1] or {}).get("raw_retention")
        ok = _same_interval(conn, got, RAW_RETENTION)
        checks.append(Check("organization retention job", ok,
                            f"job {org[0][0]}, raw_retention {got}" + ("" if ok else f", the catalog says {RAW_RETENTION}")))
    return checks


def _refresh_inside_retention(conn: psycopg.Connection) -> list[Check]:
    rows = conn.execute(
        """
        select ca.view_schema, ca.view_name, ca.hypertable_schema, ca.hypertable_name,
               refresh.config ->> 'start_offset' as start_offset,
               ret.config ->> 'drop_after' as source_drop_after,
               case
                   when refresh.job_id is null or ret.job_id is null then true
                   when refresh.config ->> 'start_offset' is null then false
                   else (refresh.config ->> 'start_offset')::interval < (ret.config ->> 'drop_after')::interval
               end as inside
        from timescaledb_information.continuous_aggregates as ca
        left join timescaledb_information.jobs as refresh
            on refresh.proc_name = 'policy_refresh_continuous_aggregate'
           and refresh.hypertable_schema = ca.view_schema and refresh.hypertable_name = ca.view_name
        left join timescaledb_information.jobs as ret
            on ret.proc_name = 'policy_retention'
           and ret.hypertable_schema = ca.hypertable_schema and ret.hypertable_name = ca.hypertable_name
        order by ca.view_schema, ca.view_name
        """
    ).fetchall()
    checks = []
    for schema, view, src_schema, src, start_offset, drop_after, inside in rows:
        name = f"refresh window {schema}.{view}"
        if drop_after is None:
            detail = f"starts {start_offset or 'at the beginning'} back; source {src_schema}.{src} keeps everything"
        elif inside:
            detail = f"starts {start_offset} back, inside {src_schema}.{src} retention of {drop_after}"
        else:
            detail = (f"{schema}.{view} refreshes from {start_offset or 'the beginning'} back, past the "
                      f"{drop_after} retention of its source {src_schema}.{src}: a refresh after a retention "
                      "run deletes aggregated history")
        checks.append(Check(name, bool(inside), detail))
    return checks


def _jobs(conn: psycopg.Connection, overdue_grace: timedelta) -> list[Check]:
    rows = conn.execute(
        """
        select j.job_id, j.proc_schema || '.' || j.proc_name as proc,
               coalesce(j.hypertable_schema || '.' || j.hypertable_name, '-') as target,
               s.last_run_status, case when isfinite(s.next_start) then s.next_start end, s.total_failures,
               (select e.err_message from timescaledb_information.job_errors as e
                 where e.job_id = j.job_id order by e.finish_time desc limit 1) as last_error,
               j.scheduled and s.next_start < now() - %s::interval as overdue,
               coalesce(c.consecutive_crashes, 0) as crashes,
               case when isfinite(c.last_start) then c.last_start end
        from timescaledb_information.jobs as j
        left join timescaledb_information.job_stats as s on s.job_id = j.job_id
        left join _timescaledb_internal.bgw_job_stat as c on c.job_id = j.job_id
        order by j.job_id
        """,
        (overdue_grace,),
    ).fetchall()
    checks = []
    for job_id, proc, target, status, next_start, _failures, last_error, overdue, crashes, started in rows:
        if crashes == 1:
            # The server died while the job ran (kill -9, power loss). Not the job's
            # failure: TimescaleDB's scheduler retries it after a crash back-off (at least
            # 5 minutes, up to the job's retry period or next scheduled slot, in memory:
            # alter_job's next_start does not move it); the catalog's next_start meanwhile
            # is stale or -infinity, which is not "overdue".
            checks.append(Check(f"job {job_id} {proc} {target}", True,
                                f"interrupted by a server crash (run started {_when(started)}); "
                                f"the scheduler retries it after its crash back-off (5 min to the retry period); "
                                f"to do its work now: CALL run_job({job_id})"))
        elif crashes > 1:
            checks.append(Check(f"job {job_id} {proc} {target}", False,
                                f"crashed {crashes} times in a row; see the server log"))
        elif status == "Failed":
            checks.append(Check(f"job {job_id} {proc} {target}", False,
                                f"last run failed: {last_error or 'no error recorded'}"))
        elif overdue:
            checks.append(Check(f"job {job_id} {proc} {target}", False,
                                f"overdue: next start was {_when(next_start)}"))
    if not any(not c.ok for c in checks):
        checks.append(Check("jobs", True, f"{len(rows)} jobs, none failing or overdue"))
    return checks


# Every foreign key among the tables of the timescaledb extension, with its columns in key order.
_EXTENSION_FOREIGN_KEYS = """
select c.conname, child_ns.nspname, child.relname, parent_ns.nspname, parent.relname,
       array(select a.attname from unnest(c.conkey) with ordinality as k(attnum, i)
             join pg_attribute as a on a.attrelid = c.conrelid and a.attnum = k.attnum order by k.i),
       array(select a.attname from unnest(c.confkey) with ordinality as k(attnum, i)
             join pg_attribute as a on a.attrelid = c.confrelid and a.attnum = k.attnum order by k.i)
from pg_constraint as c
join pg_class as child on child.oid = c.conrelid
join pg_namespace as child_ns on child_ns.oid = child.relnamespace
join pg_class as parent on parent.oid = c.confrelid
join pg_namespace as parent_ns on parent_ns.oid = parent.relnamespace
where c.contype = 'f'
  and exists (select from pg_depend as d join pg_extension as e on e.oid = d.refobjid
              where e.extname = 'timescaledb' and d.deptype = 'e'
                and d.classid = 'pg_class'::regclass and d.objid = c.conrelid)
order by child_ns.nspname, child.relname, c.conname
"""


def _dump_restorable(conn: psycopg.Connection) -> Check:
    """pg_dump copies TimescaleDB's catalog tables row for row and pg_restore loads them into
    tables whose foreign keys the extension has already created. TimescaleDB writes its catalog
    below the executor, where those keys are never checked, so a row it leaves behind (2.23
    keeps a dropped continuous aggregate's pending materialization ranges) makes every dump
    of the database fail to restore. Checked key by key, whatever the table."""
    broken = []
    for name, schema, table, parent_schema, parent, columns, parent_columns in conn.execute(_EXTENSION_FOREIGN_KEYS):
        match = sql.SQL(" and ").join(
            sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
            for cc, pc in zip(columns, parent_columns, strict=True))
        present = sql.SQL(" and ").join(sql.SQL("c.{} is not null").format(sql.Identifier(cc)) for cc in columns)
        orphans = conn.execute(sql.SQL(
            "select count(*) from {child} as c where {present} and not exists (select from {parent} as p where {match})"
        ).format(child=sql.Identifier(schema, table), parent=sql.Identifier(parent_schema, parent),
                 present=present, match=match)).fetchone()[0]
        if orphans:
            broken.append(f"{orphans} row(s) of {schema}.{table} break {name} "
                          f"(({', '.join(columns)}) not in {parent_schema}.{parent})")
    if broken:
        return Check("dump restorable", False,
                     "pg_restore of a pg_dump would fail: " + "; ".join(broken)
                     + " (run `rmp migrate upgrade` as the extension's owner; docs/backups.md)")
    return Check("dump restorable", True, "TimescaleDB's catalog satisfies its foreign keys")


def _when(at) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S %Z}" if at is not None else "-infinity"
