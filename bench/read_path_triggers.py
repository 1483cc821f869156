"""What the fleet read path's triggers cost the writers.

``python -m bench.read_path_triggers`` loads the same CSV file of ``--servers`` x
``--hours`` of recent 30-second samples with ``psql \\copy`` into an emptied
metrics.server_metrics, alternately with the INSERT triggers of revision 0011
(metrics.server_latest, metrics.organization_cpu_hourly and the COPY
invalidation log: sql/idempotent/server-last-point.sql, organization-cpu-hourly.sql,
cagg-copy-invalidations.sql) and without them, ``--rounds`` times each; then the
collector's shape: ``--ticks`` COPY statements of one sample per server each.
Results: ``bench/results/read-path-triggers-<engine>.json`` (every round, best of
each side and their ratio).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bench.engine import bench_engine, describe
from bench.results import RESULTS_DIR, write_json
from rmp import compact
from rmp.settings import SQL_DIR

INSERT_TRIGGERS = ("server_latest_insert", "organization_cpu_insert", "cagg_copy_invalidations")
TRIGGER_FILES = ("cagg-copy-invalidations.sql", "server-last-point.sql", "organization-cpu-hourly.sql")
COLUMNS = ("server_id, collected_at, cpu_percent, load_1m, memory_used_bytes, memory_percent, "
           "disk_used_bytes, disk_percent, interval_seconds")
# samples ending at the current minute: every row is recent enough for every trigger to work on it
SAMPLES = ("select s.id, date_trunc('minute', now()) - (t * interval '30 seconds'), (s.id * 7 + t) %% 100,"
           " 1.5, 2000000000 + t, 40, 100000000000 + t, 50, 30"
           " from tenancy.servers as s, generate_series(%s::int, %s::int) as t where s.organization_id = any(%s)"
           " order by s.id, 2")


def _triggers(conn: psycopg.Connection, on: bool) -> None:
    if on:
        for name in TRIGGER_FILES:
            conn.execute((SQL_DIR / "idempotent" / name).read_text())
    else:
        for name in INSERT_TRIGGERS:
            conn.execute(f"drop trigger if exists {name} on {compact.QUALIFIED}")


def _psql_copy(url: str, path: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                    f"\\copy metrics.server_metrics ({COLUMNS}) from '{path}' with (format csv)"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def run(url: str, *, servers: int, hours: int, rounds: int, ticks: int, engine: str = "native",
        say=print) -> dict:
    per_server = hours * 120
    with psycopg.connect(url, autocommit=True) as conn, tempfile.TemporaryDirectory() as tmp:
        org_ids = []
        for i in range(2):      # an organization and a sub-organization
            org_ids.append(conn.execute(
                "insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) returning id",
                (f"Trigger bench {i}", f"trigger-bench-{i}", org_ids[0] if org_ids else None)).fetchone()[0])
        conn.execute("insert into tenancy.servers (organization_id, name, cpu_cores) select %s[1 + g %% 2],"
                     " 'trigger-bench-' || g, 8 from generate_series(1, %s) as g", (org_ids, servers))
        path = Path(tmp) / "samples.csv"
        # the samples before the live ticks' (ticks .. ticks + per_server - 1 half-minutes back)
        query = psycopg.ClientCursor(conn).mogrify(SAMPLES, (ticks, ticks + per_server - 1, org_ids))
        with path.open("wb") as fh, conn.cursor().copy(f"copy ({query}) to stdout with (format csv)") as copy:
            for block in copy:
                fh.write(block)
        rows = servers * per_server
        bulk: dict[str, list[float]] = {"with_triggers": [], "without_triggers": []}
        live: dict[str, list[float]] = {"with_triggers": [], "without_triggers": []}
        try:
            for r in range(rounds):
                for side, on in (("with_triggers", True), ("without_triggers", False)):
                    conn.execute("truncate metrics.server_samples")
                    _triggers(conn, on)
                    seconds = _psql_copy(url, path)
                    bulk[side].append(round(seconds, 2))
                    # the collector's shape on top: one COPY of one sample per server per tick
                    seconds_live = 0.0
                    for tick in range(ticks - 1, -1, -1):
                        samples = conn.execute(SAMPLES, (tick, tick, org_ids)).fetchall()
                        t = time.perf_counter()
                        with conn.cursor().copy(f"copy metrics.server_metrics ({COLUMNS}) from stdin") as copy:
                            for row in samples:
                                copy.write_row(row)
                        seconds_live += time.perf_counter() - t
                    live[side].append(round(seconds_live, 2))
                    say(f"round {r + 1} {side}: bulk {rows / seconds:,.0f} rows/s, {ticks} ticks of {servers} rows "
                        f"in {live[side][-1]} s")
        finally:
            _triggers(conn, True)
            conn.execute("truncate metrics.server_samples")
            conn.execute("delete from tenancy.organizations where id = any(%s)", (org_ids,))
    best = {side: min(v) for side, v in bulk.items()}
    best_live = {side: min(v) for side, v in live.items()}
    return {
        "benchmark": "read_path_triggers", "engine": describe(engine), "servers": servers, "hours": hours,
        "bulk_rows": rows, "rounds": rounds, "bulk_seconds": bulk, "live_ticks": ticks, "live_seconds": live,
        "bulk_rows_per_s": {side: round(rows / s) for side, s in best.items()},
        "bulk_with_vs_without": round(best["without_triggers"] / best["with_triggers"], 3),
        "live_ms_per_tick": {side: round(s / ticks * 1000, 1) for side, s in best_live.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_path_triggers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10_000, help="servers in the file and per tick")
    parser.add_argument("--hours", type=int, default=1, help="hours of 30-second samples per server in the file")
    parser.add_argument("--rounds", type=int, default=3, help="loads of the file with and without, alternating")
    parser.add_argument("--ticks", type=int, default=10, help="collector-shaped COPYs of one sample per server")
    parser.add_argument("--engine", default="native", choices=("native", "embedded"), help="a private engine")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/...)")
    args = parser.parse_args(argv)
    with bench_engine(kind=args.engine) as eng:
        result = run(eng.url, servers=args.servers, hours=args.hours, rounds=args.rounds, ticks=args.ticks,
                     engine=args.engine)
    out = args.out or RESULTS_DIR / f"read-path-triggers-{args.engine}.json"
    write_json(out.parent, out.name, result)
    print(json.dumps({k: result[k] for k in ("servers", "bulk_rows_per_s", "bulk_with_vs_without",
                                             "live_ms_per_tick")}))


if __name__ == "__main__":
    main()
