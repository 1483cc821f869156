"""Revision 0010_interval_true_rates on a database with data: aggregates are recreated with
their rows (also where retention already dropped the raw rows) and every view built on them
comes back with its options, owner, grants and comments; downgrade keeps them too."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from schema_data import day_start, organization, server

from rmp import catalog, migrations

BEFORE = "0009_catalog"
REVISION = "0010_interval_true_rates"
COMPARED = ("sample_count", "cpu_avg_percent", "cpu_p95_percent", "memory_used_max_bytes",
            "network_rx_avg_bytes_per_sec", "network_tx_p99_bytes_per_sec")


@pytest.fixture(scope="module")
def fresh_url(engine, tmp_path_factory):
    with engine.fresh_database("rmp_interval_rates", tmp_path_factory.mktemp("interval-rates")) as url:
        yield url


def _rows(conn: psycopg.Connection, view: str) -> dict:
    cols = ", ".join(COMPARED)
    return {(r[0], r[1]): r[2:] for r in conn.execute(
        f"select bucket, server_id, {cols} from metrics.{view} order by 1, 2")}


def _site_rows(conn: psycopg.Connection) -> dict:
    return {(r[0], r[1]): r[2:] for r in conn.execute(
        "select bucket, site_id, sample_count, requests_total, bandwidth_total_mb from metrics.site_usage_daily")}


def _tiers_at(conn: psycopg.Connection) -> list[str]:
    """The catalog's tiers that exist (a tier a later revision adds is not there at BEFORE)."""
    return [t.name for t in catalog.TIERS
            if conn.execute("select to_regclass(%s) is not null", (t.qualified,)).fetchone()[0]]


def _same(before: dict, after: dict) -> None:
    assert after.keys() == before.keys()
    for key, values in before.items():
        assert after[key] == pytest.approx(values, rel=1e-12), key


