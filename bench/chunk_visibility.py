"""Can one query see part of a transaction? On a hypertable, when that
transaction created a chunk: TimescaleDB looks a statement's chunks up with a
catalog snapshot of its own (timescale/timescaledb#5456).

``python -m bench.chunk_visibility`` starts a private native primary and a hot
standby of it, and commits ``--transactions`` transactions that each write 50
rows into the newest existing chunk and 50 into a chunk they create (1-minute
chunks), into a hypertable and into a plain table alike. Meanwhile one session
per (table, server) counts the table in a loop; a count that is not a multiple
of 100 saw half a transaction. Results: ``bench/results/chunk-visibility.json``
and ``.md``. docs/scaling.md explains what it means for readers of the fleet.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import psycopg

from bench.engine import describe
from bench.results import RESULTS_DIR, write_json

ROWS = 100      # per transaction, half in an existing chunk and half in a new one

SETUP = (
    "create extension if not exists timescaledb",
    "create table hyper (at timestamptz not null, v int)",
    "select create_hypertable('hyper', 'at', chunk_time_interval => interval '1 minute')",
    "create table plain (at timestamptz not null, v int)",
)
WRITE = ("insert into {table} select timestamptz '2026-01-01' + make_interval(mins => %s) + g * interval '1 ms', 1"
         " from generate_series(1, 50) g")


def run(transactions: int, say=print) -> dict:
    from rmp.standby import start_standby
    from rmp.testing import native_cluster

    with native_cluster(fsync=False) as primary:
        with psycopg.connect(primary.url, autocommit=True) as conn:
            for stmt in SETUP:
                conn.execute(stmt)
        standby = start_standby(primary)
        try:
            stop = threading.Event()
            found: dict[tuple[str, str], dict] = {}

            def count(table: str, server: str, url: str) -> None:
                got = found[(table, server)] = {"table": table, "server": server, "counts": 0, "partial": 0}
                with psycopg.connect(url, autocommit=True) as conn:
                    while not stop.is_set():
                        n = conn.execute(f"select count(*) from {table}").fetchone()[0]
                        got["counts"] += 1
                        got["partial"] += n % ROWS != 0

            readers = [threading.Thread(target=count, args=(t, name, url), daemon=True)
                       for t in ("hyper", "plain") for name, url in (("primary", primary.url),
                                                                      ("standby", standby.url))]
            for r in readers:
                r.start()
            say(f"chunk visibility: {transactions} transactions, 4 readers, on {describe('native')}")
            with psycopg.connect(primary.url) as conn:
                for i in range(transactions):
                    for table in ("hyper", "plain"):
                        conn.execute(WRITE.format(table=table), (i,))        # the chunk of minute i exists
                        conn.execute(WRITE.format(table=table), (i + 1,))    # minute i + 1's is new
                    conn.commit()
                    if (i + 1) % 500 == 0:
                        say(f"  {i + 1}/{transactions} transactions")
            stop.set()
            for r in readers:
                r.join(timeout=30)
        finally:
            standby.destroy()
    return {"transactions": transactions, "rows_per_transaction": ROWS, "engine": describe("native"),
            "readers": sorted(found.values(), key=lambda r: (r["table"], r["server"]))}


def markdown(result: dict) -> str:
    lines = ["# Partial transactions seen by one query (native engine)", "",
             f"{result['transactions']} transactions of {result['rows_per_transaction']} rows, half of them into"
             " a chunk the transaction creates; `python -m bench.chunk_visibility`. "
             f"Engine: {result['engine']}.", "",
             "| table | read on | counts | saw part of a transaction | share |", "|---|---|---:|---:|---:|"]
    for r in result["readers"]:
        share = r["partial"] / r["counts"] if r["counts"] else 0.0
        lines.append(f"| {r['table']} | {r['server']} | {r['counts']} | {r['partial']} | {share:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chunk_visibility", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=2000, help="transactions to commit (default 2000)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the results files")
    args = parser.parse_args(argv)
    result = run(args.transactions)
    text = markdown(result)
    print(text)
    write_json(args.out, "chunk-visibility.json", result, markdown=text)


if __name__ == "__main__":
    main()
