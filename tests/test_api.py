"""The metrics HTTP API against a running uvicorn (`rmp api serve`), with a real HTTP client.

Fixture: organization A with sub-organization A1, and B; one server each with
240 raw samples (every 30 s for the 2 hours before T0, cpu = base + i % 10),
every aggregate refreshed, a licence, anomalies and a forecast per server, the
marts built. Token roles (NOLOGIN, switched to by the API with SET LOCAL
ROLE): api_a (granted A, so also A1), api_b (B), api_none (no privileges),
api_ing (rmp_ingest). Expected values are read from the same views by SQL
under SET ROLE to the token's role.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import empty_data_tables
from psycopg import sql
from tenant_fixture import create_roles, drop_roles, organizations_with_servers, refresh_aggregates

from api import series, tokens
from api.responses import records
from rmp import catalog, tenancy
from rmp.embedded import free_port
from transform.dbt_runner import run_dbt

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
START = T0 - timedelta(hours=2)
ROLES = ("api_a", "api_b", "api_none", "api_ing")
SAMPLES = 240


def _load(conn: psycopg.Connection) -> dict[str, int]:
    ids = organizations_with_servers(conn)
    q = conn.execute
    for key, base in (("A", 10), ("A1", 40), ("B", 70)):
        sid = ids[f"server_{key}"]
        q("insert into tenancy.licences (organization_id, max_servers) values (%s, 1)", (ids[key],))
        q("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_used_bytes, "
          "memory_percent, disk_used_bytes, disk_percent, network_rx_bytes, network_tx_bytes) "
          "select %s, %s + g * interval '30 seconds', %s + g %% 10, 4000 + g, 50, 1000, 1, 30 * g, 60 "
          "from generate_series(0, %s) g", (sid, START, base, SAMPLES - 1))
        q("insert into analytics.anomalies (server_id, metric, detector, started_at, observed, expected, score, "
          "direction, resolution) values (%s, 'cpu_percent', 'stl_mad', %s, 99, %s, 7.5, 'up', '5m'), "
          "(%s, 'disk_percent', 'stl_mad', %s, 5, 1, 6.0, 'up', '1h')",
          (sid, T0 - timedelta(hours=1), base, sid, T0 - timedelta(days=20)))
        points = [{"at": (T0 + timedelta(days=d)).isoformat(), "yhat": base + d, "lo": base + d - 1,
                   "hi": base + d + 1} for d in range(30)]
        q("insert into analytics.forecasts (entity_type, entity_id, metric, model, horizon_start, forecast, trend) "
          "values ('server', %s, 'disk_percent', 'linear', %s, %s, 'increasing')",
          (sid, T0, json.dumps(points)))
    refresh_aggregates(conn, (t.name for t in catalog.TIERS))
    return ids


class Server:
    """`rmp api serve` in a subprocess, its output in a log file."""

    def __init__(self, url: str, log: Path, rate_limit: int) -> None:
        self.port = free_port()
        self.log = log
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**__import__("os").environ, "DATABASE_URL": url}
        env.pop("RMP_READ_DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rmp_app", "api", "serve", "--port", str(self.port),
             "--rate-limit", str(rate_limit)],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/openapi.json", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the API did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)

    def log_problems(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines()
                if "ERROR" in line or "Traceback" in line or "Exception" in line]


@pytest.fixture(scope="module")
def api(migrated_url, tmp_path_factory):
    """(client factory, ids, url, server): the fixture loaded, marts built, tokens made, the API running."""
    work = tmp_path_factory.mktemp("api")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        empty_data_tables(conn)
        create_roles(conn, ROLES, login=False)
        ids = _load(conn)
        tenancy.grant(conn, "org-a", "api_a")
        tenancy.grant(conn, "org-b", "api_b")
        conn.execute("grant rmp_ingest to api_ing")
        tok = {role: tokens.create(conn, role)[1] for role in ROLES}
    result = run_dbt(["run", "--vars", json.dumps({"as_of": (T0 + timedelta(minutes=1)).isoformat()})],
                     migrated_url, work_dir=work)
    assert result.exit_code == 0, result.exception
    server = Server(migrated_url, work / "api.log", rate_limit=10_000)

    def client(role: str | None = "api_a", **headers) -> httpx.Client:
        if role is not None:
            headers["Authorization"] = f"Bearer {tok[role]}"
        return httpx.Client(base_url=server.base, headers=headers, timeout=30)

    try:
        yield client, ids, migrated_url, server, tok
    finally:
        server.stop()
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            empty_data_tables(conn)
            drop_roles(conn, ROLES)


def _as_role(url: str, role: str, query, params=()) -> tuple[list[str], list[tuple]]:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        cur = conn.execute(query, params)
        return [d.name for d in cur.description], cur.fetchall()


def _series_sql(relation: str, time_column: str, columns: list[str], key_column: str):
    return sql.SQL("select {t} as time, {c} from {r} where {k} = %s and {t} >= %s and {t} < %s order by {t}").format(
        t=sql.Identifier(time_column), c=sql.SQL(", ").join(map(sql.Identifier, columns)), r=sql.SQL(relation),
        k=sql.Identifier(key_column))


# ------------------------------------------------------------- values

@pytest.mark.parametrize("granularity", ["raw", "1m", "5m", "1h", "1d"])
def test_server_metrics_equal_the_tenant_views(api, granularity):
    client, ids, url, _, _ = api
    sid = ids["server_A"]
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=1)
    with client() as c:
        r = c.get(f"/servers/{sid}/metrics", params={"start": start.isoformat(), "end": end.isoformat(),
                                                      "granularity": granularity})
    assert r.status_code == 200, r.text
    body = r.json()
    relation, time_column, _ = series.SERVER_TIERS[granularity]
    columns = series.RAW_COLUMNS if granularity == "raw" else series.AGGREGATE_COLUMNS
    names, rows = _as_role(url, "api_a", _series_sql(relation, time_column, columns, "server_id"), (sid, start, end))
    assert body["points"] == records(names, rows)
    assert len(body["points"]) == {"raw": 240, "1m": 120, "5m": 24, "1h": 2, "1d": 1}[granularity]
    assert body["next_after"] is None
    if granularity == "1h":
        # 120 samples per hour, cpu 10 + i % 10: mean 14.5 in both hours
        assert [(p["sample_count"], p["cpu_avg_percent"], p["cpu_max_percent"]) for p in body["points"]] == [
            (120, 14.5, 19.0), (120, 14.5, 19.0)]


@pytest.mark.parametrize("span", [timedelta(hours=2), timedelta(hours=24), timedelta(days=3), timedelta(days=30),
                                  timedelta(days=120)])
def test_default_granularity_follows_the_span(api, span):
    # the catalog's window -> tier mapping, as Grafana and sql/queries (its values: tests/test_catalog.py)
    client, ids, _, _, _ = api
    with client() as c:
        r = c.get(f"/servers/{ids['server_A']}/metrics", params={"start": (T0 - span).isoformat(),
                                                                 "end": T0.isoformat()})
    assert r.json()["granularity"] == catalog.tier_for_window(span).resolution


def test_raw_pages_by_keyset_and_the_pages_add_up(api):
    client, ids, url, _, _ = api
    sid = ids["server_A"]
    params = {"start": START.isoformat(), "end": T0.isoformat(), "granularity": "raw", "limit": 100}
    pages = []
    with client() as c:
        r = c.get(f"/servers/{sid}/metrics", params=params)
        while True:
            assert r.status_code == 200
            pages.append(r.json()["points"])
            if r.json()["next_after"] is None:
                assert "link" not in r.headers
                break
            assert r.headers["link"].endswith('rel="next"')
            r = c.get(r.headers["link"].split(">")[0].lstrip("<"))
    assert [len(p) for p in pages] == [100, 100, 40]
    names, rows = _as_role(url, "api_a", _series_sql("tenant.server_metrics", "collected_at", series.RAW_COLUMNS,
                                                     "server_id"), (sid, START, T0))
    assert [p for page in pages for p in page] == records(names, rows)


@pytest.mark.parametrize("granularity", ["5m", "1h", "1d"])
@pytest.mark.parametrize("include_children", [False, True])
def test_organization_series_equal_sql_over_the_aggregates(api, granularity, include_children):
    client, ids, url, _, _ = api
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=1)
    with client() as c:
        r = c.get(f"/organizations/{ids['A']}/metrics", params={
            "start": start.isoformat(), "end": end.isoformat(), "granularity": granularity,
            "include_children": str(include_children).lower()})
    assert r.status_code == 200, r.text
    servers = [ids["server_A"], ids["server_A1"]] if include_children else [ids["server_A"]]
    # straight from the aggregate: weighted cpu mean, peak, sums over servers
    names, rows = _as_role(url, "api_a", sql.SQL(
        "select bucket as time, count(*) as count_servers_reporting, sum(sample_count) as sample_count,"
        " sum(cpu_avg_percent * sample_count) / sum(sample_count) as cpu_avg_percent,"
        " max(cpu_max_percent) as cpu_max_percent,"
        " sum(memory_used_avg_bytes) as memory_used_avg_bytes_total, sum(memory_used_max_bytes) as mm,"
        " sum(disk_used_avg_bytes) as da, sum(disk_used_max_bytes) as dm,"
        " sum(network_rx_avg_bytes_per_sec) as rx, sum(network_tx_avg_bytes_per_sec) as tx"
        " from {} where server_id = any(%s) and bucket >= %s and bucket < %s group by 1 order by 1").format(
        sql.Identifier("tenant", f"server_metrics_{granularity}")), (servers, start, end))
    got = [tuple(p.values()) for p in r.json()["points"]]
    assert [g[:3] for g in got] == [(records(names, [row])[0]["time"], row[1], row[2]) for row in rows]
    assert [g[3:] for g in got] == pytest.approx([tuple(row[3:]) for row in rows], rel=1e-12)
    assert len(got) == {"5m": 24, "1h": 2, "1d": 1}[granularity]
    if include_children:
        assert {g[1] for g in got} == {2}


def test_anomalies_forecast_quota_and_current_equal_their_tables(api):
    client, ids, url, _, _ = api
    sid, org = ids["server_A1"], ids["A1"]
    with client() as c:
        anomalies = c.get(f"/servers/{sid}/anomalies", params={"since": (T0 - timedelta(days=2)).isoformat()})
        forecast = c.get(f"/servers/{sid}/forecast", params={"metric": "disk_percent", "days": 3})
        quota = c.get(f"/organizations/{org}/quota")
        current = c.get(f"/servers/{sid}/current")
    assert [(a["metric"], a["observed"], a["resolution"]) for a in anomalies.json()["anomalies"]] == [
        ("cpu_percent", 99.0, "5m")]   # the one 20 days old is before `since`
    body = forecast.json()
    assert (body["model"], body["trend"], body["days"]) == ("linear", "increasing", 3)
    assert [(p["yhat"], p["lo"], p["hi"]) for p in body["points"]] == [(40.0, 39.0, 41.0), (41.0, 40.0, 42.0),
                                                                        (42.0, 41.0, 43.0)]
    names, rows = _as_role(url, "api_a", sql.SQL("select {} from marts.org_quota_status where organization_id = %s "
                                                 "order by quota_name").format(
        sql.SQL(", ").join(map(sql.Identifier, series.QUOTA_COLUMNS))), (org,))
    assert quota.json()["quotas"] == records(names, rows)
    servers_quota = next(q for q in quota.json()["quotas"] if q["quota_name"] == "servers")
    assert (servers_quota["used_value"], servers_quota["is_exceeded"], servers_quota["is_full"],
            servers_quota["remaining_clamped"]) == (1, False, True, 0)
    names, rows = _as_role(url, "api_a", sql.SQL("select {} from marts.server_current where server_id = %s").format(
        sql.SQL(", ").join(map(sql.Identifier, series.CURRENT_COLUMNS))), (sid,))
    assert current.json() == records(names, rows)[0]
    assert current.json()["cpu_percent"] == 40 + (SAMPLES - 1) % 10


def test_csv_by_accept_header_carries_the_same_values(api):
    client, ids, _, _, _ = api
    params = {"start": START.isoformat(), "end": T0.isoformat(), "granularity": "5m"}
    with client() as c:
        as_json = c.get(f"/servers/{ids['server_A']}/metrics", params=params).json()["points"]
    with client(accept="text/csv") as c:
        r = c.get(f"/servers/{ids['server_A']}/metrics", params=params)
        refused = c.get(f"/servers/{ids['server_A']}/metrics", params=params, headers={"accept": "application/xml"})
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].split(",") == ["time", *series.AGGREGATE_COLUMNS]
    assert len(lines) == 1 + len(as_json) == 25
    first = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert first["time"] == as_json[0]["time"]
    assert float(first["cpu_avg_percent"]) == as_json[0]["cpu_avg_percent"]
    assert refused.status_code == 406


def test_etag_and_cache_control_follow_the_aggregate(api):
    client, ids, _, _, _ = api
    params = {"start": START.isoformat(), "end": T0.isoformat()}
    with client() as c:
        first = c.get(f"/servers/{ids['server_A']}/metrics", params={**params, "granularity": "1h"})
        again = c.get(f"/servers/{ids['server_A']}/metrics", params={**params, "granularity": "1h"},
                      headers={"if-none-match": first.headers["etag"]})
        raw = c.get(f"/servers/{ids['server_A']}/metrics", params={**params, "granularity": "raw"})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    cache = first.headers["cache-control"]
    assert cache.startswith("private, max-age=")
    assert 0 <= int(cache.split("=")[1]) <= 3600   # the hourly aggregate's next refresh
    assert "last-modified" in first.headers
    assert raw.headers["cache-control"] == "private, no-cache"


_REFRESH_JOB = ("select job_id from timescaledb_information.jobs where proc_name = 'policy_refresh_continuous_aggregate'"
                " and hypertable_name = 'server_metrics_1m'")


def test_a_refresh_running_during_a_request_is_no_error(api):
    """While TimescaleDB runs a job it keeps the job's next_start at -infinity (and a job that never
    succeeded has last_successful_finish there), which no client date type holds: every request
    that met a running refresh was a 500 (the API bench's intermittent 500, ~1 in 1,000 requests
    under 8 concurrent clients). The stats row is set as a running job has it."""
    client, ids, url, server, _ = api
    with psycopg.connect(url) as conn:   # the function itself, in one transaction rolled back
        job = conn.execute(_REFRESH_JOB).fetchone()[0]
        assert conn.execute("update _timescaledb_internal.bgw_job_stat set next_start = '-infinity',"
                            " last_successful_finish = '-infinity' where job_id = %s", (job,)).rowcount == 1
        assert conn.execute("select refreshed_at, next_refresh_at from tenant.aggregate_refreshes()"
                            " where aggregate_name = 'server_metrics_1m'").fetchone() == (None, None)
        conn.rollback()
    with psycopg.connect(url, autocommit=True) as conn:
        saved = conn.execute("select next_start::text, last_successful_finish::text from _timescaledb_internal.bgw_job_stat"
                             " where job_id = %s", (job,)).fetchone()
        conn.execute("update _timescaledb_internal.bgw_job_stat set next_start = '-infinity' where job_id = %s",
                     (job,))
        try:
            with client() as c:
                r = c.get(f"/servers/{ids['server_A']}/metrics",
                          params={"start": START.isoformat(), "end": T0.isoformat(), "granularity": "1m"})
        finally:
            conn.execute("update _timescaledb_internal.bgw_job_stat set next_start = %s::timestamptz,"
                         " last_successful_finish = %s::timestamptz where job_id = %s and not isfinite(next_start)",
                         (*saved, job))
    assert r.status_code == 200, r.text
    assert len(r.json()["points"]) == 120
    assert server.log_problems() == []


# ------------------------------------------------------------- authorization

def test_a_token_never_sees_another_organization_on_any_endpoint(api):
    client, ids, _, _, _ = api
    b_server, b_org = ids["server_B"], ids["B"]
    paths = [f"/servers/{b_server}/metrics", f"/servers/{b_server}/anomalies",
             f"/servers/{b_server}/forecast?metric=disk_percent", f"/servers/{b_server}/current",
             f"/organizations/{b_org}/metrics", f"/organizations/{b_org}/metrics?include_children=true",
             f"/organizations/{b_org}/quota"]
    with client("api_a") as a, client("api_b") as b:
        for path in paths:
            r = a.get(path)
            assert r.status_code == 404, path
            assert list(r.json()) == ["detail"]   # nothing but "no server/organization <id>"
            assert b.get(path).status_code == 200, path
        # B's token sees nothing of A's subtree either, even through include_children
        assert b.get(f"/organizations/{ids['A']}/metrics?include_children=true").status_code == 404
        # A's subtree series never contains B's server: 2 servers at most
        tree = a.get(f"/organizations/{ids['A']}/metrics", params={
            "start": START.isoformat(), "end": T0.isoformat(), "include_children": "true"}).json()["points"]
        assert max(p["count_servers_reporting"] for p in tree) == 2


def test_missing_unknown_and_revoked_tokens_get_401(api):
    client, ids, url, _, tok = api
    path = f"/servers/{ids['server_A']}/current"
    with client(None) as c:
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"authorization": "Basic YTpi"}).status_code == 401
        assert c.get(path, headers={"authorization": "Bearer rmp_nope"}).status_code == 401
        r = c.get(path, headers={"authorization": "Bearer ' or 1=1 --"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    with psycopg.connect(url, autocommit=True) as conn:
        extra_id, extra = tokens.create(conn, "api_a", label="to revoke")
        with client(None, authorization=f"Bearer {extra}") as c:
            assert c.get(path).status_code == 200
            tokens.revoke(conn, str(extra_id))
            assert c.get(path).status_code == 401


def test_roles_without_read_privileges_get_403(api):
    client, ids, _, _, _ = api
    for role in ("api_none", "api_ing"):
        with client(role) as c:
            for path in (f"/servers/{ids['server_A']}/metrics", f"/organizations/{ids['A']}/quota"):
                assert c.get(path).status_code == 403, (role, path)


def test_hostile_parameters_get_4xx_and_leave_no_error_in_the_log(api):
    client, ids, _, server, _ = api
    sid = ids["server_A"]
    hostile = [
        "/servers/1;drop table tenancy.servers/metrics",
        "/servers/1%20or%201=1/metrics",
        "/servers/-1/metrics",
        "/servers/0/current",
        "/servers/99999999999999999999999/metrics",
        f"/servers/{sid}/metrics?granularity=2m",
        f"/servers/{sid}/metrics?granularity=raw';--",
        f"/servers/{sid}/metrics?start=yesterday",
        f"/servers/{sid}/metrics?start=0001-01-01T00:00:00Z&end=10000-01-01T00:00:00Z",
        f"/servers/{sid}/metrics?start=2025-01-02T00:00:00Z&end=2025-01-01T00:00:00Z",
        f"/servers/{sid}/metrics?limit=0",
        f"/servers/{sid}/metrics?limit=1000000",
        f"/servers/{sid}/metrics?after=%00",
        f"/servers/{sid}/forecast?metric=cpu'%3Bdrop",
        f"/servers/{sid}/forecast?metric=disk_percent&days=31",
        f"/servers/{sid}/forecast?metric=disk_percent&days=0",
        f"/servers/{sid}/forecast",
        f"/servers/{sid}/anomalies?since=" + "9" * 5000,
        f"/organizations/{ids['A']}/metrics?granularity=raw",
        f"/organizations/{ids['A']}/metrics?include_children=maybe",
    ]
    with client() as c:
        for path in hostile:
            r = c.get(path)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        # a huge but valid range is answered from the daily tier, within the point limit
        r = c.get(f"/servers/{sid}/metrics", params={"start": "1970-01-01T00:00:00Z", "end": "2200-01-01T00:00:00Z"})
        assert r.status_code == 200 and r.json()["granularity"] == "1d" and len(r.json()["points"]) == 1
    assert server.log_problems() == []


def test_past_the_rate_limit_a_token_gets_429_with_retry_after(api, tmp_path):
    client, ids, url, _, tok = api
    limited = Server(url, tmp_path / "limited.log", rate_limit=3)
    try:
        with httpx.Client(base_url=limited.base, headers={"Authorization": f"Bearer {tok['api_a']}"}) as c:
            codes = [c.get(f"/servers/{ids['server_A']}/current").status_code for _ in range(4)]
            r = c.get(f"/servers/{ids['server_A']}/current")
        with httpx.Client(base_url=limited.base, headers={"Authorization": f"Bearer {tok['api_b']}"}) as other:
            other_code = other.get(f"/servers/{ids['server_B']}/current").status_code
    finally:
        limited.stop()
    assert codes == [200, 200, 200, 429]
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    assert other_code == 200   # the limit is per token
    assert limited.log_problems() == []


def test_openapi_docs_are_served(api):
    client, _, _, _, _ = api
    with client(None) as c:
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
    assert sorted(paths) == ["/organizations/{organization_id}/metrics", "/organizations/{organization_id}/quota",
                             "/servers/{server_id}/anomalies", "/servers/{server_id}/current",
                             "/servers/{server_id}/forecast", "/servers/{server_id}/metrics"]