def test_upgrade_and_downgrade_keep_aggregate_rows_and_dependent_views(fresh_url):
    assert migrations.upgrade(fresh_url, BEFORE) == BEFORE
    # 12 to 8 days ago: older than every tier's refresh window (the longest, 1 d, is 7 days),
    # as history that retention has reached always is (the catalog's invariant)
    start = day_start(12)
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        org = organization(conn, "acme")
        web = server(conn, org, "web-1")
        tiers = _tiers_at(conn)
        site = conn.execute("insert into tenancy.sites (organization_id, server_id, name) values (%s, %s, 'shop')"
                            " returning id", (org, web)).fetchone()[0]
        # four days of 30 s samples; 3,000 rx bytes each = 100 B/s in the rates before and after
        conn.execute(
            "insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_used_bytes,"
            " network_rx_bytes, network_tx_bytes)"
            " select %s, t, (extract(epoch from t)::bigint / 30 %% 400) / 4.0, 1000 + extract(epoch from t)::bigint %% 7,"
            " 3000, (extract(epoch from t)::bigint / 30 %% 5) * 30"
            " from generate_series(%s::timestamptz, %s::timestamptz - interval '30 s', interval '30 s') t",
            (web, start, start + timedelta(days=4)))
        conn.execute(
            "insert into metrics.site_usage (site_id, collected_at, requests, bandwidth_mb)"
            " select %s, t, 600, 1.5 from generate_series(%s::timestamptz, %s::timestamptz - interval '5 min',"
            " interval '5 min') t", (site, start, start + timedelta(days=4)))
        for name in (*tiers, "site_usage_daily"):
            conn.execute(f"call refresh_continuous_aggregate('metrics.{name}', null, null)")
        # retention already dropped the first day and a half of raw rows: only the aggregates remain
        conn.execute("delete from metrics.server_metrics where collected_at < %s", (start + timedelta(hours=36),))
        conn.execute("delete from metrics.site_usage where collected_at < %s", (start + timedelta(hours=36),))
        # an analyst's views on the aggregates: a chain, options, grants, comments
        conn.execute("create schema reports")
        conn.execute("create view reports.hourly_rx with (security_barrier = true) as"
                     " select bucket, server_id, network_rx_avg_bytes_per_sec from metrics.server_metrics_1h")
        conn.execute("create view reports.daily_peak as select server_id, max(network_rx_avg_bytes_per_sec) as peak"
                     " from reports.hourly_rx group by 1")
        conn.execute("grant select on reports.hourly_rx, reports.daily_peak to rmp_analyst")
        conn.execute("comment on view reports.hourly_rx is 'rx per hour'")
        conn.execute("comment on column reports.daily_peak.peak is 'highest hourly rx'")
        before = {name: _rows(conn, name) for name in tiers}
        before_sites = _site_rows(conn)
        peak = conn.execute("select * from reports.daily_peak").fetchall()
    assert len(before["server_metrics_1d"]) == 4 and len(before["server_metrics_1h"]) == 96

    assert migrations.upgrade(fresh_url) == migrations.head()
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        for name in tiers:
            _same(before[name], _rows(conn, name))
        _same(before_sites, _site_rows(conn))
        # kept rows (raw gone) say the samples covered 30 s each; recomputed ones read the column
        assert conn.execute(
            "select count(*), count(*) filter (where sampled_seconds = sample_count * 30)"
            " from metrics.server_metrics_1h").fetchone() == (96, 96)
        assert conn.execute("select sum(sampled_seconds) from metrics.site_usage_daily").fetchone()[0] == 4 * 86400
        assert conn.execute("select * from reports.daily_peak").fetchall() == peak
        assert conn.execute("select reloptions from pg_class where oid = 'reports.hourly_rx'::regclass"
                            ).fetchone()[0] == ["security_barrier=true"]
        assert conn.execute("select has_table_privilege('rmp_analyst', 'reports.daily_peak', 'select')"
                            ).fetchone()[0]
        assert conn.execute("select obj_description('reports.hourly_rx'::regclass, 'pg_class'),"
                            " col_description('reports.daily_peak'::regclass, 2)").fetchone() == (
            "rx per hour", "highest hourly rx")
        # the tenant views and the read path came back with the new columns
        assert conn.execute("select count(*) from tenant.server_metrics_1h where sampled_seconds = 3600"
                            ).fetchone()[0] == 96
        assert conn.execute("select count(*) from tenant.server_buckets(%s, %s, array[%s::bigint])",
                            (start, start + timedelta(days=4), web)).fetchone()[0] == 96 * 12
        # new samples at 10 s: the real-time part reads their interval
        now_hour = conn.execute("select date_trunc('hour', now()) + interval '1 hour'").fetchone()[0]
        conn.execute("insert into metrics.server_metrics (server_id, collected_at, network_rx_bytes, interval_seconds)"
                     " select %s, t, 5000, 10 from generate_series(%s::timestamptz, %s::timestamptz"
                     " + interval '3590 s', interval '10 s') t", (web, now_hour, now_hour))
        assert conn.execute("select network_rx_avg_bytes_per_sec, sampled_seconds from metrics.server_metrics_1h"
                            " where bucket = %s", (now_hour,)).fetchone() == (500.0, 3600.0)
        conn.execute("delete from metrics.server_metrics where collected_at >= %s", (now_hour,))

    assert migrations.downgrade(fresh_url, BEFORE) == BEFORE
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        for name in tiers:
            _same(before[name], _rows(conn, name))
        _same(before_sites, _site_rows(conn))
        assert conn.execute("select * from reports.daily_peak").fetchall() == peak
        assert conn.execute(
            "select count(*) from information_schema.columns where column_name = 'interval_seconds'"
            " and table_schema in ('metrics', 'tenant')").fetchone()[0] == 0
        assert conn.execute("select count(*) from tenant.server_metrics").fetchone()[0] == 2.5 * 2880

    assert migrations.upgrade(fresh_url) == migrations.head()
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        for name in tiers:
            _same(before[name], _rows(conn, name))
        assert conn.execute("select * from reports.daily_peak").fetchall() == peak
