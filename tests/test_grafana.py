"""The provisioned Grafana dashboard parses and every panel's SQL runs on the real schema.

Grafana expands macros before it sends a query; ``expand`` below does the
same for the macros the dashboards use, following Grafana's PostgreSQL data
source with ``timescaledb: true``:

=============================  ====================================================
``$__timeFilter(col)``         ``col BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC)
``$__timeFrom()`` / ``To()``   ``'<from>'`` / ``'<to>'``
``$__time(col)``               ``col AS "time"``
``$__timeGroup(col, '1h')``    ``time_bucket('3600s', col)``
``$__timeGroupAlias(...)``     the same ``AS "time"``
``$var``, ``${var}``           a single value as is; several as ``'a','b'``
=============================  ====================================================

Any other ``$__macro`` fails the test, so a dashboard cannot use one this
expander (and so this test) does not understand.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bench import dataset, queries
from rmp import catalog
from rmp.db import is_embedded
from rmp.settings import ROOT
from transform.dbt_runner import run_dbt

DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "timescaledb.yml"
LOGIN_SQL = ROOT / "deploy" / "grafana" / "grafana-login.sql"
GRAFANA_LOGIN = "rmp_grafana_test"

END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
START = END - timedelta(days=2)


def _interval_seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m|h|d)", text)
    if not m:
        raise ValueError(f"interval {text!r}: expected e.g. 30s, 5m, 1h, 1d")
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(raw_sql: str, time_from: datetime, time_to: datetime, variables: dict[str, list[str]]) -> str:
    """``raw_sql`` as Grafana's PostgreSQL data source (timescaledb: true) would send it."""
    frm, to = f"'{_rfc3339(time_from)}'", f"'{_rfc3339(time_to)}'"

    def args(text: str) -> list[str]:
        return [a.strip() for a in text.split(",")] if text.strip() else []

    def macro(m: re.Match) -> str:
        name, a = m[1], args(m[2])
        if name == "timeFilter":
            return f"{a[0]} BETWEEN {frm} AND {to}"
        if name == "timeFrom":
            return frm
        if name == "timeTo":
            return to
        if name == "time":
            return f'{a[0]} AS "time"'
        if name in ("timeGroup", "timeGroupAlias"):
            bucket = f"time_bucket('{_interval_seconds(a[1].strip(chr(39)))}s', {a[0]})"
            return bucket + (' AS "time"' if name == "timeGroupAlias" else "")
        raise AssertionError(f"macro $__{name} is not supported by this expander")

    out = re.sub(r"\$__(\w+)\(([^()]*)\)", macro, raw_sql)
    leftover = re.search(r"\$__\w+", out)
    assert leftover is None, f"unexpanded macro {leftover[0]}"

    def variable(m: re.Match) -> str:
        values = variables[m[1] or m[2]]
        return values[0] if len(values) == 1 else ",".join(f"'{v}'" for v in values)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", variable, out)


def _panels() -> list[dict]:
    dashboard = json.loads((DASHBOARDS / "fleet.json").read_text())
    return dashboard["panels"]


def test_expander_follows_grafana_for_the_macros_used():
    t0, t1 = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    text = expand("select $__timeGroupAlias(at, '5m'), x from t where $__timeFilter(at) "
                  "and $__timeTo()::timestamptz > now() and org in ($organization) and s = ${server}",
                  t0, t1, {"organization": ["1", "2"], "server": ["7"]})
    assert text == ("select time_bucket('300s', at) AS \"time\", x from t where at BETWEEN "
                    "'2025-01-01T00:00:00Z' AND '2025-01-02T00:00:00Z' and '2025-01-02T00:00:00Z'::timestamptz "
                    "> now() and org in ('1','2') and s = 7")
    with pytest.raises(AssertionError, match=r"\$__unixEpochFilter"):
        expand("where $__unixEpochFilter(at)", t0, t1, {})


