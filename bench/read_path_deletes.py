"""What the fleet read path's triggers cost a DELETE or UPDATE of recent rows.

``python -m bench.read_path_deletes`` fills metrics.server_metrics with one day of
30-second samples ending at the current minute (every row inside the two-day window
of metrics.organization_cpu_hourly) for each of ``--servers`` (one organization), then
runs ``delete from metrics.server_metrics`` of all of them, and an UPDATE of every
row's cpu_percent, alternately with the DELETE/UPDATE triggers of
sql/idempotent/read-path-changes.sql and without them, ``--rounds`` times, on the same
engine and the same data; once with revision 0011's own triggers (a copy of them here:
an upsert per changed row, every server re-derived per statement) unless ``--no-0011``. After each statement with the triggers it checks that
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
from rmp import compact
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


# Revision 0011's DELETE/UPDATE path as it was (sql/idempotent/organization-cpu-hourly.sql and
# server-last-point.sql at commit e23c85b), under other names, for the side-by-side figure.
TRIGGERS_0011 = """
create or replace function metrics.bench_0011_row_change() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    insert into metrics.organization_cpu_hourly as hourly
        (organization_id, hour, cpu_percent_sum, cpu_sample_count)
    select servers.organization_id, change.hour, sum(change.s), sum(change.n)
    from (
        select old.server_id, public.time_bucket(interval '1 hour', old.collected_at) as hour,
               -coalesce({old_cpu}::numeric, 0) as s, -({old_cpu} is not null)::int as n
        where old.collected_at >= now() - interval '2 days'
        union all
        select new.server_id, public.time_bucket(interval '1 hour', new.collected_at),
               coalesce({new_cpu}::numeric, 0), ({new_cpu} is not null)::int
        where tg_op = 'UPDATE' and new.collected_at >= now() - interval '2 days'
    ) as change
    join tenancy.servers as servers on servers.id = change.server_id
    group by 1, 2
    order by 1, 2
    on conflict (organization_id, hour) do update set
        cpu_percent_sum = hourly.cpu_percent_sum + excluded.cpu_percent_sum,
        cpu_sample_count = hourly.cpu_sample_count + excluded.cpu_sample_count;
    return null;
end
$f$;
create or replace function metrics.bench_0011_rederive() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    create temp table if not exists rmp_server_latest_truth
        (like metrics.server_latest) on commit drop;
    delete from rmp_server_latest_truth;
    insert into rmp_server_latest_truth select * from metrics.server_last_point_from_raw();
    delete from metrics.server_latest as latest
    where not exists (select 1 from rmp_server_latest_truth as truth where truth.server_id = latest.server_id);
    insert into metrics.server_latest as latest
    select * from rmp_server_latest_truth as truth order by truth.server_id
    on conflict (server_id) do update set
        collected_at = excluded.collected_at,
        cpu_percent = excluded.cpu_percent,
        memory_percent = excluded.memory_percent,
        memory_used_bytes = excluded.memory_used_bytes,
        disk_percent = excluded.disk_percent,
        disk_used_bytes = excluded.disk_used_bytes,
        load_1m = excluded.load_1m,
        interval_seconds = excluded.interval_seconds
    where (latest.collected_at, latest.cpu_percent, latest.memory_percent, latest.memory_used_bytes,
           latest.disk_percent, latest.disk_used_bytes, latest.load_1m, latest.interval_seconds)
          is distinct from
          (excluded.collected_at, excluded.cpu_percent, excluded.memory_percent, excluded.memory_used_bytes,
           excluded.disk_percent, excluded.disk_used_bytes, excluded.load_1m, excluded.interval_seconds);
    return null;
end
$f$;
create trigger bench_0011_delete after delete on {raw}
    for each row when (old.collected_at >= now() - interval '2 days')
    execute function metrics.bench_0011_row_change();
create trigger bench_0011_update after update on {raw}
    for each row when (old.collected_at >= now() - interval '2 days' or new.collected_at >= now() - interval '2 days')
    execute function metrics.bench_0011_row_change();
create trigger bench_0011_change after update or delete on {raw}
    for each statement execute function metrics.bench_0011_rederive();
