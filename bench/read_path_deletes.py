"""What the fleet read path's triggers cost a DELETE or UPDATE of recent rows.

``python -m bench.read_path_deletes`` fills metrics.server_metrics with one day of
30-second samples ending at the current minute (every row inside the two-day window
of metrics.organization_cpu_hourly) for each of ``--servers`` (one organization), then
runs ``delete from metrics.server_metrics`` of all of them, and an UPDATE of every
row's cpu_percent, alternately with the DELETE/UPDATE triggers of
sql/idempotent/read-path-changes.sql and without them, ``--rounds`` times, on the same
engine and the same data. After each statement with the triggers it checks that
metrics.organization_cpu_hourly and metrics.server_latest equal the raw rows. Then
``--fleet`` servers with ``--fleet-samples`` samples each: single-row DELETE
statements, the shape of a hand fix (0011 re-derived every server's last point per
statement). Results: ``bench/results/read-path-deletes-<engine>.json`` (every
statement's seconds, best of each side and their ratio).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import psycopg

from bench.engine import bench_engine, describe
from bench.results import RESULTS_DIR, write_json
from rmp.settings import SQL_DIR

CHANGE_TRIGGERS = ("read_path_log_delete", "read_path_log_update", "read_path_apply")
SAMPLES = ("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, load_1m, memory_used_bytes,"
           " memory_percent, interval_seconds)"
           " select s.id, date_trunc('minute', now()) - t * interval '30 seconds', (s.id * 7 + t) %% 400 / 4.0,"
           " 1.5, 2000000000 + t, 40, 30"
           " from tenancy.servers as s, generate_series(0, %s - 1) as t where s.organization_id = %s"
           " order by 2, 1")
# rows of metrics.organization_cpu_hourly / server_latest that differ from the raw rows
MISMATCHES = """
select
  (select count(*) from (
     (select organization_id, hour, cpu_percent_sum, cpu_sample_count from metrics.organization_cpu_hourly
      where cpu_sample_count <> 0 or cpu_percent_sum <> 0
      except
      select s.organization_id, time_bucket(interval '1 hour', m.collected_at), sum(m.cpu_percent::numeric),
             count(m.cpu_percent)
      from metrics.server_metrics as m join tenancy.servers as s on s.id = m.server_id
      where m.collected_at >= now() - interval '2 days' group by 1, 2 having count(m.cpu_percent) <> 0)
     union all
     (select s.organization_id, time_bucket(interval '1 hour', m.collected_at), sum(m.cpu_percent::numeric),
             count(m.cpu_percent)
      from metrics.server_metrics as m join tenancy.servers as s on s.id = m.server_id
      where m.collected_at >= now() - interval '2 days' group by 1, 2 having count(m.cpu_percent) <> 0
      except
      select organization_id, hour, cpu_percent_sum, cpu_sample_count from metrics.organization_cpu_hourly
      where cpu_sample_count <> 0 or cpu_percent_sum <> 0)) as hourly)
  + (select count(*) from (
     (select * from metrics.server_latest except select * from metrics.server_last_point_from_raw())
     union all
     (select * from metrics.server_last_point_from_raw() except select * from metrics.server_latest)) as latest)