def test_every_dashboard_parses_and_uses_the_provisioned_data_source():
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert provisioned["uid"] == "timescaledb"
    assert provisioned["jsonData"]["timescaledb"] is True
    files = sorted(DASHBOARDS.glob("*.json"))
    assert [f.name for f in files] == ["fleet.json"]
    dashboard = json.loads(files[0].read_text())
    assert dashboard["uid"] == "rmp-fleet"
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == ["Fleet CPU", "Fleet memory", "Fleet disk", "Fleet network", "Quota status",
                      "Fullest disks now", "Anomalies", "Anomalies per hour"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(titles)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == provisioned["uid"]
        assert panel["datasource"]["type"] == provisioned["type"]
        assert all(t["rawQuery"] and t["rawSql"].strip() for t in panel["targets"])


@pytest.fixture(scope="module")
def fleet_url(migrated_url, tmp_path_factory):
    """Two organizations' servers with 2 days of metrics, aggregates, a licence, anomalies and the marts."""
    import psycopg

    from tests.conftest import empty_data_tables

    with psycopg.connect(migrated_url, autocommit=True) as conn, queries.paused_jobs(conn):
        a = dataset.create_fleet(conn, "grafana-a", 2)
        b = dataset.create_fleet(conn, "grafana-b", 1)
        dataset.load_metrics(conn, a + b, START, END)
        for agg in queries.AGGREGATES:
            conn.execute("call refresh_continuous_aggregate(%s, %s, %s)", [f"metrics.{agg}", START, END])
        conn.execute(
            "insert into tenancy.licences (organization_id, max_servers, max_cpu_cores, "
            "billing_period_start, billing_period_end) "
            "select id, 1, 100, %s::date, %s::date + 30 from tenancy.organizations where slug = 'grafana-a'",
            [START, START],
        )
        conn.execute(
            "insert into analytics.anomalies (server_id, metric, detector, started_at, ended_at, observed, "
            "expected, score, direction) values "
            "(%s, 'cpu_percent', 'stl_mad', %s, %s, 97.5, 41.0, 8.2, 'up'), "
            "(%s, 'disk_percent', 'stl_mad', %s, null, 88.0, 60.0, 5.1, 'up')",
            [a[0], END - timedelta(hours=3), END - timedelta(hours=2), b[0], END - timedelta(hours=1)],
        )
    work = tmp_path_factory.mktemp("dbt")
    built = run_dbt(["run", "--select", "+org_quota_status"], migrated_url, work_dir=work)
    assert built.success, built.statuses()
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        orgs = dict(conn.execute("select slug, id::text from tenancy.organizations").fetchall())
    _create_grafana_login(migrated_url)
    try:
        yield migrated_url, orgs
    finally:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            empty_data_tables(conn)
            conn.execute(f"drop owned by {GRAFANA_LOGIN}")
            conn.execute(f"drop role {GRAFANA_LOGIN}")


def _create_grafana_login(url: str) -> None:
    """What the compose file's grafana-login service runs, with psql itself (twice: re-runs are harmless)."""
    import subprocess

    for _ in range(2):
        subprocess.run(["psql", url, "-q", "-v", f"grafana_login={GRAFANA_LOGIN}", "-v",
                        "grafana_password=it's a secret", "-f", str(LOGIN_SQL)],
                       check=True, capture_output=True, text=True)


def _grafana_conn(url: str):
    """A connection as Grafana's data source makes it: the provisioned read-only login."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    return psycopg.connect(make_conninfo(url, user=GRAFANA_LOGIN, password="it's a secret"))


def _run(url: str, panel_title: str, time_from: datetime, time_to: datetime, orgs: list[str]):

    panel = next(p for p in _panels() if p["title"] == panel_title)
    text = expand(panel["targets"][0]["rawSql"], time_from, time_to, {"organization": orgs})
    with _grafana_conn(url) as conn:
        assert conn.execute("select current_user").fetchone() == (GRAFANA_LOGIN,)
        cur = conn.execute(text)
        return [c.name for c in cur.description], cur.fetchall()


@pytest.mark.parametrize("span", [timedelta(hours=6), timedelta(days=2), timedelta(days=8)],
                         ids=["6h", "2d", "8d"])
def test_fleet_cpu_reads_the_aggregate_that_fits_the_range(fleet_url, span):
    # The tier is the catalog's (tests/test_catalog.py pins the mapping: 6 h -> 1 min,
    # 2 d -> 5 min, 8 d -> 1 h); one point per bucket of it inside the 2 days of data.
    tier = catalog.tier_for_window(span)
    aggregate, points = tier.name, min(span, END - START) // tier.bucket
    url, orgs = fleet_url
    cols, rows = _run(url, "Fleet CPU", END - span, END, [orgs["grafana-a"], orgs["grafana-b"]])
    assert cols == ["time", "cpu avg %", "cpu p95 % (busiest server)"]
    assert len(rows) == points  # one point per bucket of that aggregate inside the 2 days of data
    import psycopg

    with psycopg.connect(url) as conn:
        expected = conn.execute(
            f"select bucket, avg(cpu_avg_percent), max(cpu_p95_percent) from metrics.{aggregate} "
            "where bucket >= %s and bucket <= %s group by 1 order by 1",
            [END - span, END],
        ).fetchall()
    # Same buckets and maxima; averages of doubles may differ in the last bit (summation order).
    assert [(r[0], r[2]) for r in rows] == [(e[0], e[2]) for e in expected]
    assert [r[1] for r in rows] == pytest.approx([e[1] for e in expected], rel=1e-12)


@pytest.mark.parametrize(("title", "columns"), [
    ("Fleet memory", ["time", "memory avg %", "memory max % (fullest server)"]),
    ("Fleet disk", ["time", "disk avg %", "disk max % (fullest server)"]),
    ("Fleet network", ["time", "network rx", "network tx"]),
])
def test_fleet_panels_return_one_point_per_minute_for_a_day(fleet_url, title, columns):
    url, orgs = fleet_url
    cols, rows = _run(url, title, END - timedelta(days=1), END, [orgs["grafana-a"]])
    assert cols == columns
    # BETWEEN includes the end instant, which has no data: 1,440 minutes.
    assert len(rows) == 1440
    assert all(r[1] is not None and r[2] is not None for r in rows)


def test_quota_panel_shows_the_exceeded_server_quota_first(fleet_url):
    url, orgs = fleet_url
    cols, rows = _run(url, "Quota status", START, END, [orgs["grafana-a"], orgs["grafana-b"]])
    assert cols == ["organization", "quota_name", "unit", "used_value", "limit_value", "percent_used", "is_exceeded"]
    # Only grafana-a has a licence with limits: 2 servers of max 1; cores 4*(1+1%4)+4*(1+2%4) = 8+12 of 100.
    assert [(r[0], r[1], r[3], r[4], r[5], r[6]) for r in rows] == [
        ("grafana-a", "servers", 2, 1, 200, True),
        ("grafana-a", "cpu_cores", 20, 100, 20, False),
    ]


def test_fullest_disks_panel_lists_each_servers_latest_sample(fleet_url):
    url, orgs = fleet_url
    cols, rows = _run(url, "Fullest disks now", START, END, [orgs["grafana-a"], orgs["grafana-b"]])
    assert cols == ["organization", "server", "last_metrics_at", "cpu_percent", "memory_percent", "disk_percent"]
    assert len(rows) == 3
    assert {r[2] for r in rows} == {END - timedelta(seconds=30)}
    assert [r[5] for r in rows] == sorted((r[5] for r in rows), reverse=True)


def test_anomaly_panels_return_the_anomalies_in_range(fleet_url):
    url, orgs = fleet_url
    cols, rows = _run(url, "Anomalies", START, END, [orgs["grafana-a"], orgs["grafana-b"]])
    assert cols == ["time", "server", "metric", "detector", "direction", "observed", "expected", "score", "ended_at"]
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        (END - timedelta(hours=1), "grafana-b-00001", "disk_percent", 88.0),
        (END - timedelta(hours=3), "grafana-a-00001", "cpu_percent", 97.5),
    ]
    only_a = _run(url, "Anomalies", START, END, [orgs["grafana-a"]])[1]
    assert [r[1] for r in only_a] == ["grafana-a-00001"]
    cols, per_hour = _run(url, "Anomalies per hour", START, END, [orgs["grafana-a"], orgs["grafana-b"]])
    assert cols == ["time", "metric", "anomalies"]
    assert per_hour == [(END - timedelta(hours=3), "cpu_percent", 1), (END - timedelta(hours=1), "disk_percent", 1)]


def test_organization_variable_query_lists_organizations(fleet_url):

    url, orgs = fleet_url
    dashboard = json.loads((DASHBOARDS / "fleet.json").read_text())
    (var,) = dashboard["templating"]["list"]
    with _grafana_conn(url) as conn:
        rows = conn.execute(var["query"]).fetchall()
    assert rows == [("grafana-a", int(orgs["grafana-a"])), ("grafana-b", int(orgs["grafana-b"]))]


def test_grafana_login_is_a_read_only_analyst(fleet_url):
    import psycopg

    url, _ = fleet_url
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["grafana"]["environment"]["RMP_GRAFANA_DB_USER"] == "${RMP_GRAFANA_DB_USER:-rmp_grafana}"
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "select r.rolsuper, pg_has_role(r.rolname, 'rmp_analyst', 'member'), "
            "pg_has_role(r.rolname, 'rmp_admin', 'member') from pg_roles r where r.rolname = %s",
            (GRAFANA_LOGIN,)).fetchone() == (False, True, False)
    with _grafana_conn(url) as conn:
        refused = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)
        for statement in ("select 1 from metrics.server_metrics_1h limit 1",
                          "select 1 from tenancy.audit_log limit 1",
                          "update tenancy.licences set max_servers = 0",
                          "delete from analytics.anomalies"):
            with pytest.raises(refused):
                conn.execute(statement)
            conn.rollback()
        embedded = is_embedded(conn)
        conn.rollback()
        if not embedded:
            # the embedded engine does not apply ALTER ROLE ... SET at login (docs/security.md)
            assert conn.execute("show default_transaction_read_only").fetchone() == ("on",)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("create temp table t (x int)")
            conn.rollback()
        # both organizations (granted at their roots) are visible
        assert conn.execute("select count(*) from tenancy.organizations").fetchone() == (2,)


def test_dashboard_json_in_repo_is_what_grafana_loads():
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "rmp.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert Path(DASHBOARDS).is_dir()
