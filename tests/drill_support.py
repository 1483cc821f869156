"""What every reliability drill checks afterwards: the database holds exactly
the source files (row count and a checksum per server), and the continuous
aggregates equal their own definition run over the raw rows.

The checksum is an md5 over each row's exact binary values in time order:
``float8send``/``int8send`` on the server, ``struct.pack`` of the file's text
parsed by Python on this side, so it compares values, not their formatting.
"""

from __future__ import annotations

import csv
import hashlib
import math
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ingest.fleet_writers import write_fleet_files, write_tenancy
from ingest.generator import generate_fleet
from rmp.catalog import SERVER_METRICS

# server_metrics columns the checksum covers (every metric column of the catalog), with the
# struct code of their send format
CHECKED = {c.name: {"double precision": "d", "bigint": "q", "integer": "i"}[c.sql_type] for c in SERVER_METRICS}
_SEND = {"d": "float8send", "q": "int8send", "i": "int4send"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

Checksums = dict[tuple[str, str], tuple[int, str]]   # (organization slug, server name) -> (rows, md5)


def make_fleet(url: str, out: Path, *, servers: int = 3, days: int = 2, seed: int = 16,
               start: datetime | None = None) -> Path:
    """Tenancy of a small generated fleet in the database, its server_metrics as a CSV file."""
    fleet = generate_fleet(seed, 1, servers, days, start, sub_organizations=0, sites_per_server=0,
                             anomalies_per_server=0)
    with psycopg.connect(url, autocommit=True) as conn:
        write_tenancy(conn, fleet)
    (path,) = write_fleet_files(fleet, out, "csv", site_usage=False)
    return path


def _row_bytes(stamp_us: int, values: list) -> bytes:
    parts = [struct.pack(">q", stamp_us)]
    for (_, code), v in zip(CHECKED.items(), values, strict=True):
        parts.append(b"\x00" if v is None else b"\x01" + struct.pack(">" + code, v))
    return b"".join(parts)


def file_checksums(*paths: Path) -> Checksums:
    """Rows and checksum per server of generator CSV files (organization, server, collected_at, ...)."""
    rows: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    for path in paths:
        with open(path, newline="") as fh:
            for rec in csv.DictReader(fh):
                at = datetime.fromisoformat(rec["collected_at"].replace("Z", "+00:00"))
                us = (at - EPOCH) // _US
                values = [None if rec[c] == "" else (float(rec[c]) if code == "d" else int(rec[c]))
                          for c, code in CHECKED.items()]
                rows.setdefault((rec["organization"], rec["server"]), []).append((us, _row_bytes(us, values)))
    out = {}
    for key, found in rows.items():
        found.sort()
        out[key] = (len(found), hashlib.md5(b"".join(b for _, b in found)).hexdigest())
    return out


def db_checksums(conn: psycopg.Connection, since: datetime | None = None,
                 until: datetime | None = None) -> Checksums:
    """The same per-server figures computed by the server over metrics.server_metrics
    (rows collected in [since, until) when given: a drill's own window of a shared database)."""
    cells = [sql.SQL("int8send((extract(epoch from m.collected_at) * 1000000)::bigint)")]
    for col, code in CHECKED.items():
        cells.append(sql.SQL("case when m.{c} is null then '\\x00'::bytea else '\\x01'::bytea || {f}(m.{c}) end")
                     .format(c=sql.Identifier(col), f=sql.SQL(_SEND[code])))
    query = sql.SQL("""
        select o.slug, s.name, count(*), md5(string_agg({row}, ''::bytea order by m.collected_at))
        from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id
        join tenancy.organizations o on o.id = s.organization_id
        where m.collected_at >= coalesce(%(since)s::timestamptz, '-infinity') and m.collected_at < coalesce(%(until)s::timestamptz, 'infinity')
        group by 1, 2""").format(row=sql.SQL(" || ").join(cells))
    return {(org, srv): (n, digest)
            for org, srv, n, digest in conn.execute(query, {"since": since, "until": until})}


def row_count(conn: psycopg.Connection, since: datetime | None = None, until: datetime | None = None) -> int:
    return conn.execute("select count(*) from metrics.server_metrics where collected_at >= coalesce(%s::timestamptz, '-infinity')"
                        " and collected_at < coalesce(%s::timestamptz, 'infinity')", (since, until)).fetchone()[0]


def refresh_all(conn: psycopg.Connection) -> None:
    """Refresh every continuous aggregate over all time (what an operator runs after a crash drill)."""
    views = conn.execute("select format('%I.%I', view_schema, view_name)"
                         " from timescaledb_information.continuous_aggregates order by 1").fetchall()
    for (view,) in views:
        conn.execute("call refresh_continuous_aggregate(%s::regclass, null, null)", (view,))


def aggregate_mismatches(conn: psycopg.Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Per server_metrics aggregate: buckets in [since, until) whose materialized
    row differs from the aggregate's own definition run over the raw rows now
    (missing, extra or a value off by more than 1e-9 relative). Also returns the
    number of buckets compared under the key ``"<view>:buckets"``."""
    out: dict[str, int] = {}
    views = conn.execute(
        "select view_schema, view_name, view_definition from timescaledb_information.continuous_aggregates"
        " where hypertable_name = 'server_samples' order by view_name").fetchall()
    for schema, view, definition in views:
        stored = _by_key(conn, sql.SQL("select * from {} where bucket >= %s and bucket < %s")
                         .format(sql.Identifier(schema, view)), (since, until))
        fresh = _by_key(conn, sql.SQL("select * from ({}) d where bucket >= %s and bucket < %s")
                        .format(sql.SQL(definition.strip().rstrip(";"))), (since, until))
        bad = len(stored.keys() ^ fresh.keys())
        bad += sum(1 for k in stored.keys() & fresh.keys() if not _same(stored[k], fresh[k]))
        if bad:     # shown with the failing assertion (pytest prints captured output)
            diff = sorted(k for k in stored.keys() & fresh.keys() if not _same(stored[k], fresh[k]))
            print(f"{view}: {len(fresh.keys() - stored.keys())} buckets missing, first "
                  f"{sorted(fresh.keys() - stored.keys())[:3]}, last {sorted(fresh.keys() - stored.keys())[-3:]}; "
                  f"{len(stored.keys() - fresh.keys())} extra; {len(diff)} differ, first {diff[:3]}")
        out[view] = bad
        out[f"{view}:buckets"] = len(fresh)
    return out


def _by_key(conn: psycopg.Connection, query: sql.Composable, params: tuple) -> dict:
    with conn.cursor() as cur:
        cur.execute(query, params)
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
    order = sorted(range(len(cols)), key=lambda i: cols[i])
    return {(r[cols.index("bucket")], r[cols.index("server_id")]): [r[i] for i in order] for r in rows}


def _same(a: list, b: list) -> bool:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def orphan_an_interrupted_refresh(conn: psycopg.Connection) -> int:
    """What TimescaleDB 2.23 leaves when a refresh is cancelled mid-way (a job timeout, a
    migration, a shutdown) and its aggregate is later dropped: the range the refresh had
    claimed stays in _timescaledb_catalog.continuous_aggs_materialization_ranges, naming an
    aggregate that no longer exists. Built for real: an aggregate whose materialization takes
    seconds, a refresh cancelled by statement_timeout, the aggregate dropped. Returns the
    dropped aggregate's materialization id. ``conn`` is in autocommit mode."""
    conn.execute("create schema orphan_drill")
    conn.execute("create function orphan_drill.slow(value int) returns int immutable language plpgsql"
                 " as $$ begin perform pg_sleep(0.01); return value; end $$")
    conn.execute("create table orphan_drill.samples (at timestamptz not null, value int)")
    conn.execute("select create_hypertable('orphan_drill.samples', 'at')")
    conn.execute("create materialized view orphan_drill.hourly with (timescaledb.continuous) as"
                 " select time_bucket('1 hour', at) as bucket, sum(orphan_drill.slow(value))"
                 " from orphan_drill.samples group by 1 with no data")
    conn.execute("insert into orphan_drill.samples"
                 " select at, 1 from generate_series(now() - interval '3 days', now(), interval '1 minute') as at")
    mat_id = conn.execute("select mat_hypertable_id from _timescaledb_catalog.continuous_agg"
                          " where user_view_schema = 'orphan_drill'").fetchone()[0]
    conn.execute("set statement_timeout = '3s'")     # 4,321 rows x 10 ms: cancelled while materializing
    try:
        conn.execute("call refresh_continuous_aggregate('orphan_drill.hourly', now() - interval '4 days', now())")
        raise AssertionError("the refresh was meant to be cancelled")
    except psycopg.errors.QueryCanceled:
        pass
    finally:
        conn.execute("reset statement_timeout")
    conn.execute("drop schema orphan_drill cascade")
    return mat_id


def pending_ranges(conn: psycopg.Connection, mat_id: int) -> int:
    return conn.execute("select count(*) from _timescaledb_catalog.continuous_aggs_materialization_ranges"
                        " where materialization_id = %s", (mat_id,)).fetchone()[0]
