"""Constraints and cascades of the core schema (docs/schema.md), on the real engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from rmp import catalog

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _org(db, name: str, parent: int | None = None) -> int:
    return db.execute(
        "insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) returning id",
        (name, name.lower(), parent),
    ).fetchone()[0]


def _server(db, org: int, name: str = "web-1") -> int:
    return db.execute(
        "insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes, disk_total_bytes)"
        " values (%s, %s, 8, 16000000000, 500000000000) returning id",
        (org, name),
    ).fetchone()[0]


@pytest.mark.parametrize("column", [c for c in (*catalog.SERVER_METRICS, *catalog.SITE_USAGE)
                                    if c.bounds != catalog.UNBOUNDED], ids=lambda c: f"{c.table}.{c.name}")
def test_a_value_outside_the_catalog_bounds_is_rejected_naming_the_column(db, column):
    """cpu_percent 150, network_rx_bytes -1, ...: each bounded column's CHECK, named for the column."""
    lower, upper = column.bounds
    bad = upper + 50 if upper is not None else lower - 1
    server = _server(db, _org(db, "acme"))
    owner_column, owner = "server_id", server
    if column.table == "site_usage":
        owner_column, owner = "site_id", db.execute(
            "insert into tenancy.sites (organization_id, server_id, name) select organization_id, id, 'shop'"
            " from tenancy.servers where id = %s returning id", (server,)).fetchone()[0]
    table = sql.Identifier("metrics", column.table)
    with pytest.raises(psycopg.errors.CheckViolation, match=column.check_name):
        db.execute(sql.SQL("insert into {} ({}, collected_at, {}) values (%s, %s, %s)").format(
            table, sql.Identifier(owner_column), sql.Identifier(column.name)), (owner, T0, bad))
    assert db.execute(sql.SQL("select count(*) from {}").format(table)).fetchone()[0] == 0


def test_resent_sample_is_deduplicated_on_server_and_time(db):
    server = _server(db, _org(db, "acme"))
    # through the view: a re-sent sample is ignored (as `rmp ingest` ignores it)
    for cpu in (10.0, 20.0):
        db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, %s)",
                   (server, T0, cpu))
    assert db.execute("select count(*), max(cpu_percent) from metrics.server_metrics").fetchone() == (1, 10.0)
    # an upsert goes to the table under it (its key is the unique index)
    db.execute("insert into metrics.server_samples (server_id, collected_at, cpu_percent_x100) values (%s, %s, 2000)"
               " on conflict (server_id, collected_at) do update set cpu_percent_x100 = excluded.cpu_percent_x100",
               (server, T0))
    assert db.execute("select count(*), max(cpu_percent) from metrics.server_metrics").fetchone() == (1, 20.0)


def test_deleting_a_server_deletes_its_metrics_only(db):
    org = _org(db, "acme")
    gone, kept = _server(db, org, "web-1"), _server(db, org, "web-2")
    gpu = db.execute("select id from metrics.metric_types where name = 'gpu_utilization'").fetchone()[0]
    for server in (gone, kept):
        for i in range(10):
            at = T0 + timedelta(seconds=30 * i)
            db.execute(
                "insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, %s)",
                (server, at, float(i)),
            )
            db.execute(
                "insert into metrics.metric_samples (server_id, metric_type_id, collected_at, value)"
                " values (%s, %s, %s, %s)",
                (server, gpu, at, 50.0),
            )
        db.execute(
            "insert into metrics.scaling_events (server_id, event_type, executed_at, completed_at)"
            " values (%s, 'scale_up', %s, %s)",
            (server, T0, T0 + timedelta(minutes=2)),
        )
    db.execute("delete from tenancy.servers where id = %s", (gone,))
    for table in ("server_metrics", "metric_samples", "scaling_events"):
        rows = db.execute(f"select server_id, count(*) from metrics.{table} group by 1").fetchall()
        assert rows == [(kept, 10 if table != "scaling_events" else 1)], table


def test_deleting_an_organization_cascades_to_sub_organizations_and_servers(db):
    parent = _org(db, "parent")
    child = _org(db, "child", parent)
    _org(db, "grandchild", child)
    _server(db, child)
    db.execute("delete from tenancy.organizations where id = %s", (parent,))
    assert db.execute("select count(*) from tenancy.organizations").fetchone()[0] == 0
    assert db.execute("select count(*) from tenancy.servers").fetchone()[0] == 0


def test_organization_parent_cycle_is_rejected(db):
    a = _org(db, "a")
    b = _org(db, "b", a)
    c = _org(db, "c", b)
    with pytest.raises(psycopg.errors.CheckViolation, match="cycle"):
        db.execute("update tenancy.organizations set parent_id = %s where id = %s", (c, a))
    assert db.execute("select parent_id from tenancy.organizations where id = %s", (a,)).fetchone()[0] is None


def test_site_belongs_to_a_user_or_an_organization_not_both(db):
    org = _org(db, "acme")
    user = db.execute("insert into tenancy.users (email) values ('a@example.com') returning id").fetchone()[0]
    with pytest.raises(psycopg.errors.CheckViolation, match="sites_one_owner"):
        db.execute("insert into tenancy.sites (organization_id, user_id, name) values (%s, %s, 's')", (org, user))
    with pytest.raises(psycopg.errors.CheckViolation, match="sites_one_owner"):
        db.execute("insert into tenancy.sites (name) values ('s')")
    db.execute("insert into tenancy.sites (user_id, name) values (%s, 'mine')", (user,))
    assert db.execute("select count(*) from tenancy.sites").fetchone()[0] == 1


def test_membership_is_unique_per_user_and_organization(db):
    org = _org(db, "acme")
    user = db.execute("insert into tenancy.users (email) values ('a@example.com') returning id").fetchone()[0]
    db.execute("insert into tenancy.memberships (user_id, organization_id, role) values (%s, %s, 'owner')", (user, org))
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("insert into tenancy.memberships (user_id, organization_id) values (%s, %s)", (user, org))


def test_metric_types_catalog_holds_the_gpu_types(db):
    rows = db.execute(
        "select name, unit, kind from metrics.metric_types where name like 'gpu%%' order by name"
    ).fetchall()
    assert rows == [
        ("gpu_memory_used_bytes", "bytes", "gauge"),
        ("gpu_temperature", "celsius", "gauge"),
        ("gpu_utilization", "percent", "gauge"),
    ]


def test_server_last_point_is_the_newest_sample(db):
    server = _server(db, _org(db, "acme"))
    for i, cpu in enumerate((5.0, 7.5, 9.0)):
        db.execute(
            "insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_percent, load_1m)"
            " values (%s, %s, %s, %s, %s)",
            (server, T0 + timedelta(seconds=30 * i), cpu, 40.0 + i, 0.5 * i),
        )
    row = db.execute(
        "select server_id, last_metrics_at, cpu_percent, memory_percent, load_1m from metrics.server_last_point"
    ).fetchall()
    assert row == [(server, T0 + timedelta(seconds=60), 9.0, 42.0, 1.0)]
