"""Roles, tenant scoping and the audit log, on the real engine, as non-superuser logins.

Fixture: organization A with sub-organization A1, and B; one server and one
site each, 4 raw samples per server (cpu = base + 0, 1, 2, 3), one narrow
sample, one scaling event, licences, forecasts and anomalies. Logins are
created here (superusers bypass row-level security) and dropped afterwards.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import empty_data_tables
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tenant_fixture import create_roles, drop_roles, organizations_with_servers, refresh_aggregates

from rmp import catalog, tenancy
from transform.dbt_runner import run_dbt

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
AS_OF = T0 + timedelta(minutes=5)
LOGINS = ("sec_auth", "sec_alice", "sec_sub", "sec_none", "sec_ing", "sec_boss")
TENANT_VIEWS = ("server_metrics", "metric_samples", "site_usage", "scaling_events", "server_metrics_1m",
                "server_metrics_5m", "server_metrics_1h", "server_metrics_1d", "site_usage_daily",
                "server_last_point")
MARTS = ("capacity_forecasts", "org_metrics_5m", "org_metrics_hourly", "org_metrics_daily", "org_tree_metrics_5m",
         "org_tree_metrics_hourly", "org_tree_metrics_daily", "org_quota_status", "org_resource_usage",
         "org_usage_rollup", "server_anomalies", "server_capacity", "server_comparison", "server_current",
         "server_snapshots", "site_usage_daily")


def as_login(url: str, login: str, **kw) -> psycopg.Connection:
    params = conninfo_to_dict(url)
    params["user"] = login
    params.pop("password", None)
    return psycopg.connect(make_conninfo(**params), autocommit=True, **kw)


def _load(conn: psycopg.Connection) -> dict[str, int]:
    ids = organizations_with_servers(conn)
    q = conn.execute
    cpu_type = q("select id from metrics.metric_types where name = 'cpu_percent'").fetchone()[0]
    for key, base in (("A", 10), ("A1", 20), ("B", 30)):
        org, sid = ids[key], ids[f"server_{key}"]
        ids[f"site_{key}"] = q("insert into tenancy.sites (organization_id, server_id, name) values (%s, %s, %s) "
                               "returning id", (org, sid, f"site-{key.lower()}")).fetchone()[0]
        q("insert into tenancy.licences (organization_id, max_servers) values (%s, 5)", (org,))
        for i in range(4):
            q("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_used_bytes, "
              "memory_percent, disk_used_bytes, disk_percent, network_rx_bytes, network_tx_bytes) "
              "values (%s, %s, %s, 4000, 50, 1000, 1, 30, 60)", (sid, T0 + timedelta(seconds=30 * i), base + i))
        q("insert into metrics.metric_samples (server_id, metric_type_id, collected_at, value) values (%s, %s, %s, %s)",
          (sid, cpu_type, T0, base))
        q("insert into metrics.site_usage (site_id, collected_at, cpu_percent) values (%s, %s, %s)",
          (ids[f"site_{key}"], T0, base))
        q("insert into metrics.scaling_events (server_id, event_type, executed_at) values (%s, 'scale_up', %s)",
          (sid, T0))
        q("insert into analytics.forecasts (entity_type, entity_id, metric, model, horizon_start) "
          "values ('server', %s, 'cpu', 'linear', %s), ('organization', %s, 'cpu', 'linear', %s)",
          (sid, T0, org, T0))
        q("insert into analytics.anomalies (server_id, metric, detector, started_at) values (%s, 'cpu', 'z', %s)",
          (sid, T0))
    q("insert into analytics.report_runs (kind, status) values ('daily', 'ok')")
    refresh_aggregates(conn, (a.name for a in catalog.AGGREGATES))
    return ids


@pytest.fixture(scope="module")
def fleet(migrated_url, tmp_path_factory):
    """(url, ids): the fixture loaded, marts built, logins created and granted."""
    work = tmp_path_factory.mktemp("dbt-security")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        empty_data_tables(conn)
        create_roles(conn, LOGINS, login=True)
        ids = _load(conn)
        tenancy.grant(conn, "org-a", "sec_alice")
        tenancy.grant(conn, "org-a1", "sec_sub")
        conn.execute("grant rmp_analyst to sec_none")
        conn.execute("grant rmp_ingest to sec_ing")
        conn.execute("grant rmp_admin to sec_boss")
        # a pooled-connection "authenticator": logs in, inherits nothing, and
        # switches to a tenant role per request
        conn.execute("alter role sec_auth noinherit")
        conn.execute("grant sec_alice, sec_sub to sec_auth")
    result = run_dbt(["run", "--vars", json.dumps({"as_of": AS_OF.isoformat()})], migrated_url, work_dir=work)
    assert result.exit_code == 0, result.exception
    try:
        yield migrated_url, ids
    finally:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            empty_data_tables(conn)
            drop_roles(conn, LOGINS)


def _values(conn: psycopg.Connection, query: str | sql.Composed, params=()) -> list:
    return [r[0] for r in conn.execute(query, params)]


# ------------------------------------------------------------- analysts

def test_granted_login_sees_its_organization_and_sub_organization_only(fleet):
    url, ids = fleet
    a, a1 = ids["server_A"], ids["server_A1"]
    with as_login(url, "sec_alice") as conn:
        assert conn.execute("select current_user, session_user").fetchone() == ("sec_alice", "sec_alice")
        assert tenancy.visible_organization_ids(conn) == sorted([ids["A"], ids["A1"]])
        assert _values(conn, "select slug from tenancy.organizations order by slug") == ["org-a", "org-a1"]
        assert _values(conn, "select id from tenancy.servers order by id") == [a, a1]
        assert _values(conn, "select name from tenancy.sites order by name") == ["site-a", "site-a1"]
        assert _values(conn, "select organization_id from tenancy.licences order by 1") == [ids["A"], ids["A1"]]
        # raw samples: 4 per server, cpu 10..13 and 20..23
        assert conn.execute("select server_id, count(*), sum(cpu_percent) from tenant.server_metrics "
                            "group by 1 order by 1").fetchall() == [(a, 4, 46.0), (a1, 4, 86.0)]
        # 1-minute buckets: (10, 11) and (12, 13) for A
        assert conn.execute("select server_id, bucket, sample_count, cpu_avg_percent, cpu_max_percent "
                            "from tenant.server_metrics_1m order by 1, 2").fetchall() == [
            (a, T0, 2, 10.5, 11.0), (a, T0 + timedelta(minutes=1), 2, 12.5, 13.0),
            (a1, T0, 2, 20.5, 21.0), (a1, T0 + timedelta(minutes=1), 2, 22.5, 23.0)]
        for view in ("server_metrics_5m", "server_metrics_1h", "server_metrics_1d"):
            assert conn.execute(sql.SQL("select server_id, sample_count, cpu_avg_percent from {} order by 1")
                                .format(sql.Identifier("tenant", view))).fetchall() == [(a, 4, 11.5), (a1, 4, 21.5)]
        assert _values(conn, "select server_id from tenant.metric_samples order by 1") == [a, a1]
        assert _values(conn, "select server_id from tenant.scaling_events order by 1") == [a, a1]
        assert _values(conn, "select server_id from tenant.server_last_point order by 1") == [a, a1]
        assert _values(conn, "select site_id from tenant.site_usage order by 1") == [ids["site_A"], ids["site_A1"]]
        assert _values(conn, "select site_id from tenant.site_usage_daily order by 1") == [ids["site_A"],
                                                                                            ids["site_A1"]]
        assert conn.execute("select entity_type, entity_id from analytics.forecasts order by 1, 2").fetchall() == [
            ("organization", ids["A"]), ("organization", ids["A1"]), ("server", a), ("server", a1)]
        assert _values(conn, "select server_id from analytics.anomalies order by 1") == [a, a1]
        assert _values(conn, "select count(*) from analytics.report_runs") == [0]


def test_direct_query_for_another_organizations_server_returns_nothing(fleet):
    url, ids = fleet
    b = ids["server_B"]
    with as_login(url, "sec_alice") as conn:
        assert _values(conn, "select count(*) from tenancy.servers where id = %s", (b,)) == [0]
        for view in TENANT_VIEWS:
            column = "site_id" if "site" in view else "server_id"
            key = ids["site_B"] if column == "site_id" else b
            assert _values(conn, sql.SQL("select count(*) from {} where {} = %s").format(
                sql.Identifier("tenant", view), sql.Identifier(column)), (key,)) == [0], view
        assert _values(conn, "select count(*) from analytics.anomalies where server_id = %s", (b,)) == [0]
        assert _values(conn, "select count(*) from marts.server_current where server_id = %s", (b,)) == [0]
        # the raw hypertables and aggregates themselves are not readable at all
        for relation in ("metrics.server_metrics", "metrics.server_metrics_1h", "tenancy.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("select 1 from {} limit 1").format(sql.SQL(relation)))


def test_every_mart_shows_exactly_the_granted_organizations_rows(fleet):
    url, ids = fleet
    visible = {ids["A"], ids["A1"]}
    with psycopg.connect(url, autocommit=True) as admin, as_login(url, "sec_alice") as alice:
        for mart in MARTS:
            query = sql.SQL("select * from {} order by 1, 2, 3").format(sql.Identifier("marts", mart))
            cur = admin.execute(query)
            org_col = [d.name for d in cur.description].index("organization_id")
            everything = cur.fetchall()
            expected = [r for r in everything if r[org_col] in visible]
            got = alice.execute(query).fetchall()
            assert got == expected, mart
            assert 0 < len(got) < len(everything), mart


def test_sub_organization_login_does_not_see_its_parent(fleet):
    url, ids = fleet
    with as_login(url, "sec_sub") as conn:
        assert _values(conn, "select slug from tenancy.organizations") == ["org-a1"]
        assert _values(conn, "select distinct server_id from tenant.server_metrics") == [ids["server_A1"]]
        assert _values(conn, "select distinct organization_id from marts.org_quota_status") == [ids["A1"]]


def test_analyst_without_grant_sees_no_rows(fleet):
    url, _ = fleet
    with as_login(url, "sec_none") as conn:
        assert tenancy.visible_organization_ids(conn) == []
        assert _values(conn, "select count(*) from tenancy.organizations") == [0]
        assert _values(conn, "select count(*) from tenant.server_metrics") == [0]
        assert _values(conn, "select count(*) from marts.org_resource_usage") == [0]
        assert _values(conn, "select count(*) from analytics.forecasts") == [0]


def test_analyst_cannot_write_tenancy_or_escape_its_login(fleet):
    url, ids = fleet
    with as_login(url, "sec_alice") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into tenancy.servers (organization_id, name) values (%s, 'x')", (ids["A"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into tenancy.tenant_grants (login, organization_id) values ('sec_alice', %s)",
                         (ids["B"],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update tenancy.licences set max_servers = 99")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("set session authorization postgres")
        assert _values(conn, "select current_user") == ["sec_alice"]
    with psycopg.connect(url) as conn:
        assert _values(conn, "select count(*) from tenancy.servers") == [3]
        assert _values(conn, "select max(max_servers) from tenancy.licences") == [5]


# ------------------------------------------- visibility follows current_user

def _what_is_visible(conn: psycopg.Connection) -> tuple:
    """(current_user, organizations, servers, raw-sample servers, 1h servers, marts' organizations, forecasts)."""
    return (
        _values(conn, "select current_user")[0],
        _values(conn, "select slug from tenancy.organizations order by 1"),
        _values(conn, "select id from tenancy.servers order by 1"),
        _values(conn, "select distinct server_id from tenant.server_metrics order by 1"),
        _values(conn, "select distinct server_id from tenant.server_metrics_1h order by 1"),
        _values(conn, "select distinct organization_id from marts.org_quota_status order by 1"),
        _values(conn, "select count(*) from analytics.forecasts"),
    )


def _expected(ids: dict[str, int], role: str, *orgs: str) -> tuple:
    keys = sorted(orgs, key=lambda k: ids[k])
    return (role, [f"org-{k.lower()}" for k in sorted(orgs)], [ids[f"server_{k}"] for k in keys],
            [ids[f"server_{k}"] for k in keys], [ids[f"server_{k}"] for k in keys], [ids[k] for k in keys],
            [2 * len(orgs)])


def test_superuser_session_after_set_role_sees_only_that_roles_organizations(fleet):
    url, ids = fleet
    with psycopg.connect(url, autocommit=True) as conn:
        everything = _what_is_visible(conn)
        assert everything[1] == ["org-a", "org-a1", "org-b"]
        conn.execute("set role sec_alice")
        assert _what_is_visible(conn) == _expected(ids, "sec_alice", "A", "A1")
        assert tenancy.visible_organization_ids(conn) == sorted([ids["A"], ids["A1"]])
        conn.execute("set role sec_sub")
        assert _what_is_visible(conn) == _expected(ids, "sec_sub", "A1")
        conn.execute("reset role")
        assert _what_is_visible(conn) == everything


def test_set_local_role_inside_a_transaction_scopes_that_transaction_only(fleet):
    url, ids = fleet
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("set local role sec_sub")
            assert _what_is_visible(conn) == _expected(ids, "sec_sub", "A1")
        # after commit the session is the superuser again
        assert _values(conn, "select count(*) from tenancy.organizations") == [3]
        with conn.transaction():
            conn.execute("set local role sec_alice")
            assert _what_is_visible(conn) == _expected(ids, "sec_alice", "A", "A1")
        assert _values(conn, "select count(*) from tenant.server_metrics") == [12]


def test_noinherit_authenticator_sees_nothing_until_it_switches_to_a_tenant_role(fleet):
    url, ids = fleet
    with as_login(url, "sec_auth") as conn:
        # as itself: no inherited privilege (not even usage on the schemas)
        for relation in ("tenancy.organizations", "tenant.server_metrics", "marts.org_quota_status"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("select 1 from {} limit 1").format(sql.SQL(relation)))
        with conn.transaction():
            conn.execute("set local role sec_alice")
            assert _what_is_visible(conn) == _expected(ids, "sec_alice", "A", "A1")
        with conn.transaction():
            conn.execute("set local role sec_sub")
            assert _what_is_visible(conn) == _expected(ids, "sec_sub", "A1")
        assert conn.execute("select current_user, session_user").fetchone() == ("sec_auth", "sec_auth")
        # a role it was not granted stays out of reach
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("set local role sec_boss")


def test_a_role_cannot_ask_for_another_roles_organizations(fleet):
    url, ids = fleet
    with as_login(url, "sec_alice") as conn:
        assert _values(conn, "select tenancy.organization_ids_visible_to('sec_alice') order by 1") == [
            ids["A"], ids["A1"]]
        # not a member of sec_sub / sec_boss: the security-definer function answers nothing
        assert _values(conn, "select tenancy.organization_ids_visible_to('sec_sub')") == []
        assert _values(conn, "select tenancy.server_ids_visible_to('sec_boss')") == []


# ---------------------------------------------------------------- ingest

def test_ingest_role_cannot_read_marts_tenancy_or_analytics(fleet):
    url, _ = fleet
    with as_login(url, "sec_ing") as conn:
        for relation in ("marts.org_quota_status", "tenancy.servers", "tenancy.organizations",
                         "tenant.server_metrics", "analytics.forecasts", "metrics.server_metrics_1h"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("select 1 from {} limit 1").format(sql.SQL(relation)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update metrics.server_metrics set cpu_percent = 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("delete from metrics.server_metrics")


def test_ingest_role_loads_a_file_with_names_resolved_and_rejections_recorded(fleet, tmp_path):
    from ingest.loader import load_file

    url, ids = fleet
    path = tmp_path / "ingest-role.csv"
    path.write_text(
        "server,organization,collected_at,cpu_percent\n"
        "web-a,org-a,2025-01-07T00:00:00+00:00,41\n"
        "web-b,org-b,2025-01-07T00:00:00+00:00,42\n"
        "web-a,org-b,2025-01-07T00:00:30+00:00,43\n"
    )
    login_url = make_conninfo(url, user="sec_ing")
    first = load_file(path, login_url)
    again = load_file(path, login_url)
    assert (first.loaded, first.duplicates, first.rejected) == (2, 0, 1)
    assert (again.loaded, again.duplicates, again.rejected) == (0, 2, 1)
    assert first.rejections[0].line == 4 and first.rejections[0].field == "server"
    with psycopg.connect(url) as conn:
        assert conn.execute("select server_id, cpu_percent from metrics.server_metrics "
                            "where collected_at >= '2025-01-07' order by 1").fetchall() == [
            (ids["server_A"], 41.0), (ids["server_B"], 42.0)]
        assert _values(conn, "select count(*) from metrics.rejected_rows where source_file = %s",
                       (str(path.resolve()),)) == [1]
        conn.execute("delete from metrics.server_metrics where collected_at >= '2025-01-07'")
        conn.execute("delete from metrics.rejected_rows")
        conn.commit()


@pytest.mark.embedded_only  # the embedded server's COPY path (a server runs COPY as the login)
def test_non_superuser_copy_into_own_temp_table_with_a_default_is_refused(fleet):
    url, _ = fleet
    with as_login(url, "sec_ing") as conn, conn.transaction():
        # a default would run as the superuser the embedded server copies as
        conn.execute("create temp table sneaky (a int default 1, b int) on commit drop")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.cursor().copy(
                "copy sneaky (b) from stdin") as copy:
            copy.write_row((1,))
        raise psycopg.Rollback()


# ----------------------------------------------------------------- audit

def test_quota_and_retention_changes_are_audited_with_the_acting_role(fleet):
    url, ids = fleet
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("delete from tenancy.audit_log where table_name in ('licences', 'organization_settings')")
    with as_login(url, "sec_boss") as boss:
        boss.execute("update tenancy.licences set max_servers = 7 where organization_id = %s", (ids["B"],))
        boss.execute("insert into tenancy.organization_settings (organization_id, metrics_retention) "
                     "values (%s, '30 days')", (ids["B"],))
        boss.execute("set role rmp_admin")
        boss.execute("update tenancy.organization_settings set metrics_retention = '14 days' "
                     "where organization_id = %s", (ids["B"],))
        boss.execute("update tenancy.licences set max_servers = 7 where organization_id = %s", (ids["B"],))  # no-op
        boss.execute("reset role")
        rows = boss.execute(
            "select login, acting_role, table_name, action, organization_id, "
            "old_row ->> 'max_servers', new_row ->> 'max_servers', "
            "old_row ->> 'metrics_retention', new_row ->> 'metrics_retention' "
            "from tenancy.audit_log where table_name in ('licences', 'organization_settings') order by id"
        ).fetchall()
        for statement in ("delete from tenancy.audit_log", "truncate tenancy.audit_log",
                          "update tenancy.audit_log set login = 'x'",
                          "create trigger forge before insert on tenancy.audit_log "
                          "for each row execute function tenancy.audit_change()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                boss.execute(statement)
        assert boss.execute("select privilege_type from information_schema.role_table_grants "
                            "where grantee = 'rmp_admin' and table_schema = 'tenancy' "
                            "and table_name = 'audit_log'").fetchall() == [("SELECT",)]
    b = ids["B"]
    assert rows == [
        ("sec_boss", "sec_boss", "licences", "update", b, "5", "7", None, None),
        ("sec_boss", "sec_boss", "organization_settings", "insert", b, None, None, None, "30 days"),
        ("sec_boss", "rmp_admin", "organization_settings", "update", b, None, None, "30 days", "14 days"),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update tenancy.licences set max_servers = 5")
        conn.execute("delete from tenancy.organization_settings")


def test_tenant_grants_and_memberships_are_audited(fleet):
    url, ids = fleet
    with psycopg.connect(url, autocommit=True) as conn:
        start = conn.execute("select coalesce(max(id), 0) from tenancy.audit_log").fetchone()[0]
        tenancy.grant(conn, "org-b", "sec_sub")
        tenancy.revoke(conn, "org-b", "sec_sub")
        uid = conn.execute("insert into tenancy.users (email) values ('m@example.com') returning id").fetchone()[0]
        conn.execute("insert into tenancy.memberships (user_id, organization_id, role) values (%s, %s, 'admin')",
                     (uid, ids["B"]))
        rows = conn.execute(
            "select login, table_name, action, organization_id, coalesce(new_row, old_row) ->> 'login' "
            "from tenancy.audit_log where id > %s order by id", (start,)).fetchall()
        conn.execute("delete from tenancy.users where id = %s", (uid,))
        # the grant is gone, the membership in rmp_analyst stays (sec_sub keeps org-a1)
        assert tenancy.list_grants(conn, "sec_sub")[0].organization.slug == "org-a1"
    assert rows == [
        ("postgres", "tenant_grants", "insert", ids["B"], "sec_sub"),
        ("postgres", "tenant_grants", "delete", ids["B"], "sec_sub"),
        ("postgres", "memberships", "insert", ids["B"], None),
    ]
