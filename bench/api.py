"""The metrics HTTP API: p50/p95 of GET /servers/{id}/metrics for 1,000 points,
next to the same SQL run in psql, measured in one run on one engine.

A fleet of ``servers`` servers with ``days`` days of 30 s samples is loaded
and the aggregates refreshed; a tenant role is granted the fleet and given a
token; `rmp api serve` runs in a subprocess. For each case (the 1-minute
aggregate, 1,000 buckets; raw, 1,000 samples) ``requests`` HTTP requests
over one keep-alive connection are timed (client side: HTTP, auth lookup,
SET LOCAL ROLE, query, JSON), then psql runs the endpoint's SQL the same
number of times in one session (`\\timing`, as that role, inside a
transaction with SET LOCAL ROLE) — the database's share of the time. The
source system's target: p95 < 200 ms.

Then ``clients`` concurrent clients (threads, one keep-alive connection each)
send ``seconds`` seconds of the same requests over every server while
TimescaleDB's policy jobs run as scheduled; every answer that is not 200 is
counted by status and the server log's errors are listed. (This is how the
intermittent 500 was found: a request that met a running refresh job, whose
next_start TimescaleDB keeps at -infinity; docs/api.md.)
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from psycopg import sql
from rich.console import Console

from bench import dataset
from rmp import db
from rmp.catalog import tier

FLEET_SLUG = "bench-api"
ROLE = "bench_api_reader"
TARGET_P95_MS = 200.0
POINTS = 1000
QUICK = {"servers": 2, "days": 1, "requests": 20, "clients": 4, "seconds": 10}

# case -> (granularity, relation, time column, columns, span that holds POINTS points)
CASES = {
    "1m aggregate, 1,000 buckets": ("1m", f"tenant.{tier('1m').name}", "bucket", POINTS * tier("1m").bucket),
    "raw, 1,000 samples": ("raw", "tenant.server_metrics", "collected_at", timedelta(seconds=30 * POINTS)),
}


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def _endpoint_sql(relation: str, time_column: str, columns: list[str], server_id: int, start: datetime,
                  end: datetime) -> str:
    """The API's page query with the values inlined (what psql runs)."""
    t = sql.Identifier(time_column)
    return sql.SQL(
        "select {t} as time, {cols} from {rel} where server_id = {sid} and {t} >= {start} and {t} < {end}"
        " order by {t} limit {limit}").format(
        t=t, cols=sql.SQL(", ").join(map(sql.Identifier, columns)), rel=sql.SQL(relation),
        sid=sql.Literal(server_id), start=sql.Literal(start), end=sql.Literal(end),
        limit=sql.Literal(POINTS + 1)).as_string(None)