"""


def _triggers(conn: psycopg.Connection, on: bool) -> None:
    if on:
        conn.execute((SQL_DIR / "idempotent" / "read-path-changes.sql").read_text())
    else:
        for name in CHANGE_TRIGGERS:
            conn.execute(f"drop trigger if exists {name} on metrics.server_metrics")


def _timed(conn: psycopg.Connection, statement: str, params=()) -> tuple[float, int]:
    t = time.perf_counter()
    rows = conn.execute(statement, params).rowcount
    return time.perf_counter() - t, rows


def _organization(conn: psycopg.Connection, name: str, servers: int) -> int:
    org = conn.execute("insert into tenancy.organizations (name, slug) values (%s, %s) returning id",
                       (name, name.lower().replace(" ", "-"))).fetchone()[0]
    conn.execute("insert into tenancy.servers (organization_id, name, cpu_cores)"
                 " select %s, %s || g, 8 from generate_series(1, %s) as g", (org, f"{name}-", servers))
    return org


def bulk(conn: psycopg.Connection, servers: int, rounds: int, say=print) -> dict:
    """DELETE / UPDATE of ``servers`` x 2,880 recent rows, with and without the triggers."""
    org = _organization(conn, f"Delete bench {servers}", servers)
    rows = servers * 2880
    seconds: dict[str, dict[str, list[float]]] = {
        op: {"with_triggers": [], "without_triggers": []} for op in ("delete", "update")}
    mismatches = []
    try:
        for r in range(rounds):
            for side, on in (("with_triggers", True), ("without_triggers", False)):
                conn.execute("truncate metrics.server_metrics")
                conn.execute(SAMPLES, (2880, org))
                conn.execute("analyze metrics.server_metrics")
                _triggers(conn, on)
                s, n = _timed(conn, "update metrics.server_metrics set cpu_percent = cpu_percent + 0.25")
                assert n == rows, (n, rows)
                seconds["update"][side].append(round(s, 3))
                if on:
                    mismatches.append(conn.execute(MISMATCHES).fetchone()[0])
                s, n = _timed(conn, "delete from metrics.server_metrics")
                assert n == rows, (n, rows)
                seconds["delete"][side].append(round(s, 3))
                if on:
                    mismatches.append(conn.execute(MISMATCHES).fetchone()[0])
                _triggers(conn, True)
                say(f"{rows:,} rows, round {r + 1} {side}: update {seconds['update'][side][-1]} s, "
                    f"delete {seconds['delete'][side][-1]} s")
    finally:
        _triggers(conn, True)
        conn.execute("truncate metrics.server_metrics")
        conn.execute("delete from tenancy.organizations where id = %s", (org,))
    result: dict = {"servers": servers, "rows": rows, "seconds": seconds, "mismatches_after_each_statement": mismatches}
    for op, sides in seconds.items():
        best = {side: min(v) for side, v in sides.items()}
        result[f"{op}_best_seconds"] = best
        result[f"{op}_rows_per_s"] = {side: round(rows / s) for side, s in best.items()}
        result[f"{op}_with_vs_without"] = round(best["with_triggers"] / best["without_triggers"], 2)
    return result


def single_rows(conn: psycopg.Connection, servers: int, samples: int, statements: int, say=print) -> dict:
    """``statements`` one-row DELETEs (each of another server's newest sample) among ``servers``."""
    org = _organization(conn, f"Single delete bench {servers}", servers)
    ms: dict[str, list[float]] = {"with_triggers": [], "without_triggers": []}
    try:
        conn.execute("truncate metrics.server_metrics")
        conn.execute(SAMPLES.replace("interval '30 seconds'", "interval '10 minutes'"), (samples, org))
        conn.execute("analyze metrics.server_metrics")
        ids = [r[0] for r in conn.execute("select id from tenancy.servers where organization_id = %s order by id",
                                          (org,))]
        # with the triggers first (then the derived tables are checked), without them after
        for side, on in (("with_triggers", True), ("without_triggers", False)):
            _triggers(conn, on)
            for k in range(statements):
                server_id = ids[k * 37 % len(ids)]
                s, n = _timed(conn, "delete from metrics.server_metrics where server_id = %s and collected_at ="
                                    " (select max(collected_at) from metrics.server_metrics where server_id = %s)",
                              (server_id, server_id))
                assert n == 1
                ms[side].append(round(s * 1000, 2))
            if on:
                mismatches = conn.execute(MISMATCHES).fetchone()[0]
        say(f"one-row deletes among {servers:,} servers: median with {statistics.median(ms['with_triggers'])} ms,"
            f" without {statistics.median(ms['without_triggers'])} ms")
    finally:
        _triggers(conn, True)
        conn.execute("truncate metrics.server_metrics")
        conn.execute("delete from tenancy.organizations where id = %s", (org,))
    median = {side: statistics.median(v) for side, v in ms.items()}
    return {"servers": servers, "samples_per_server": samples, "statements_per_side": statements, "ms": ms,
            "median_ms": median, "with_vs_without": round(median["with_triggers"] / median["without_triggers"], 2),
            "mismatches_after": mismatches}


def run(url: str, *, sizes: list[int], rounds: int, fleet: int, fleet_samples: int, statements: int,
        engine: str = "native", say=print) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        results = [bulk(conn, servers, rounds, say) for servers in sizes]
        single = single_rows(conn, fleet, fleet_samples, statements, say) if fleet else None
    return {"benchmark": "read_path_deletes", "engine": describe(engine), "rounds": rounds,
            "bulk": results, "single_row_deletes": single}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_path_deletes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[20, 100],
                        help="sizes: servers x 2,880 recent rows each (default 20 100: 57,600 and 288,000 rows)")
    parser.add_argument("--rounds", type=int, default=2, help="statements of each size with and without, alternating")
    parser.add_argument("--fleet", type=int, default=10_000, help="servers for the one-row deletes (0: skip)")
    parser.add_argument("--fleet-samples", type=int, default=12, help="samples per server for the one-row deletes")
    parser.add_argument("--statements", type=int, default=20, help="one-row deletes per side")
    parser.add_argument("--engine", default="native", choices=("native", "embedded"), help="a private engine")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/...)")
    args = parser.parse_args(argv)
    with bench_engine(kind=args.engine) as eng:
        result = run(eng.url, sizes=args.servers, rounds=args.rounds, fleet=args.fleet,
                     fleet_samples=args.fleet_samples, statements=args.statements, engine=args.engine)
    out = args.out or RESULTS_DIR / f"read-path-deletes-{args.engine}.json"
    write_json(out.parent, out.name, result)
    print(json.dumps({"bulk": [{k: b[k] for k in ("rows", "delete_best_seconds", "delete_with_vs_without",
                                                  "update_best_seconds", "update_with_vs_without")}
                               for b in result["bulk"]],
                      "single_row_deletes": result["single_row_deletes"] and
                      {k: result["single_row_deletes"][k] for k in ("servers", "median_ms", "with_vs_without")}}))


if __name__ == "__main__":
    main()
