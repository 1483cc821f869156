"""Benchmark fleet data generated inside the database (generate_series).

The benchmarks measure queries, refreshes and storage, not loading, so rows
are made by one ``insert ... select`` per day rather than sent over the
wire. Values follow a daily cycle with noise (cpu, memory, load), grow
steadily (disk) or are noisy deltas (disk/network bytes), rounded the way
collectors report them, so compression sees realistic data. ``setseed``
makes every load of the same arguments identical.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg

# One server index i (1-based, per fleet) drives its size and baseline.
_INSERT_DAY = """
insert into metrics.server_metrics (
    server_id, collected_at, cpu_percent, load_1m, load_5m, load_15m, cpu_cores,
    memory_total_bytes, memory_used_bytes, memory_available_bytes, memory_percent,
    disk_total_bytes, disk_used_bytes, disk_available_bytes, disk_percent,
    disk_read_bytes, disk_write_bytes, network_rx_bytes, network_tx_bytes,
    containers_running, containers_total)
select
    srv.id,
    ts,
    cpu.v,
    round((cpu.v / 100 * shape.cores * (0.9 + 0.2 * random()))::numeric, 2)::float8,
    round((cpu.v / 100 * shape.cores)::numeric, 2)::float8,
    round((shape.base / 100.0 * shape.cores)::numeric, 2)::float8,
    shape.cores,
    shape.mem_total,
    mem.used,
    shape.mem_total - mem.used,
    round((100.0 * mem.used / shape.mem_total)::numeric, 2)::float8,
    shape.disk_total,
    disk.used,
    shape.disk_total - disk.used,
    round((100.0 * disk.used / shape.disk_total)::numeric, 2)::float8,
    (random() * 4e6)::bigint / 4096 * 4096,
    (random() * 2e6)::bigint / 4096 * 4096,
    (random() * 2e7)::bigint,
    (random() * 1e7)::bigint,
    8 + mod(srv.i, 5) + (random() < 0.01)::int,
    13 + mod(srv.i, 5)
from generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '30 seconds',
                     interval '30 seconds') as ts
cross join unnest(%(ids)s::bigint[]) with ordinality as srv(id, i)
cross join lateral (
    select
        4 * (1 + mod(srv.i, 4)) as cores,
        (16::bigint << (mod(srv.i, 3))::int) * 1073741824 as mem_total,
        536870912000::bigint * (1 + mod(srv.i, 2)) as disk_total,
        20 + mod(srv.i * 7, 40) as base,
        2 * pi() * (mod(extract(epoch from ts)::bigint, 86400)) / 86400 as phase,
        extract(epoch from ts - %(origin)s::timestamptz) / 86400 as age_days
) as shape
cross join lateral (
    select least(100, greatest(0, round(
        (shape.base + 20 * sin(shape.phase + srv.i) + 12 * (random() - 0.5))::numeric, 2)))::float8 as v
) as cpu
cross join lateral (
    select ((0.45 + 0.1 * sin(shape.phase) + 0.02 * random()) * shape.mem_total / 1024)::bigint * 1024 as used
) as mem
cross join lateral (
    select ((0.3 + 0.002 * shape.age_days + 0.0001 * srv.i) * shape.disk_total / 4096)::bigint * 4096 as used
) as disk
order by ts, srv.id
"""


def create_fleet(conn: psycopg.Connection, slug: str, count: int) -> list[int]:
    """A fresh organization ``slug`` with ``count`` servers; returns their ids in order.

    An organization of that slug left by an earlier run is deleted first
    (its servers and metrics go with it: foreign keys cascade).
    """
    with conn.transaction():
        conn.execute("delete from tenancy.organizations where slug = %s", [slug])
        org_id = conn.execute(
            "insert into tenancy.organizations (name, slug) values (%s, %s) returning id", [slug, slug]
        ).fetchone()[0]
        rows = conn.execute(
            """
            insert into tenancy.servers (organization_id, name, hostname, cpu_cores,
                                         memory_total_bytes, disk_total_bytes, status)
            select %s, format('%%s-%%s', %s::text, lpad(i::text, 5, '0')),
                   format('%%s-%%s.bench.invalid', %s::text, i),
                   4 * (1 + i %% 4), (16::bigint << (i %% 3)::int) * 1073741824,
                   536870912000::bigint * (1 + i %% 2), 'active'
            from generate_series(1, %s) as i
            order by i
            returning id
            """,
            [org_id, slug, slug, count],
        ).fetchall()
    return [r[0] for r in rows]


def add_servers(conn: psycopg.Connection, slug: str, count: int, prefix: str) -> list[int]:
    """``count`` more servers named ``<prefix>-NNNNN`` in the existing organization ``slug``."""
    with conn.transaction():
        rows = conn.execute(
            """
            insert into tenancy.servers (organization_id, name, hostname, cpu_cores,
                                         memory_total_bytes, disk_total_bytes, status)
            select o.id, format('%%s-%%s', %s::text, lpad(i::text, 5, '0')),
                   format('%%s-%%s.bench.invalid', %s::text, i),
                   4 * (1 + i %% 4), (16::bigint << (i %% 3)::int) * 1073741824,
                   536870912000::bigint * (1 + i %% 2), 'active'
            from tenancy.organizations o, generate_series(1, %s) as i
            where o.slug = %s
            order by i
            returning id
            """,
            [prefix, prefix, count, slug],
        ).fetchall()
    return [r[0] for r in rows]


def load_metrics(
    conn: psycopg.Connection,
    server_ids: list[int],
    start: datetime,
    end: datetime,
    *,
    seed: float = 0.42,
    step: timedelta = timedelta(days=1),
    on_step: Callable[[int], None] | None = None,
) -> int:
    """Insert one row per server per 30 s in [start, end); returns the row count.

    One statement per ``step`` keeps each transaction short (the embedded
    engine is one session) and lets the caller show progress: ``on_step``
    gets the rows of each step.
    """
    total = 0
    at = start
    while at < end:
        upto = min(at + step, end)
        with conn.transaction():
            # Same seed + same arguments -> same rows, run after run.
            conn.execute("select setseed(%s)", [seed])
            cur = conn.execute(
                _INSERT_DAY, {"start": at, "end": upto, "ids": server_ids, "origin": start}
            )
            total += cur.rowcount
            if on_step:
                on_step(cur.rowcount)
        at = upto
    return total