def _psql_times(url: str, statement: str, repeats: int) -> list[float]:
    """Milliseconds psql reports (\\timing) for ``statement`` run ``repeats`` times as ROLE."""
    script = "\\timing on\n" + "".join(
        f"begin;\nset local role {ROLE};\n{statement};\ncommit;\n" for _ in range(repeats))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(["psql", url, "-X", "-q", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", "-f", f.name],
                             check=True, capture_output=True, text=True).stdout
    finally:
        Path(f.name).unlink()
    times = [float(m) for m in re.findall(r"^Time: ([0-9.]+) ms", out, flags=re.M)]
    # four timed statements per repeat: begin, set, select, commit — keep the select's
    return times[2::4]


def _concurrent(base: str, token: str, paths: list[tuple[str, dict]], clients: int, seconds: float) -> dict:
    """``clients`` threads sending ``paths`` round-robin for ``seconds``: statuses counted, latencies kept."""
    statuses: collections.Counter = collections.Counter()
    ms: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            i = n
            while time.monotonic() < stop:
                path, params = paths[i % len(paths)]
                i += 1
                t0 = time.perf_counter()
                try:
                    status = c.get(path, params=params).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    statuses[status] += 1
                    ms.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(statuses.values())
    return {"clients": clients, "seconds": seconds, "requests": total,
            "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
            "non_200": total - statuses[200], **(_percentiles(ms) if ms else {})}


def run(url: str, console: Console, servers: int = 10, days: int = 3, requests: int = 200,
        clients: int = 8, seconds: float = 120, cleanup: bool = True) -> dict:
    from api import tokens
    from api.series import AGGREGATE_COLUMNS, RAW_COLUMNS
    from rmp import tenancy
    from rmp.embedded import free_port

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    with db.connect(url, autocommit=True) as conn:
        ids = dataset.create_fleet(conn, FLEET_SLUG, servers)
        console.print(f"api: loading {servers} servers x {days} days")
        rows = dataset.load_metrics(conn, ids, start, end)
        conn.execute("call refresh_continuous_aggregate(%s, %s, %s)", (tier("1m").qualified, start, end))
        if not conn.execute("select 1 from pg_roles where rolname = %s", (ROLE,)).fetchone():
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(ROLE)))
        tenancy.grant(conn, FLEET_SLUG, ROLE)
        token = tokens.create(conn, ROLE, label="bench")[1]
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115 - the server writes it until terminated
    proc = subprocess.Popen([sys.executable, "-m", "rmp_app", "api", "serve", "--port", str(port),
                             "--rate-limit", "1000000", "--database-url", url], stdout=log, stderr=subprocess.STDOUT)
    results: dict[str, dict] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/openapi.json", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rmp api serve did not start: {Path(log.name).read_text()}") from None
                time.sleep(0.2)
        server_id = ids[len(ids) // 2]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for label, (granularity, relation, time_column, span) in CASES.items():
                window_start, window_end = end - span - timedelta(hours=1), end - timedelta(hours=1)
                params = {"granularity": granularity, "start": window_start.isoformat(),
                          "end": window_end.isoformat(), "limit": POINTS}
                path = f"/servers/{server_id}/metrics"
                first = client.get(path, params=params)
                first.raise_for_status()
                points = len(first.json()["points"])
                api_ms = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    client.get(path, params=params).raise_for_status()
                    api_ms.append((time.perf_counter() - t0) * 1000)
                columns = RAW_COLUMNS if granularity == "raw" else AGGREGATE_COLUMNS
                psql_ms = _psql_times(url, _endpoint_sql(relation, time_column, columns, server_id, window_start,
                                                         window_end), requests)
                api, psql = _percentiles(api_ms), _percentiles(psql_ms)
                results[label] = {
                    "points": points, "api": api, "psql": psql,
                    "api_over_psql_p50": round(api["p50_ms"] / psql["p50_ms"], 2),
                    "api_over_psql_p95": round(api["p95_ms"] / psql["p95_ms"], 2),
                    "meets_target": api["p95_ms"] < TARGET_P95_MS,
                }
                console.print(f"api {label}: {points} points, API p50 {api['p50_ms']} / p95 {api['p95_ms']} ms, "
                              f"psql p50 {psql['p50_ms']} / p95 {psql['p95_ms']} ms")
        paths = [(f"/servers/{sid}/metrics", {"granularity": granularity, "start": (end - span - timedelta(hours=1))
                  .isoformat(), "end": (end - timedelta(hours=1)).isoformat(), "limit": POINTS})
                 for sid in ids for granularity, _, _, span in CASES.values()]
        concurrent = _concurrent(base, token, paths, clients, seconds)
        time.sleep(1.0)   # uvicorn logs a traceback after it has sent the 500
        errors = sorted({line.strip() for line in Path(log.name).read_text().splitlines()
                         if line.startswith(("psycopg.", "Traceback")) or "Error:" in line})
        concurrent["server_log_errors"] = [e for e in errors if e != "Traceback (most recent call last):"][:10]
        console.print(f"api concurrent: {clients} clients x {seconds:g} s, {concurrent['requests']} requests, "
                      f"statuses {concurrent['statuses']}")
    except Exception as exc:
        time.sleep(1.0)   # uvicorn logs a traceback after it has sent the 500
        text = Path(log.name).read_text()
        at = text.find("Traceback")
        raise RuntimeError(f"{exc}; server log: {text[at:at + 4000] if at >= 0 else text[-1500:]}") from exc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        Path(log.name).unlink(missing_ok=True)
        if cleanup:
            with db.connect(url, autocommit=True) as conn:
                conn.execute("delete from tenancy.organizations where slug = %s", (FLEET_SLUG,))
                conn.execute("delete from tenancy.api_tokens where role_name = %s", (ROLE,))
                conn.execute("delete from tenancy.tenant_grants where login = %s", (ROLE,))
    return {"servers": servers, "days": days, "rows": rows, "requests": requests,
            "target_p95_ms": TARGET_P95_MS, "cases": results, "concurrent": concurrent}
