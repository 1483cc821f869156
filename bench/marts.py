"""dbt marts benchmark: `dbt build` time and the analyst's quota query, per fleet size.

For each fleet size (servers x days of 30 s samples, generated in the
database by bench.dataset), on one engine in one run:

* load the raw rows and materialize the aggregates the marts read
  (the 1 h and 1 d tiers), timed apart: in production the refresh policies
  do that work, not dbt;
* `dbt build` (every staging and mart view plus every data test) through
  transform.dbt_runner, as `rmp dbt build` runs it;
* latency (p50/p95 over ``repeats``) of
  ``select * from marts.org_quota_status where organization_id = %s``
  for a random organization of the fleet.

Sizes are side by side with their ratio to the smallest, so the report says
how dbt build and the quota view scale with the fleet. Default: 100 and
1,000 servers x 1 day. 1,000 servers x 7 days (20 M raw rows) crashed the
embedded engine (WebAssembly) at 57 % of the load, about 11.5 M rows; pass
``-p marts.days=7`` against a real server (DATABASE_URL) for that size. Servers are spread
over a three-level organization tree (one root, ``subs`` children, one
grandchild each) with licences, so the rollup and quota views have work.
Jobs are paused so the engine's scheduler does not refresh behind the timings.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from bench import dataset
from bench.queries import paused_jobs
from bench.results import RESULTS_DIR, write_json
from rmp import db
from rmp.catalog import tier
from transform.dbt_runner import run_dbt

FLEET_SLUG = "bench-marts"
QUICK = {"sizes": [20], "days": 2, "repeats": 10}
QUOTA_QUERY = "select * from marts.org_quota_status where organization_id = %s"


def _organization_tree(conn: psycopg.Connection, server_ids: list[int], subs: int) -> list[int]:
    """Move the fleet's servers round-robin into root + ``subs`` children + a grandchild each,
    every organization licensed; returns the organization ids."""
    with conn.transaction():
        root = conn.execute("select organization_id from tenancy.servers where id = %s",
                            [server_ids[0]]).fetchone()[0]
        orgs = [root]
        for k in range(subs):
            child = conn.execute(
                "insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) returning id",
                [f"{FLEET_SLUG}-{k}", f"{FLEET_SLUG}-{k}", root],
            ).fetchone()[0]
            grandchild = conn.execute(
                "insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) returning id",
                [f"{FLEET_SLUG}-{k}-a", f"{FLEET_SLUG}-{k}-a", child],
            ).fetchone()[0]
            orgs += [child, grandchild]
        conn.execute(
            "update tenancy.servers set organization_id = (%s::bigint[])[1 + (id %% %s)] where id = any(%s)",
            [orgs, len(orgs), server_ids],
        )
        conn.execute(
            "insert into tenancy.licences (organization_id, max_servers, max_cpu_cores, max_memory_bytes) "
            "select o, 5 + (o %% 20), 64, 512::bigint * 1073741824 from unnest(%s::bigint[]) as o",
            [orgs],
        )
    return orgs


def _latency_ms(conn: psycopg.Connection, orgs: list[int], repeats: int, rng: random.Random) -> dict:
    conn.execute(QUOTA_QUERY, [orgs[0]]).fetchall()  # warm the plan and cache once
    samples = []
    for _ in range(repeats):
        org = rng.choice(orgs)
        t = time.perf_counter()
        rows = conn.execute(QUOTA_QUERY, [org]).fetchall()
        samples.append((time.perf_counter() - t) * 1000)
    if len(rows) != 7:
        raise RuntimeError(f"org_quota_status returned {len(rows)} rows for one organization, not 7")
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2),
        "repeats": repeats,
    }


def _one_size(url: str, servers: int, days: int, subs: int, repeats: int, rng: random.Random,
              progress: Progress, work: Path) -> dict:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    out: dict = {"servers": servers, "days": days}
    with db.connect(url, autocommit=True) as conn:
        task = progress.add_task(f"{servers} servers: load {days} d", total=servers * days * 2880)
        ids = dataset.create_fleet(conn, FLEET_SLUG, servers)
        orgs = _organization_tree(conn, ids, subs)
        t = time.perf_counter()
        out["rows"] = dataset.load_metrics(conn, ids, start, end, on_step=lambda n: progress.advance(task, n))
        out["load_seconds"] = round(time.perf_counter() - t, 2)
        out["organizations"] = len(orgs)

        task = progress.add_task(f"{servers} servers: refresh 1h, 1d aggregates", total=2)
        t = time.perf_counter()
        for resolution in ("1h", "1d"):  # the tiers the marts read
            conn.execute("call refresh_continuous_aggregate(%s, %s, %s)", [tier(resolution).qualified, start, end])
            progress.advance(task)
        out["aggregate_refresh_seconds"] = round(time.perf_counter() - t, 2)

    task = progress.add_task(f"{servers} servers: dbt build", total=1)
    t = time.perf_counter()
    result = run_dbt(["build", "--quiet"], url, work_dir=work)
    out["dbt_build_seconds"] = round(time.perf_counter() - t, 2)
    progress.advance(task)
    if not result.success:
        errors = {k: v for k, v in result.failures().items() if result.statuses()[k] != "skipped"}
        raise RuntimeError(f"dbt build failed at {servers} servers: {errors or result.exception}")
    out["dbt_nodes"] = len(result.statuses())

    with db.connect(url, autocommit=True) as conn:
        out["org_quota_status_latency"] = _latency_ms(conn, orgs, repeats, rng)
    return out


def run(
    url: str | None = None,
    *,
    sizes: list[int] | tuple[int, ...] = (100, 1000),
    days: int = 1,
    subs: int = 3,
    repeats: int = 50,
    cleanup: bool | None = None,
    out_dir: Path = RESULTS_DIR,
    console: Console | None = None,
) -> dict:
    """Measure every size; returns the results and writes ``out_dir/marts.json``.

    ``url``: a migrated engine; None starts a private one (bench.engine).
    ``cleanup``: delete the benchmark organizations afterwards (default: only
    on a shared engine, i.e. when ``url`` was given).
    """
    if url is None:
        from bench.engine import bench_engine

        with bench_engine() as eng:
            return run(eng.url, sizes=sizes, days=days, subs=subs, repeats=repeats, cleanup=False,
                       out_dir=out_dir, console=console)
    sizes = sorted(int(s) for s in sizes)
    if not sizes or sizes[0] < 1 or days < 1 or subs < 0 or repeats < 1:
        raise ValueError("sizes, days and repeats must be at least 1, subs at least 0")
    console = console or Console(stderr=True)
    cleanup = True if cleanup is None else cleanup
    rng = random.Random(20240601)
    result: dict = {
        "benchmark": "marts",
        "parameters": {"sizes": sizes, "days": days, "subs": subs, "repeats": repeats},
        "query": QUOTA_QUERY,
        "sizes": [],
    }
    with db.connect(url, autocommit=True) as jobs_conn, paused_jobs(jobs_conn), Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as progress, tempfile.TemporaryDirectory(prefix="rmp-bench-dbt-") as work:
        try:
            for servers in sizes:
                # Each size starts from an empty fleet: only its own rows are in the engine.
                jobs_conn.execute("delete from tenancy.organizations where slug like %s", [FLEET_SLUG + "%"])
                result["sizes"].append(
                    _one_size(url, servers, days, subs, repeats, rng, progress, Path(work))
                )
        finally:
            if cleanup:
                jobs_conn.execute("delete from tenancy.organizations where slug like %s", [FLEET_SLUG + "%"])
    base = result["sizes"][0]
    for row in result["sizes"]:
        row["ratio_to_smallest"] = {
            "servers": round(row["servers"] / base["servers"], 2),
            "dbt_build_seconds": round(row["dbt_build_seconds"] / base["dbt_build_seconds"], 2),
            "org_quota_status_p50_ms": round(
                row["org_quota_status_latency"]["p50_ms"] / base["org_quota_status_latency"]["p50_ms"], 2),
        }
    _print(console, result)
    write_json(out_dir, "marts.json", result)
    return result


def _print(console: Console, result: dict) -> None:
    from rich.table import Table

    table = Table(title="dbt marts: build time and quota query latency")
    for col in ("servers x days", "raw rows", "load s", "agg refresh s", "dbt build s", "build ratio",
                "quota p50 ms", "quota p95 ms", "p50 ratio"):
        table.add_column(col, justify="right")
    for r in result["sizes"]:
        lat = r["org_quota_status_latency"]
        table.add_row(f"{r['servers']} x {r['days']}", f"{r['rows']:,}", f"{r['load_seconds']:.1f}",
                      f"{r['aggregate_refresh_seconds']:.1f}", f"{r['dbt_build_seconds']:.1f}",
                      f"{r['ratio_to_smallest']['dbt_build_seconds']:.2f}", f"{lat['p50_ms']:.1f}",
                      f"{lat['p95_ms']:.1f}", f"{r['ratio_to_smallest']['org_quota_status_p50_ms']:.2f}")
    console.print(table)

