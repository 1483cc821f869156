"""Binary COPY vs batched ``INSERT ... SELECT FROM unnest()`` into a hypertable.

The same rows (server id, timestamp, cpu %, memory bytes) go into two fresh
hypertables on the same engine in one run: once through psycopg's binary
``cursor.copy()`` (COPY FROM STDIN, which the embedded server turns into
COPY FROM '/dev/blob'), once as ``INSERT ... SELECT * FROM unnest(%s, %s, ...)``
in batches, the fastest INSERT form measured on the embedded engine.
Prints rows/s and the ratio; writes bench/results/copy_vs_insert.json.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import psycopg

from bench.results import RESULTS_DIR, write_json
from rmp import db

QUICK = {"rows": 100_000}
SCHEMA = "bench_copy"


def _rows(n: int, servers: int = 100) -> tuple[list, list, list, list]:
    rng = np.random.default_rng(7)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    sid = (np.arange(n) % servers + 1).tolist()
    ts = [start + dt.timedelta(seconds=30 * (i // servers)) for i in range(n)]
    cpu = np.round(rng.uniform(0, 100, n), 3).tolist()
    mem = rng.integers(1 << 30, 64 << 30, n).tolist()
    return sid, ts, cpu, mem


def _table(conn: psycopg.Connection, name: str) -> str:
    conn.execute(f"drop table if exists {SCHEMA}.{name}")
    conn.execute(
        f"create table {SCHEMA}.{name} (server_id bigint not null, collected_at timestamptz not null, "
        "cpu_percent double precision, memory_used_bytes bigint)"
    )
    conn.execute("select create_hypertable(%s, by_range('collected_at', interval '1 day'))", [f"{SCHEMA}.{name}"])
    return f"{SCHEMA}.{name}"


def run(url: str, rows: int = 1_000_000, batch: int = 20_000, console=None,
        out_dir: Path = RESULTS_DIR) -> dict:
    say = console.print if console else print
    sid, ts, cpu, mem = _rows(rows)
    with db.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema if not exists {SCHEMA}")
        copy_table = _table(conn, "via_copy")
        insert_table = _table(conn, "via_insert")

        say(f"binary COPY of {rows:,} rows ...")
        t0 = time.perf_counter()
        copy_sql = f"copy {copy_table} from stdin (format binary)"
        with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(["int8", "timestamptz", "float8", "int8"])
            for row in zip(sid, ts, cpu, mem, strict=True):
                copy.write_row(row)
        copy_s = time.perf_counter() - t0

        say(f"INSERT ... SELECT unnest() of {rows:,} rows in batches of {batch:,} ...")
        t0 = time.perf_counter()
        with conn.transaction():
            for i in range(0, rows, batch):
                conn.execute(
                    f"insert into {insert_table} select * from unnest(%s::int8[], %s::timestamptz[], "
                    "%s::float8[], %s::int8[])",
                    [sid[i:i + batch], ts[i:i + batch], cpu[i:i + batch], mem[i:i + batch]],
                )
        insert_s = time.perf_counter() - t0

        counts = [conn.execute(f"select count(*) from {t}").fetchone()[0] for t in (copy_table, insert_table)]
        conn.execute(f"drop schema {SCHEMA} cascade")
    if counts != [rows, rows]:
        raise RuntimeError(f"row counts differ from {rows}: {counts}")
    result = {
        "rows": rows,
        "batch": batch,
        "copy_binary_rows_per_s": round(rows / copy_s),
        "insert_unnest_rows_per_s": round(rows / insert_s),
        "copy_vs_insert_ratio": round(insert_s / copy_s, 2),
    }
    say(
        f"COPY binary {result['copy_binary_rows_per_s']:,} rows/s | INSERT unnest "
        f"{result['insert_unnest_rows_per_s']:,} rows/s | ratio {result['copy_vs_insert_ratio']}x"
    )
    write_json(out_dir, "copy_vs_insert.json", result)
    return result


if __name__ == "__main__":
    import argparse

    from bench.engine import bench_engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows written by each method (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per COPY / INSERT batch (default: %(default)s)")
    args = parser.parse_args()
    with bench_engine() as engine:
        print(json.dumps(run(engine.url, rows=args.rows, batch=args.batch)))