"""
DROP_0011 = ("drop trigger if exists bench_0011_delete on {raw};"
             " drop trigger if exists bench_0011_update on {raw};"
             " drop trigger if exists bench_0011_change on {raw};"
             " drop function if exists metrics.bench_0011_row_change();"
             " drop function if exists metrics.bench_0011_rederive();")
SIDES = {"with_triggers": "on", "without_triggers": "off", "with_0011_triggers": "0011"}


# one-row DELETEs of the newest sample of servers spread over the organization, each timed by
# the server and committed; the milliseconds go to the setting rmp_bench.ms
ONE_ROW_DELETES = """
do $bench$
declare
    ids bigint[] := array(select id from tenancy.servers where organization_id = %s order by id);
    started timestamptz := clock_timestamp();
    t0 timestamptz;
    ms text := '';
    sid bigint;
begin
    for k in 1..%s loop
        sid := ids[1 + (k * 37) %% cardinality(ids)];
        t0 := clock_timestamp();
        delete from metrics.server_metrics where server_id = sid and collected_at =
            (select max(m.collected_at) from metrics.server_metrics as m where m.server_id = sid);
        ms := ms || ' ' || (extract(epoch from clock_timestamp() - t0) * 1000)::numeric(12, 3);
        commit;
    end loop;
    -- the whole loop too: the embedded engine's clock ticks in whole milliseconds
    ms := (extract(epoch from clock_timestamp() - started) * 1000)::numeric(12, 3) || ms;
    perform set_config('rmp_bench.ms', ms, false);
end
$bench$
"""


def _triggers(conn: psycopg.Connection, on: bool | str) -> None:
    """The change triggers of sql/idempotent/read-path-changes.sql (True / "on"), none
    (False / "off"), or 0011's in their place ("0011")."""
    raw = compact.QUALIFIED     # the hypertable under the view metrics.server_metrics
    cpu = {side: compact.decoded_column("cpu_percent", side) for side in ("old", "new")}
    conn.execute(DROP_0011.replace("{raw}", raw))
    if on in (True, "on"):
        conn.execute((SQL_DIR / "idempotent" / "read-path-changes.sql").read_text())
        return
    for name in CHANGE_TRIGGERS:
        conn.execute(f"drop trigger if exists {name} on {raw}")
    if on == "0011":
        conn.execute(TRIGGERS_0011.replace("{raw}", raw).replace("{old_cpu}", cpu["old"])
                     .replace("{new_cpu}", cpu["new"]))


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


def bulk(conn: psycopg.Connection, servers: int, rounds: int, with_0011: bool, say=print) -> dict:
    """DELETE / UPDATE of ``servers`` x 2,880 recent rows, with and without the triggers
    (``rounds`` times each, alternating), and once with 0011's."""
    org = _organization(conn, f"Delete bench {servers}", servers)
    rows = servers * 2880
    sides = [side for side in SIDES if with_0011 or side != "with_0011_triggers"]
    seconds: dict[str, dict[str, list[float]]] = {op: {side: [] for side in sides} for op in ("delete", "update")}
    mismatches: dict[str, list[int]] = {side: [] for side in sides if side != "without_triggers"}
    try:
        for r in range(rounds):
            for side in sides:
                on = SIDES[side]
                if on == "0011" and r > 0:
                    continue
                conn.execute("truncate metrics.server_samples")
                conn.execute(SAMPLES, (2880, org))
                conn.execute("analyze metrics.server_metrics, metrics.server_latest, metrics.organization_cpu_hourly, tenancy.servers")
                _triggers(conn, on)
                s, n = _timed(conn, "update metrics.server_metrics set cpu_percent = cpu_percent + 0.25")
                assert n == rows, (n, rows)
                seconds["update"][side].append(round(s, 3))
                if side in mismatches:
                    mismatches[side].append(conn.execute(MISMATCHES).fetchone()[0])
                s, n = _timed(conn, "delete from metrics.server_metrics")
                assert n == rows, (n, rows)
                seconds["delete"][side].append(round(s, 3))
                if side in mismatches:
                    mismatches[side].append(conn.execute(MISMATCHES).fetchone()[0])
                _triggers(conn, True)
                say(f"{rows:,} rows, round {r + 1} {side}: update {seconds['update'][side][-1]} s, "
                    f"delete {seconds['delete'][side][-1]} s")
    finally:
        _triggers(conn, True)
        conn.execute("truncate metrics.server_samples")
        conn.execute("delete from tenancy.organizations where id = %s", (org,))
    result: dict = {"servers": servers, "rows": rows, "seconds": seconds, "mismatches_after_each_statement": mismatches}
    for op, sides in seconds.items():
        best = {side: min(v) for side, v in sides.items()}
        result[f"{op}_best_seconds"] = best
        result[f"{op}_rows_per_s"] = {side: round(rows / s) for side, s in best.items()}
        result[f"{op}_with_vs_without"] = round(best["with_triggers"] / best["without_triggers"], 2)
        if "with_0011_triggers" in best:
            result[f"{op}_0011_vs_with"] = round(best["with_0011_triggers"] / best["with_triggers"], 2)
    return result


