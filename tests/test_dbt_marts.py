"""dbt marts on a hand-built fixture: exact values in every mart.

The fixture, written out below, is loaded with SQL into the tenancy and
metrics tables of a migrated engine; the aggregates are refreshed and
`dbt build` runs once for the module (through transform.dbt_runner) with `as_of`
pinned, so staleness, billing months and the capacity window are fixed.

Organizations (three levels under acme):
    1 acme (licence)  ->  2 acme-eu (licence: max 1 server)  ->  3 acme-eu-paris (no licence)
    4 globex (licence: 0 applications, 8 cpu cores)
Metrics: day D = two days ago (inside every retention tier), 10:00-12:00 UTC.
as_of = D 12:00:20 UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

import psycopg
import pytest
from conftest import empty_data_tables

from transform.dbt_runner import run_dbt

GIB = 2**30
D = (datetime.now(UTC) - timedelta(days=2)).date()
AS_OF = datetime.combine(D, time(12, 0, 20), tzinfo=UTC)
MONTH_START = D.replace(day=1)
MONTH_END = (MONTH_START + timedelta(days=32)).replace(day=1) - timedelta(days=1)

ORGANIZATIONS = [  # id, name, slug, parent
    (1, "acme", "acme", None),
    (2, "acme-eu", "acme-eu", 1),
    (3, "acme-eu-paris", "acme-eu-paris", 2),
    (4, "globex", "globex", None),
]
SERVERS = {  # id: name, org, cores, memory, disk, status
    1: ("acme-web-1", 1, 8, 32 * GIB, 500 * GIB, "active"),
    2: ("acme-db-1", 1, 8, 32 * GIB, 1000 * GIB, "active"),
    3: ("acme-old", 1, 4, 16 * GIB, 100 * GIB, "decommissioned"),
    4: ("eu-1", 2, 4, 16 * GIB, 200 * GIB, "active"),
    5: ("eu-2", 2, 4, 16 * GIB, 200 * GIB, "maintenance"),
    6: ("paris-1", 3, 2, 8 * GIB, 100 * GIB, "active"),
    7: ("globex-1", 4, 16, 64 * GIB, 2000 * GIB, "active"),
}
# Network bytes per 30 s sample: rx, tx (rate = bytes / 30 s).
NETWORK = {1: (3000, 1500), 2: (6000, 3000), 4: (900, 300), 5: (300, 150), 6: (600, 600)}


def at(hh: int, mm: int = 0, ss: int = 0, day: date = D) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=UTC)


def every_30s(start: datetime, end_inclusive: datetime) -> list[datetime]:
    n = int((end_inclusive - start).total_seconds() // 30) + 1
    return [start + timedelta(seconds=30 * i) for i in range(n)]


def server_samples() -> list[tuple]:
    """(server_id, collected_at, cpu, memory_used, disk_used) of the fixture."""
    rows: list[tuple] = []
    # s1: flat all along, last sample 12:00:00.
    rows += [(1, t, 30.0, 8 * GIB, 100 * GIB) for t in every_30s(at(10), at(12))]
    # s2: memory grows from 16 to 24 GiB at 11:00, last sample 12:00:00.
    rows += [(2, t, 10.0, 16 * GIB, 400 * GIB) for t in every_30s(at(10), at(10, 59, 30))]
    rows += [(2, t, 10.0, 24 * GIB, 400 * GIB) for t in every_30s(at(11), at(12))]
    # s4: cpu 0,10,...,90 repeating in hour 10 (p95 = 90), 20 in hour 11; last 11:59:30.
    rows += [
        (4, t, float(i % 10 * 10), 4 * GIB, 170 * GIB)
        for i, t in enumerate(every_30s(at(10), at(10, 59, 30)))
    ]
    rows += [(4, t, 20.0, 4 * GIB, 170 * GIB) for t in every_30s(at(11), at(11, 59, 30))]
    # s5: quiet, in maintenance; last 11:59:00 (80 s before as_of: stale).
    rows += [(5, t, 5.0, 2 * GIB, 20 * GIB) for t in every_30s(at(10), at(11, 59))]
    # s6: stopped reporting at 10:59:30.
    rows += [(6, t, 50.0, 2 * GIB, 10 * GIB) for t in every_30s(at(10), at(10, 59, 30))]
    return rows


SITE_SAMPLES = [  # site, offset s, memory mb, cpu, bandwidth mb, requests, response ms, is_up
    (1, 0, 400, 20, 100, 60, 100, True),
    (1, 30, 600, 30, 100, 60, 200, True),
    (1, 60, 500, 40, 100, 60, 300, True),
    (1, 90, 300, 30, 100, 60, 400, False),
    (2, 0, 100, 10, 5000, 30, 50, True),
    (2, 30, 300, 20, 5000, 30, 50, True),
]


def load_fixture(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.cursor().executemany(
            "insert into tenancy.organizations (id, name, slug, parent_id, created_at) "
            "overriding system value values (%s, %s, %s, %s, %s)",
            [(*o, at(0, day=D - timedelta(days=60))) for o in ORGANIZATIONS],
        )
        conn.execute(
            "insert into tenancy.users (id, email, full_name) overriding system value "
            "values (1, 'ada@example.com', 'Ada')"
        )
        conn.cursor().executemany(
            "insert into tenancy.servers (id, name, organization_id, hostname, cpu_cores, "
            "memory_total_bytes, disk_total_bytes, status) overriding system value "
            "values (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(sid, name, org, f"{name}.example", cores, mem, disk, status)
             for sid, (name, org, cores, mem, disk, status) in SERVERS.items()],
        )
        conn.cursor().executemany(
            "insert into tenancy.licences (organization_id, max_servers, max_applications, "
            "max_databases, max_deployments_per_month, max_cpu_cores, max_memory_bytes, "
            "max_disk_bytes, billing_period_start, billing_period_end) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (1, 2, 2, 5, 3, 16, 128 * GIB, None, D - timedelta(days=5), D + timedelta(days=24)),
                (2, 1, None, None, None, None, None, None, None, None),
                (4, 10, 0, None, None, 8, None, None, D - timedelta(days=20), D + timedelta(days=9)),
            ],
        )
        conn.cursor().executemany(
            "insert into tenancy.applications (id, organization_id, server_id, name) "
            "overriding system value values (%s, %s, %s, %s)",
            [(1, 1, 1, "shop"), (2, 1, 2, "api"), (3, 1, None, "jobs"), (4, 2, 4, "eu-shop"),
             (5, 3, 6, "paris-shop"), (6, 3, 6, "paris-api")],
        )
        conn.cursor().executemany(
            "insert into tenancy.databases (id, organization_id, server_id, name, engine) "
            "overriding system value values (%s, %s, %s, %s, %s)",
            [(1, 1, 2, "shop-db", "postgresql"), (2, 3, 6, "paris-db", "mysql")],
        )
        conn.cursor().executemany(
            "insert into tenancy.deployments (organization_id, application_id, status, "
            "build_seconds, deployed_at, created_at) values (%s, %s, %s, %s, %s, %s)",
            [
                # acme: three in its billing period (at its limit), one before it
                (1, 1, "success", 40.0, at(9, 1), at(9)),
                (1, 2, "failed", 12.0, None, at(9, 10)),
                (1, 3, "pending", None, None, at(9, 20)),
                (1, 1, "success", 35.0, at(9, day=D - timedelta(days=10)), at(9, day=D - timedelta(days=10))),
                # paris (no licence): one in as_of's calendar month, one 40 days earlier
                (3, 5, "success", 20.0, at(8, 1), at(8)),
                (3, 6, "success", 20.0, None, at(8, day=D - timedelta(days=40))),
            ],
        )
        conn.cursor().executemany(
            "insert into tenancy.sites (id, organization_id, user_id, server_id, name, max_memory_mb, "
            "max_cpu_percent, max_disk_mb, max_bandwidth_mb, max_requests_per_minute) "
            "overriding system value values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(1, 1, None, 1, "acme.example", 512, 50, 10000, 1000, 100),
             (2, None, 1, 4, "ada.example", None, None, None, None, None)],
        )
        with conn.cursor().copy(
            "copy metrics.server_metrics (server_id, collected_at, cpu_percent, load_1m, cpu_cores, "
            "memory_total_bytes, memory_used_bytes, memory_percent, disk_total_bytes, "
            "disk_used_bytes, disk_percent, network_rx_bytes, network_tx_bytes) from stdin"
        ) as copy:
            for sid, t, cpu, mem, disk in server_samples():
                _, _, cores, mem_total, disk_total, _ = SERVERS[sid]
                rx, tx = NETWORK[sid]
                copy.write_row((sid, t, cpu, cpu / 10, cores, mem_total, mem, 100 * mem / mem_total,
                                disk_total, disk, 100 * disk / disk_total, rx, tx))
        # sites sampled every 30 s here (interval_seconds 30; the site default is 300 s)
        conn.cursor().executemany(
            "insert into metrics.site_usage (site_id, collected_at, memory_used_mb, cpu_percent, "
            "disk_used_mb, bandwidth_mb, requests, active_requests, response_time_ms, is_up, interval_seconds) "
            "values (%s, %s, %s, %s, 1, %s, %s, 0, %s, %s, 30)",
            [(s, at(10) + timedelta(seconds=off), m, c, b, r, rt, up)
             for s, off, m, c, b, r, rt, up in SITE_SAMPLES],
        )
    for view in ("server_metrics_1h", "server_metrics_1d", "site_usage_daily"):
        conn.execute(f"call refresh_continuous_aggregate('metrics.{view}', null, null)")
    load_analytics_fixture(conn)


# analytics results (what `rmp anomalies` / `rmp forecast` store), for server_anomalies and capacity_forecasts
ANOMALIES = [  # id, server, metric, detector, resolution, start, end, observed, expected, score, direction
    (1, 1, "cpu_percent", "stl_esd", "1h", at(10), at(11), 95.0, 30.0, 9.5, "up"),
    (2, 1, "cpu_percent", "baseline_rule", "5m", at(10, 5), at(10, 5), 95.0, 30.0, 2.2, "up"),
    (3, 4, "disk_percent", "stl_esd", None, at(11), None, 20.0, 85.0, 6.1, "down"),
    (4, 7, "generic", "stl_mad", "1m", at(10, 1), at(10, 3), 5.0, 1.0, 7.0, "up"),
]
FORECASTS = [  # id, type, entity, metric, model, horizon start, threshold, crossing, above, mase, naive, low, coverage
    (1, "server", 1, "disk_percent", "linear", at(12), 90.0, at(12, day=D + timedelta(days=30)), False,
     0.5, 0.8, False, 0.9375),
    # an older forecast of the same series: not the latest, not in the mart
    (2, "server", 1, "disk_percent", "ets_daily", at(11), 90.0, None, False, 0.7, 0.8, False, 0.9),
    (3, "organization", 4, "disk_used_bytes", "seasonal_naive", at(12), 1000.0 * GIB, None, False,
     1.2, 1.2, True, 0.96),
    (4, "organization", 1, "memory_used_bytes", "ets_median", at(12), 128.0 * GIB, None, False,
     0.4, 0.9, False, 0.95),
]


def load_analytics_fixture(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.cursor().executemany(
            "insert into analytics.anomalies (id, server_id, metric, detector, resolution, started_at, ended_at,"
            " observed, expected, score, direction) overriding system value"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", ANOMALIES)
        conn.cursor().executemany(
            "insert into analytics.forecasts (id, entity_type, entity_id, metric, model, horizon_start, threshold,"
            " threshold_crossing_at, is_above_threshold, mase, seasonal_naive_mase, is_low_confidence,"
            " interval_coverage, interval_method, trend) overriding system value"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'backtest', 'stable')", FORECASTS)


@pytest.fixture(scope="module")
def built(migrated_url, tmp_path_factory):
    """The fixture loaded and `dbt build` run once; yields (url, build result, dbt work dir)."""
    work_dir = tmp_path_factory.mktemp("dbt")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        load_fixture(conn)
    try:
        vars_ = json.dumps({"as_of": AS_OF.isoformat()})
        result = run_dbt(["build", "--vars", vars_], migrated_url, work_dir=work_dir)
        yield migrated_url, result, work_dir
    finally:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            empty_data_tables(conn)


def rows(url: str, query: str, params: tuple = ()) -> list[dict]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(query, params).fetchall()


def test_build_passes_every_model_and_test(built):
    _, result, _ = built
    assert result.success, result.failures()
    assert result.failures() == {}
    statuses = result.statuses()
    marts = [k for k in statuses if k.startswith("model.rmp.") and ".stg_" not in k]
    assert sorted(m.split(".")[-1] for m in marts) == [
        "capacity_forecasts", "org_metrics_5m", "org_metrics_daily", "org_metrics_hourly", "org_quota_status",
        "org_resource_usage", "org_tree_metrics_5m", "org_tree_metrics_daily", "org_tree_metrics_hourly",
        "org_usage_rollup", "scaling_event_summary", "server_anomalies", "server_capacity", "server_comparison",
        "server_current", "server_snapshots", "site_usage_daily",
    ]
    singular = {k.split(".")[-1]: v for k, v in statuses.items() if k.startswith("test.rmp.assert_")}
    assert singular == {
        "assert_capacity_score_in_range": "pass",
        "assert_quota_percent_in_range_unless_exceeded": "pass",
        "assert_quota_remaining_is_limit_minus_used": "pass",
        "assert_rollup_is_own_plus_children": "pass",
    }
    assert set(statuses.values()) <= {"success", "pass"}


def test_org_resource_usage_counts_capacity_and_periods(built):
    url, _, _ = built
    got = {r["organization_id"]: r for r in rows(url, "select * from marts.org_resource_usage")}
    assert len(got) == 4
    acme = got[1]
    assert (acme["count_servers"], acme["count_applications"], acme["count_databases"],
            acme["count_deployments_this_period"]) == (2, 3, 1, 3)
    assert (acme["cpu_cores_total"], acme["memory_total_bytes"], acme["memory_used_bytes"],
            acme["disk_total_bytes"], acme["disk_used_bytes"]) == (
        16, 64 * GIB, 32 * GIB, 1500 * GIB, 500 * GIB)
    assert (acme["billing_period_start"], acme["billing_period_end"]) == (
        D - timedelta(days=5), D + timedelta(days=24))
    assert acme["has_licence"] is True and acme["max_disk_bytes"] is None
    assert acme["last_calculated_at"] == AS_OF
    eu = got[2]
    assert (eu["count_servers"], eu["cpu_cores_total"], eu["memory_used_bytes"],
            eu["disk_used_bytes"], eu["count_deployments_this_period"]) == (
        2, 8, 6 * GIB, 190 * GIB, 0)
    # no billing period on the licence: the calendar month of as_of
    assert (eu["billing_period_start"], eu["billing_period_end"]) == (MONTH_START, MONTH_END)
    paris = got[3]
    assert paris["has_licence"] is False
    assert [paris[f"max_{q}"] for q in ("servers", "applications", "databases", "deployments_per_month",
                                        "cpu_cores", "memory_bytes", "disk_bytes")] == [None] * 7
    assert (paris["count_servers"], paris["count_applications"], paris["count_databases"],
            paris["count_deployments_this_period"], paris["memory_used_bytes"]) == (1, 2, 1, 1, 2 * GIB)
    assert (paris["billing_period_start"], paris["billing_period_end"]) == (MONTH_START, MONTH_END)
    globex = got[4]
    # a server that never reported uses nothing yet
    assert (globex["count_servers"], globex["memory_total_bytes"], globex["memory_used_bytes"]) == (
        1, 64 * GIB, 0)


def test_org_quota_status_limits_remaining_and_flags(built):
    url, _, _ = built
    got = {
        (r["organization_id"], r["quota_name"]): (
            r["limit_value"], r["used_value"], r["remaining_value"],
            None if r["percent_used"] is None else float(r["percent_used"]),
            r["is_unlimited"], r["is_at_limit"], r["is_exceeded"],
        )
        for r in rows(url, "select * from marts.org_quota_status")
    }
    assert len(got) == 4 * 7
    assert got[(1, "servers")] == (2, 2, 0, 100.0, False, True, False)
    assert got[(1, "applications")] == (2, 3, -1, 150.0, False, False, True)
    assert got[(1, "databases")] == (5, 1, 4, 20.0, False, False, False)
    assert got[(1, "deployments_per_month")] == (3, 3, 0, 100.0, False, True, False)
    assert got[(1, "cpu_cores")] == (16, 16, 0, 100.0, False, True, False)
    assert got[(1, "memory")] == (128 * GIB, 64 * GIB, 64 * GIB, 50.0, False, False, False)
    assert got[(1, "disk")] == (None, 1500 * GIB, None, None, True, False, False)
    assert got[(2, "servers")] == (1, 2, -1, 200.0, False, False, True)
    assert got[(2, "applications")] == (None, 1, None, None, True, False, False)
    # no licence: every quota unlimited, nothing exceeded
    paris = [v for (org, _), v in got.items() if org == 3]
    assert len(paris) == 7
    assert all(v[0] is None and v[2] is None and v[3] is None and v[4] and not v[6] for v in paris)
    assert got[(3, "applications")] == (None, 2, None, None, True, False, False)
    assert got[(4, "servers")] == (10, 1, 9, 10.0, False, False, False)
    # a zero limit with nothing used: at the limit, percent undefined, not exceeded
    assert got[(4, "applications")] == (0, 0, 0, None, False, True, False)
    assert got[(4, "cpu_cores")] == (8, 16, -8, 200.0, False, False, True)
    exceeded = sorted(k for k, v in got.items() if v[6])
    assert exceeded == [(1, "applications"), (2, "servers"), (4, "cpu_cores")]


def test_one_organization_quota_query_analysts_run(built):
    url, _, _ = built
    got = rows(url, "select quota_name, is_exceeded from marts.org_quota_status "
                    "where organization_id = %s order by quota_name", (2,))
    assert [(r["quota_name"], r["is_exceeded"]) for r in got] == [
        ("applications", False), ("cpu_cores", False), ("databases", False),
        ("deployments_per_month", False), ("disk", False), ("memory", False), ("servers", True),
    ]


def test_org_usage_rollup_totals_every_ancestor(built):
    url, _, _ = built
    got = {r["organization_id"]: r for r in rows(url, "select * from marts.org_usage_rollup")}
    fields = ("organization_depth", "count_descendant_organizations", "own_count_servers",
              "total_count_servers", "total_count_applications", "total_count_databases",
              "total_cpu_cores", "total_memory_total_bytes", "total_memory_used_bytes",
              "total_disk_total_bytes", "total_disk_used_bytes")
    table = {org: tuple(r[f] for f in fields) for org, r in got.items()}
    assert table == {
        1: (0, 2, 2, 5, 6, 2, 26, 104 * GIB, 40 * GIB, 2000 * GIB, 700 * GIB),
        2: (1, 1, 2, 3, 3, 1, 10, 40 * GIB, 8 * GIB, 500 * GIB, 200 * GIB),
        3: (2, 0, 1, 1, 2, 1, 2, 8 * GIB, 2 * GIB, 100 * GIB, 10 * GIB),
        4: (0, 0, 1, 1, 0, 0, 16, 64 * GIB, 0, 2000 * GIB, 0),
    }
    assert got[1]["own_memory_used_bytes"] == 32 * GIB


def test_server_current_latest_sample_and_staleness(built):
    url, _, _ = built
    got = {r["server_id"]: r for r in rows(url, "select * from marts.server_current")}
    assert len(got) == 7
    assert {sid: (r["seconds_since_last_metrics"], r["is_stale"]) for sid, r in got.items()} == {
        1: (20.0, False), 2: (20.0, False), 3: (None, True), 4: (50.0, False),
        5: (80.0, True), 6: (3650.0, True), 7: (None, True),
    }
    s2 = got[2]
    assert s2["last_metrics_at"] == at(12)
    assert (s2["cpu_percent"], s2["memory_used_bytes"], s2["memory_percent"],
            s2["disk_used_bytes"], s2["disk_percent"], s2["load_1m"]) == (
        10.0, 24 * GIB, 75.0, 400 * GIB, 40.0, 1.0)
    assert got[4]["last_metrics_at"] == at(11, 59, 30) and got[4]["cpu_percent"] == 20.0


def test_server_capacity_score_and_ordering(built):
    url, _, _ = built
    got = {r["server_id"]: r for r in rows(url, "select * from marts.server_capacity")}
    summary = {
        sid: (None if r["capacity_score"] is None else float(r["capacity_score"]),
              r["bottleneck_resource"], r["capacity_rank_in_organization"],
              r["count_recent_hours"], r["recent_sample_count"])
        for sid, r in got.items()
    }
    assert summary == {
        1: (70.0, "cpu", 1, 3, 241),
        2: (25.0, "memory", 2, 3, 241),
        3: (None, None, None, 0, 0),
        4: (10.0, "cpu", 1, 2, 240),
        5: (87.5, "memory", None, 2, 239),  # in maintenance: scored, never picked
        6: (50.0, "cpu", 1, 1, 120),
        7: (None, None, None, 0, 0),
    }
    # s4's worst hour has cpu 0..90 repeating: exact p95 of that hour = 90
    assert (got[4]["cpu_p95_percent"], got[4]["memory_p95_percent"], got[4]["disk_p95_percent"]) == (
        90.0, 25.0, 85.0)
    assert got[2]["memory_p95_percent"] == 75.0
    ordered = rows(url, "select server_id from marts.server_capacity "
                        "where capacity_score is not null order by capacity_score desc")
    assert [r["server_id"] for r in ordered] == [5, 1, 6, 2, 4]


def test_capacity_window_is_each_servers_latest_hours(built):
    """A 1 h window keeps only each server's last hour before as_of; a lookback
    that ends before the data leaves no score."""
    url, _, work_dir = built

    def capacity(vars_: dict) -> dict:
        result = run_dbt(["run", "--select", "server_capacity", "--vars", json.dumps(vars_)],
                         url, work_dir=work_dir)
        assert result.success, result.failures()
        return {r["server_id"]: (r["latest_hour_start_at"], r["count_recent_hours"],
                                 r["recent_sample_count"],
                                 None if r["capacity_score"] is None else float(r["capacity_score"]))
                for r in rows(url, "select * from marts.server_capacity")}

    try:
        # s4's last hour is 11:00 (cpu 20, disk 85 %): its hour-10 cpu p95 of 90 drops out
        assert capacity({"as_of": AS_OF.isoformat(), "capacity_window_hours": 1}) == {
            1: (at(12), 1, 1, 70.0), 2: (at(12), 1, 1, 25.0), 3: (None, 0, 0, None),
            4: (at(11), 1, 120, 15.0), 5: (at(11), 1, 119, 87.5), 6: (at(10), 1, 120, 50.0),
            7: (None, 0, 0, None),
        }
        # as_of 12:00:00 sees hours before it only: the 12:00 bucket is out
        assert capacity({"as_of": at(12).isoformat()})[1] == (at(11), 2, 240, 70.0)
        # data 8 days before as_of is outside the 7-day lookback
        late = capacity({"as_of": (AS_OF + timedelta(days=8)).isoformat()})
        assert set(late.values()) == {(None, 0, 0, None)}
    finally:
        restored = run_dbt(["run", "--select", "server_capacity", "--vars",
                            json.dumps({"as_of": AS_OF.isoformat()})], url, work_dir=work_dir)
        assert restored.success


def test_site_usage_daily_limits_and_breaches(built):
    url, _, _ = built
    got = {r["site_id"]: r for r in rows(url, "select * from marts.site_usage_daily")}
    assert len(got) == 2
    a = got[1]
    assert a["usage_date"] == D
    assert (a["sample_count"], a["memory_avg_mb"], a["memory_max_mb"], a["cpu_avg_percent"],
            a["cpu_max_percent"], a["bandwidth_total_mb"], a["requests_total"],
            a["requests_per_minute_avg"], a["response_time_avg_ms"], a["uptime_percent"]) == (
        4, 450.0, 600.0, 30.0, 40.0, 400.0, 240, 120.0, 250.0, 75.0)
    assert (a["is_memory_limit_breached"], a["is_cpu_limit_breached"],
            a["is_bandwidth_limit_breached"], a["is_requests_limit_breached"],
            a["is_any_limit_breached"]) == (True, False, False, True, True)
    b = got[2]
    assert (b["organization_id"], b["user_id"], b["bandwidth_total_mb"], b["requests_per_minute_avg"],
            b["uptime_percent"]) == (None, 1, 10000.0, 60.0, 100.0)
    # no limits: nothing is breached
    assert b["is_any_limit_breached"] is False and b["is_bandwidth_limit_breached"] is False


def test_server_comparison_per_server_and_day(built):
    url, _, _ = built
    got = {r["server_id"]: r for r in rows(url, "select * from marts.server_comparison")}
    assert sorted(got) == [1, 2, 4, 5, 6]
    assert {r["metrics_date"] for r in got.values()} == {D}
    cols = ("sample_count", "cpu_avg_percent", "cpu_p95_percent", "cpu_max_percent",
            "cpu_avg_vs_organization_percent_points", "cpu_p95_rank_in_organization")
    table = {sid: tuple(r[c] for c in cols) for sid, r in got.items()}
    assert table == {
        1: (241, 30.0, 30.0, 30.0, 10.0, 1),
        2: (241, 10.0, 10.0, 10.0, -10.0, 2),
        # 0..90 x12 in hour 10 and 20 x120 in hour 11: p95 interpolates 80 and 90
        4: (240, 32.5, pytest.approx(80.5, rel=1e-12), 90.0, 13.75, 1),
        5: (239, 5.0, 5.0, 5.0, -13.75, 2),
        6: (120, 50.0, 50.0, 50.0, 0.0, 1),
    }
    assert got[2]["memory_used_avg_bytes"] == pytest.approx((120 * 16 + 121 * 24) * GIB / 241, rel=1e-12)
    assert got[2]["memory_used_p95_bytes"] == 24 * GIB
    assert (got[1]["network_rx_avg_bytes_per_sec"], got[1]["network_tx_avg_bytes_per_sec"]) == (100.0, 50.0)


def test_org_metrics_hourly_weighted_cpu_and_totals(built):
    url, _, _ = built
    got = {(r["organization_id"], r["hour_start_at"]): r
           for r in rows(url, "select * from marts.org_metrics_hourly")}
    assert sorted(got) == [(1, at(10)), (1, at(11)), (1, at(12)), (2, at(10)), (2, at(11)), (3, at(10))]
    cols = ("count_servers_reporting", "sample_count", "cpu_max_percent",
            "memory_used_avg_bytes_total", "disk_used_avg_bytes_total",
            "network_rx_avg_bytes_per_sec_total", "network_tx_avg_bytes_per_sec_total")
    assert tuple(got[(1, at(10))][c] for c in cols) == (2, 240, 30.0, 24 * GIB, 500 * GIB, 300.0, 150.0)
    assert tuple(got[(1, at(11))][c] for c in cols) == (2, 240, 30.0, 32 * GIB, 500 * GIB, 300.0, 150.0)
    assert tuple(got[(1, at(12))][c] for c in cols) == (2, 2, 30.0, 32 * GIB, 500 * GIB, 300.0, 150.0)
    # acme-old is decommissioned: acme expects 2 servers; eu-2 (maintenance) still counts
    assert {k: (r["count_servers_expected"], r["is_complete"]) for k, r in got.items()} == {
        (1, at(10)): (2, True), (1, at(11)): (2, True), (1, at(12)): (2, True),
        (2, at(10)): (2, True), (2, at(11)): (2, True), (3, at(10)): (1, True),
    }
    assert got[(1, at(10))]["cpu_avg_percent"] == 20.0
    assert got[(2, at(10))]["cpu_avg_percent"] == 25.0
    assert got[(2, at(10))]["cpu_max_percent"] == 90.0
    # weighted by samples (120 at 20 %, 119 at 5 %), not a mean of server means
    assert got[(2, at(11))]["cpu_avg_percent"] == pytest.approx((120 * 20 + 119 * 5) / 239, rel=1e-12)
    assert got[(2, at(11))]["sample_count"] == 239
    assert got[(3, at(10))]["cpu_avg_percent"] == 50.0


def test_source_freshness_flags_two_day_old_metrics(built):
    url, _, work_dir = built
    result = run_dbt(["source", "freshness", "--select", "source:metrics.server_metrics",
                      "source:metrics.site_usage"], url, work_dir=work_dir)
    assert result.exit_code == 1
    sources = {k: v for k, v in result.statuses().items() if k.startswith("source.")}  # not the on-run-end hook
    assert sources == {
        "source.rmp.metrics.server_metrics": "error",
        "source.rmp.metrics.site_usage": "error",
    }


def test_docs_generate_catalogs_the_marts(built):
    url, _, work_dir = built
    result = run_dbt(["docs", "generate"], url, work_dir=work_dir)
    assert result.success
    catalog = json.loads((work_dir / "target" / "catalog.json").read_text())
    quota = catalog["nodes"]["model.rmp.org_quota_status"]
    assert quota["metadata"]["schema"] == "marts"
    assert list(quota["columns"]) == [
        "organization_id", "quota_name", "unit", "limit_value", "used_value", "remaining_value",
        "percent_used", "is_unlimited", "is_at_limit", "is_exceeded", "remaining_clamped", "is_full", "can_add",
        "used_value_with_children", "is_exceeded_with_children", "is_full_with_children",
    ]


def test_server_anomalies_names_each_incident_and_counts_its_buckets(built):
    url, _, _ = built
    got = [(r["anomaly_id"], r["organization_id"], r["organization_name"], r["server_name"], r["metric"],
            r["detector"], r["is_primary_detector"], r["resolution"], r["started_at"], r["ended_at"],
            r["duration_minutes"], r["direction"])
           for r in rows(url, "select * from marts.server_anomalies order by anomaly_id")]
    assert got == [
        (1, 1, "acme", "acme-web-1", "cpu_percent", "stl_esd", True, "1h", at(10), at(11), 120, "up"),
        (2, 1, "acme", "acme-web-1", "cpu_percent", "baseline_rule", False, "5m", at(10, 5), at(10, 5), 5, "up"),
        # no resolution stored (before revision 0004): read as 1h; no end: one bucket
        (3, 2, "acme-eu", "eu-1", "disk_percent", "stl_esd", True, "1h", at(11), at(11), 60, "down"),
        (4, 4, "globex", "globex-1", "generic", "stl_mad", False, "1m", at(10, 1), at(10, 3), 3, "up"),
    ]


def test_capacity_forecasts_latest_per_series_with_measure_and_quota(built):
    url, _, _ = built
    got = {r["forecast_id"]: r for r in rows(url, "select * from marts.capacity_forecasts")}
    assert sorted(got) == [1, 3, 4]  # forecast 2 is an older one of forecast 1's series
    server = got[1]
    assert (server["entity_type"], server["organization_name"], server["server_id"], server["server_name"],
            server["measure"], server["model"], server["backtest_mase"], server["seasonal_naive_backtest_mase"],
            server["is_low_confidence"], server["interval_coverage"], server["quota_name"],
            server["is_limit_exceeded_by_allocation"]) == (
        "server", "acme", 1, "acme-web-1", "disk used (percent)", "linear", 0.5, 0.8, False, 0.9375, None, False)
    globex = got[3]
    assert (globex["entity_type"], globex["organization_id"], globex["server_id"], globex["measure"],
            globex["quota_name"], globex["allocated_value"], globex["allocated_percent_of_limit"],
            globex["is_limit_exceeded_by_allocation"], globex["is_low_confidence"]) == (
        "organization", 4, None, "disk used (sum of servers' used bytes)", "disk", 2000.0 * GIB, None, False, True)
    acme = got[4]
    assert (acme["measure"], acme["quota_name"], acme["allocated_value"], acme["allocated_percent_of_limit"],
            acme["is_limit_exceeded_by_allocation"]) == (
        "memory used (sum of servers' used bytes)", "memory", 64.0 * GIB, 50.0, False)


def test_capacity_forecasts_says_when_the_allocation_already_exceeds_the_limit(built):
    url, _, _ = built
    with psycopg.connect(url) as conn:  # one transaction, rolled back: the views read the live tables
        conn.execute("update tenancy.licences set max_disk_bytes = %s where organization_id = 4", (1500 * GIB,))
        row = conn.execute("select allocated_value, allocated_percent_of_limit, is_limit_exceeded_by_allocation,"
                           " threshold from marts.capacity_forecasts where forecast_id = 3").fetchone()
        conn.rollback()
    # 2000 GiB allocated against 1500 GiB: 133.33 %, over the limit, while the used-bytes forecast is "ok"
    assert row == (2000.0 * GIB, 133.33, True, 1000.0 * GIB)
