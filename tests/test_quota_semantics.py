"""marts.org_quota_status shows both meanings of a quota (docs/schema.md, "Quota semantics").

Fixture: organization full (licence max_servers 13, 13 servers) with
sub-organization full-kid (2 servers, no licence); organization over
(max_servers 12, 13 servers); organization free (no licence, 1 server).
"""

from __future__ import annotations

import psycopg
import pytest
from conftest import empty_data_tables

from transform.dbt_runner import run_dbt

COLUMNS = ("limit_value", "used_value", "remaining_value", "remaining_clamped", "is_at_limit", "is_exceeded",
           "is_full", "can_add", "used_value_with_children", "is_exceeded_with_children", "is_full_with_children")


@pytest.fixture(scope="module")
def quotas(migrated_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("dbt-quota")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        empty_data_tables(conn)
        ids = {}
        for slug, servers, limit, parent in (("full", 13, 13, None), ("full-kid", 2, None, "full"),
                                             ("over", 13, 12, None), ("free", 1, None, None)):
            ids[slug] = conn.execute(
                "insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) returning id",
                (slug, slug, ids.get(parent))).fetchone()[0]
            conn.execute("insert into tenancy.servers (organization_id, name, cpu_cores) "
                         "select %s, 'srv-' || g, 2 from generate_series(1, %s) g", (ids[slug], servers))
            if limit is not None:
                conn.execute("insert into tenancy.licences (organization_id, max_servers) values (%s, %s)",
                             (ids[slug], limit))
    result = run_dbt(["run", "--select", "+org_quota_status"], migrated_url, work_dir=work)
    assert result.exit_code == 0, result.exception
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        rows = conn.execute(
            f"select organization_id, {', '.join(COLUMNS)} from marts.org_quota_status where quota_name = 'servers'"
        ).fetchall()
        empty_data_tables(conn)
    by_slug = {slug: dict(zip(COLUMNS, r[1:], strict=True)) for slug, oid in ids.items()
               for r in rows if r[0] == oid}
    return by_slug


def test_13_of_13_is_full_for_the_panel_but_not_exceeded(quotas):
    full = quotas["full"]
    assert (full["limit_value"], full["used_value"], full["remaining_value"], full["remaining_clamped"]) == (
        13, 13, 0, 0)
    assert (full["is_at_limit"], full["is_exceeded"], full["is_full"], full["can_add"]) == (True, False, True, False)


def test_13_of_12_is_exceeded_and_the_clamped_remaining_is_0(quotas):
    over = quotas["over"]
    assert (over["remaining_value"], over["remaining_clamped"]) == (-1, 0)
    assert (over["is_at_limit"], over["is_exceeded"], over["is_full"], over["can_add"]) == (False, True, True, False)


def test_sub_organization_usage_counts_against_the_parent_only_in_the_with_children_columns(quotas):
    full = quotas["full"]
    assert (full["used_value_with_children"], full["is_exceeded_with_children"], full["is_full_with_children"]) == (
        15, True, True)
    kid = quotas["full-kid"]
    # no licence of its own: unlimited either way
    assert (kid["limit_value"], kid["used_value"], kid["remaining_clamped"], kid["is_full"], kid["can_add"]) == (
        None, 2, None, False, True)


def test_unlimited_quota_can_always_add(quotas):
    free = quotas["free"]
    assert (free["limit_value"], free["remaining_clamped"], free["is_full"], free["can_add"],
            free["is_exceeded_with_children"]) == (None, None, False, True, False)
