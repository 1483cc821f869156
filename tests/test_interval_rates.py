"""Rates true to the sampling interval (issue 17.6), through the real ingest path.

Fixture (organization "rates", day D = two days ago, 10:00-12:00 UTC), loaded with
``load_file`` from files as an operator would:
    every-10s  CSV, interval_seconds 10:    rx 10,000 B (1,000 B/s), tx 2,500 (250 B/s), disk read 400 (40 B/s)
    every-60s  NDJSON, interval_seconds 60: rx 180,000 B (3,000 B/s), tx 30,000 (500 B/s), disk read 2,400 (40 B/s)
    mixed      CSV, hour 10 only: 180 samples at 10 s (1,000 B/s) from 10:00:00, then
               30 at 60 s (4,000 B/s) from 10:30:50: the hour moved 1.8 MB + 7.2 MB in 3,600 s = 2,500 B/s
               (a mean of the per-sample rates would say 1,428.6)
    every-30s  CSV without interval_seconds (the default 30 s): rx 6,000 B = 200 B/s
Sites: "minutely" sampled every 60 s (NDJSON, 60 requests a sample), "default" at the
site default 300 s (no column, 300 requests a sample): both 60 requests per minute.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, time, timedelta

import httpx
import psycopg
import pytest
from conftest import empty_data_tables
from psycopg import sql

from ingest.loader import load_file
from rmp import catalog
from transform.dbt_runner import run_dbt

D = (datetime.now(UTC) - timedelta(days=2)).date()
T10 = datetime.combine(D, time(10), tzinfo=UTC)
AS_OF = T10 + timedelta(hours=2, seconds=20)
# server -> (rx B/s, tx B/s) for the single-interval servers
STEADY = {"every-10s": (1000.0, 250.0), "every-60s": (3000.0, 500.0), "every-30s": (200.0, 100.0)}
MIXED_HOUR = 2500.0


def _samples() -> dict[str, list[dict]]:
    def steady(interval: int, rx: float, tx: float, start: datetime, count: int, with_interval: bool = True):
        rows = []
        for i in range(count):
            row = {"organization": "rates", "collected_at": (start + timedelta(seconds=interval * i)).isoformat(),
                   "cpu_percent": 10.0, "network_rx_bytes": int(rx * interval),
                   "network_tx_bytes": int(tx * interval), "disk_read_bytes": 40 * interval}
            if with_interval:
                row["interval_seconds"] = interval
            rows.append(row)
        return rows

    mixed = steady(10, 1000, 250, T10, 180) + steady(60, 4000, 250, T10 + timedelta(minutes=30, seconds=50), 30)
    return {
        "every-10s": steady(10, 1000, 250, T10, 720),
        "every-60s": steady(60, 3000, 500, T10, 120),
        "mixed": mixed,
        "every-30s": steady(30, 200, 100, T10, 240, with_interval=False),
    }


def _write_csv(path, server: str, rows: list[dict]) -> None:
    fields = ["server", *rows[0]]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({"server": server, **row})


def _write_ndjson(path, key: str, name: str, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps({key: name, **row}) + "\n")


@pytest.fixture(scope="module")
def loaded(migrated_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("interval-rates")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        empty_data_tables(conn)
        org = conn.execute("insert into tenancy.organizations (name, slug) values ('rates', 'rates') returning id"
                           ).fetchone()[0]
        ids = {name: conn.execute(
            "insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes, disk_total_bytes)"
            " values (%s, %s, 4, 8000, 100000) returning id", (org, name)).fetchone()[0] for name in _samples()}
        for site in ("minutely", "default"):
            conn.execute("insert into tenancy.sites (organization_id, server_id, name, max_requests_per_minute)"
                         " values (%s, %s, %s, 100)", (org, ids["every-10s"], site))
    for name, rows in _samples().items():
        path = work / f"{name}.{'ndjson' if name == 'every-60s' else 'csv'}"
        if name == "every-60s":
            _write_ndjson(path, "server", name, rows)
        else:
            _write_csv(path, name, rows)
        result = load_file(path, migrated_url)
        assert (result.loaded, result.rejected) == (len(rows), 0), result.rejections
    sites = work / "sites.ndjson"
    with open(sites, "w") as fh:
        for i in range(120):   # 10:00-12:00 every 60 s
            fh.write(json.dumps({"site": "minutely", "organization": "rates", "interval_seconds": 60,
                                 "collected_at": (T10 + timedelta(minutes=i)).isoformat(), "requests": 60}) + "\n")
        for i in range(24):    # every 300 s, no interval_seconds: the site default
            fh.write(json.dumps({"site": "default", "organization": "rates",
                                 "collected_at": (T10 + timedelta(minutes=5 * i)).isoformat(), "requests": 300}) + "\n")
    assert load_file(sites, migrated_url).loaded == 144
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for a in catalog.AGGREGATES:
            conn.execute(sql.SQL("call refresh_continuous_aggregate({}, null, null)").format(
                sql.Literal(a.qualified)))
    try:
        yield migrated_url, ids, org, work
    finally:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            empty_data_tables(conn)


def test_ingest_stores_each_samples_interval_and_the_default_when_absent(loaded):
    url, ids, _, _ = loaded
    with psycopg.connect(url) as conn:
        got = dict(conn.execute(
            "select server_id, array_agg(distinct interval_seconds) from metrics.server_metrics group by 1"))
        sites = dict(conn.execute("select s.name, array_agg(distinct u.interval_seconds) from metrics.site_usage u"
                                  " join tenancy.sites s on s.id = u.site_id group by 1"))
    assert got == {ids["every-10s"]: [10.0], ids["every-60s"]: [60.0], ids["mixed"]: [10.0, 60.0],
                   ids["every-30s"]: [30.0]}
    assert sites == {"minutely": [60.0], "default": [300.0]}


@pytest.mark.parametrize("tier", [t.name for t in catalog.TIERS])
def test_every_tier_gives_the_true_bytes_per_second(loaded, tier):
    url, ids, _, _ = loaded
    width = next(t.bucket for t in catalog.TIERS if t.name == tier)
    with psycopg.connect(url) as conn:
        rows = conn.execute(sql.SQL(
            "select server_id, bucket, sample_count, sampled_seconds,"
            " network_rx_avg_bytes_per_sec, network_rx_min_bytes_per_sec, network_rx_max_bytes_per_sec,"
            " network_rx_p50_bytes_per_sec, network_rx_p99_bytes_per_sec, network_tx_avg_bytes_per_sec,"
            " disk_read_avg_bytes_per_sec, disk_read_max_bytes_per_sec"
            " from {} order by 1, 2").format(sql.Identifier("metrics", tier))).fetchall()
    by_server: dict[int, list[tuple]] = {}
    for r in rows:
        by_server.setdefault(r[0], []).append(r[1:])
    covered = min(width, timedelta(hours=2)).total_seconds()   # the day bucket holds the two hours
    for name, (rx, tx) in STEADY.items():
        buckets = by_server[ids[name]]
        assert len(buckets) == max(1, int(timedelta(hours=2) / width)), name
        for _, count, seconds, avg, lo, hi, p50, p99, tx_avg, disk_avg, disk_max in buckets:
            assert (avg, lo, hi, p50, p99, tx_avg) == (rx, rx, rx, rx, rx, tx), (name, tier)
            assert (disk_avg, disk_max) == (40.0, 40.0)
            assert seconds == covered
            assert count * {"every-10s": 10, "every-60s": 60, "every-30s": 30}[name] == covered
    mixed = by_server[ids["mixed"]]
    if width >= timedelta(hours=1):
        assert len(mixed) == 1
        _, count, seconds, avg, lo, hi, p50, *_ = mixed[0]
        assert (count, seconds) == (210, 3600.0)
        assert avg == MIXED_HOUR
        assert (lo, hi, p50) == (1000.0, 4000.0, 1000.0)   # per-sample rates: 180 at 1,000, 30 at 4,000
    else:
        # finer buckets hold one interval each: 1,000 B/s until 10:30, 4,000 B/s after
        for bucket, _, _, avg, *_ in mixed:
            assert avg == (1000.0 if bucket < T10 + timedelta(minutes=30) else 4000.0), bucket


@pytest.fixture(scope="module")
def marts(loaded):
    url, _, _, work = loaded
    env = {"DBT_TARGET_PATH": str(work / "target"), "DBT_LOG_PATH": str(work / "logs")}
    result = run_dbt(["run", "--select", "+org_metrics_5m", "+org_metrics_hourly", "+org_metrics_daily",
                      "+org_tree_metrics_hourly", "+server_comparison", "+site_usage_daily", "+server_current",
                      "--vars", json.dumps({"as_of": AS_OF.isoformat()})], url, extra_env=env)
    assert result.exit_code == 0, result.exception
    return loaded


def _mart(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_organization_marts_sum_true_rates_and_weight_cpu_by_time(marts):
    url, _, org, _ = marts
    steady_rx = sum(rx for rx, _ in STEADY.values())   # 4,200 B/s
    hourly = _mart(url, "select hour_start_at, network_rx_avg_bytes_per_sec_total, network_tx_avg_bytes_per_sec_total"
                        " from marts.org_metrics_hourly where organization_id = %s order by 1", (org,))
    assert hourly == [(T10, steady_rx + MIXED_HOUR, 850.0 + 250.0),
                      (T10 + timedelta(hours=1), steady_rx, 850.0)]
    assert _mart(url, "select hour_start_at, network_rx_avg_bytes_per_sec_total from marts.org_tree_metrics_hourly"
                      " where organization_id = %s order by 1", (org,)) == [(h, rx) for h, rx, _ in hourly]
    daily = _mart(url, "select network_rx_avg_bytes_per_sec_total from marts.org_metrics_daily"
                       " where organization_id = %s", (org,))
    assert daily == [(steady_rx + MIXED_HOUR,)]
    five = dict(_mart(url, "select bucket_start_at, network_rx_avg_bytes_per_sec_total from marts.org_metrics_5m"
                           " where organization_id = %s", (org,)))
    assert five[T10] == steady_rx + 1000.0 and five[T10 + timedelta(minutes=30)] == steady_rx + 4000.0
    # every server at 10 % cpu: the organization's mean is 10 % however often each one samples
    assert {r[0] for r in _mart(url, "select cpu_avg_percent from marts.org_metrics_hourly")} == {10.0}


def test_server_comparison_and_site_usage_rates(marts):
    url, ids, _, _ = marts
    comparison = dict((r[0], r[1:]) for r in _mart(
        url, "select server_id, network_rx_avg_bytes_per_sec, network_tx_avg_bytes_per_sec"
             " from marts.server_comparison"))
    assert comparison[ids["every-10s"]] == STEADY["every-10s"]
    assert comparison[ids["every-60s"]] == STEADY["every-60s"]
    assert comparison[ids["mixed"]][0] == MIXED_HOUR
    sites = dict(_mart(url, "select site_name, requests_per_minute_avg from marts.site_usage_daily"))
    assert sites == {"minutely": 60.0, "default": 60.0}


def test_staleness_follows_each_servers_interval(marts):
    url, ids, _, _ = marts
    # as_of (12:00:20) is 30 s after the last 10 s sample (11:59:50), 80 s after the last 60 s one
    # (11:59:00) and 50 s after the last 30 s one; the mixed server stopped at 10:59:50
    stale = dict(_mart(url, "select server_id, is_stale from marts.server_current"))
    assert stale[ids["every-10s"]] is True    # 30 s > 2 x 10 s
    assert stale[ids["every-60s"]] is False   # 80 s < 2 x 60 s
    assert stale[ids["every-30s"]] is False   # 50 s < 2 x 30 s
    assert stale[ids["mixed"]] is True


def test_bad_intervals_are_quarantined_with_file_line_and_field(loaded, tmp_path):
    url, ids, _, _ = loaded
    at = T10 + timedelta(days=1)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(
        "server,organization,collected_at,network_rx_bytes,interval_seconds\n"
        f"every-10s,rates,{at.isoformat()},100,10\n"
        f"every-10s,rates,{(at + timedelta(seconds=10)).isoformat()},100,0\n"
        f"every-10s,rates,{(at + timedelta(seconds=20)).isoformat()},100,90000\n"
        f"every-10s,rates,{(at + timedelta(seconds=30)).isoformat()},100,ten\n"
        f"every-10s,rates,{(at + timedelta(seconds=40)).isoformat()},100,\n")
    result = load_file(bad_csv, url)
    assert (result.loaded, result.rejected) == (2, 3)
    assert [(r.line, r.field, r.reason) for r in result.rejections] == [
        (3, "interval_seconds", "out of range 0.05-86400: 0.0"),
        (4, "interval_seconds", "out of range 0.05-86400: 90000.0"),
        (5, "interval_seconds", "expected a number, found 'ten'"),
    ]
    bad_json = tmp_path / "bad.ndjson"
    bad_json.write_text(
        json.dumps({"server": "every-60s", "organization": "rates", "collected_at": at.isoformat(),
                    "network_rx_bytes": 100, "interval_seconds": -60}) + "\n"
        + json.dumps({"server": "every-60s", "organization": "rates", "network_rx_bytes": 100,
                      "collected_at": (at + timedelta(minutes=1)).isoformat()}) + "\n")
    result = load_file(bad_json, url)
    assert (result.loaded, result.rejected) == (1, 1)
    assert [(r.line, r.field) for r in result.rejections] == [(1, "interval_seconds")]
    with psycopg.connect(url) as conn:
        # the empty field and the absent one took the default; the rejections are in the quarantine table
        assert conn.execute("select interval_seconds from metrics.server_metrics where collected_at in (%s, %s)"
                            " order by collected_at", (at + timedelta(seconds=40), at + timedelta(minutes=1))
                            ).fetchall() == [(30.0,), (30.0,)]
        assert conn.execute("select source_file, line_number, field from metrics.rejected_rows"
                            " where field = 'interval_seconds' order by source_file desc, line_number").fetchall() == [
            (str(bad_json.resolve()), 1, "interval_seconds"), (str(bad_csv.resolve()), 3, "interval_seconds"),
            (str(bad_csv.resolve()), 4, "interval_seconds"), (str(bad_csv.resolve()), 5, "interval_seconds")]
        conn.execute("delete from metrics.server_metrics where collected_at >= %s", (at,))


def test_api_serves_the_true_rates(marts, tmp_path):
    from test_api import Server

    from api import tokens
    from rmp import tenancy

    url, ids, org, _ = marts
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("select 1 from pg_roles where rolname = 'api_rates'").fetchone():
            conn.execute("drop owned by api_rates")
            conn.execute("drop role api_rates")
        conn.execute("create role api_rates nologin")
        tenancy.grant(conn, "rates", "api_rates")
        token = tokens.create(conn, "api_rates")[1]
    server = Server(url, tmp_path / "api.log", rate_limit=1000)
    window = {"start": T10.isoformat(), "end": (T10 + timedelta(hours=2)).isoformat()}
    try:
        with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            def points(path: str, **params) -> list[dict]:
                r = c.get(path, params={**window, **params})
                assert r.status_code == 200, r.text
                return r.json()["points"]

            hourly = points(f"/servers/{ids['mixed']}/metrics", granularity="1h")
            assert [(p["sample_count"], p["sampled_seconds"], p["network_rx_avg_bytes_per_sec"]) for p in hourly] \
                == [(210, 3600.0, MIXED_HOUR)]
            minute = points(f"/servers/{ids['every-60s']}/metrics", granularity="1m")
            assert {(p["network_rx_avg_bytes_per_sec"], p["disk_read_avg_bytes_per_sec"]) for p in minute} \
                == {(3000.0, 40.0)}
            raw = points(f"/servers/{ids['every-10s']}/metrics", granularity="raw", limit=2)
            assert [(p["network_rx_bytes"], p["interval_seconds"]) for p in raw] == [(10_000, 10.0)] * 2
            organization = points(f"/organizations/{org}/metrics", granularity="1h")
            assert [p["network_rx_avg_bytes_per_sec_total"] for p in organization] == [
                sum(rx for rx, _ in STEADY.values()) + MIXED_HOUR, sum(rx for rx, _ in STEADY.values())]
        assert server.log_problems() == []
    finally:
        server.stop()
        with psycopg.connect(url, autocommit=True) as conn:
            tokens_ = conn.execute("select count(*) from tenancy.api_tokens where role_name = 'api_rates'")
            assert tokens_.fetchone()[0] == 1
            conn.execute("delete from tenancy.api_tokens where role_name = 'api_rates'")
            conn.execute("drop owned by api_rates")
            conn.execute("drop role api_rates")