def single_rows(conn: psycopg.Connection, servers: int, samples: int, statements: int, with_0011: bool,
                say=print) -> dict:
    """``statements`` one-row DELETEs (each of another server's newest sample) among ``servers``."""
    org = _organization(conn, f"Single delete bench {servers}", servers)
    ms: dict[str, list[float]] = {side: [] for side in SIDES if with_0011 or side != "with_0011_triggers"}
    mean: dict[str, float] = {}
    try:
        conn.execute("truncate metrics.server_samples")
        conn.execute(SAMPLES.replace("interval '30 seconds'", "interval '10 minutes'"), (samples, org))
        conn.execute("analyze metrics.server_metrics, metrics.server_latest, metrics.organization_cpu_hourly, tenancy.servers")
        # with the triggers first (the derived tables are checked after them), then the other sides
        for side in [side for side in SIDES if side in ms]:
            _triggers(conn, SIDES[side])
            # timed in the server (a client's round trip is not what differs), each in its own transaction
            conn.execute(ONE_ROW_DELETES % (int(org), int(statements)))
            loop_ms, *each = conn.execute("select current_setting('rmp_bench.ms')").fetchone()[0].split()
            ms[side] = [round(float(v), 3) for v in each]
            mean[side] = round(float(loop_ms) / statements, 3)    # commits included
            if side == "with_triggers":
                mismatches = conn.execute(MISMATCHES).fetchone()[0]
        say(f"one-row deletes among {servers:,} servers, mean ms per statement (commit included): "
            + ", ".join(f"{side} {v}" for side, v in mean.items()))
    finally:
        _triggers(conn, True)
        conn.execute("truncate metrics.server_samples")
        conn.execute("delete from tenancy.organizations where id = %s", (org,))
    result = {"servers": servers, "samples_per_server": samples, "statements_per_side": statements, "ms": ms,
              "median_ms": {side: statistics.median(v) for side, v in ms.items()},
              "mean_ms_with_commit": mean,
              "with_vs_without": round(mean["with_triggers"] / mean["without_triggers"], 2),
              "mismatches_after": mismatches}
    if "with_0011_triggers" in mean:
        result["0011_vs_with"] = round(mean["with_0011_triggers"] / mean["with_triggers"], 2)
    return result


def run(url: str, *, sizes: list[int], rounds: int, fleet: int, fleet_samples: int, statements: int,
        with_0011: bool = True, engine: str = "native", say=print) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        results = [bulk(conn, servers, rounds, with_0011, say) for servers in sizes]
        single = single_rows(conn, fleet, fleet_samples, statements, with_0011, say) if fleet else None
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
    parser.add_argument("--no-0011", dest="with_0011", action="store_false",
                        help="skip the side with revision 0011's own triggers (an upsert per changed row)")
    parser.add_argument("--engine", default="native", choices=("native", "embedded"), help="a private engine")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/...)")
    args = parser.parse_args(argv)
    with bench_engine(kind=args.engine) as eng:
        result = run(eng.url, sizes=args.servers, rounds=args.rounds, fleet=args.fleet,
                     fleet_samples=args.fleet_samples, statements=args.statements,
                     with_0011=args.with_0011, engine=args.engine)
    out = args.out or RESULTS_DIR / f"read-path-deletes-{args.engine}.json"
    write_json(out.parent, out.name, result)
    print(json.dumps({"bulk": [{k: v for k, v in b.items() if k.endswith(("best_seconds", "_vs_with", "_vs_without"))}
                               for b in result["bulk"]],
                      "single_row_deletes": result["single_row_deletes"] and
                      {k: v for k, v in result["single_row_deletes"].items() if k.endswith(("_ms", "_commit", "_vs_with",
                                                                                             "_vs_without"))}}))


if __name__ == "__main__":
    main()
