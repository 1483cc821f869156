"""`dbt build` on a fleet from the project's generator (ingest.generator), as `rmp demo` runs it.

The generator's licences are designed: the first organization sits exactly
at its server limit, the second is one server over it. The marts must say so,
and count every generated server, application and database where it belongs.
"""

from __future__ import annotations

import psycopg

from ingest.fleet_writers import write_fleet
from ingest.generator import generate_fleet
from transform.dbt_runner import run_dbt


def test_build_on_generated_fleet_reports_its_designed_quotas(db, migrated_url, tmp_path):
    fleet = generate_fleet(seed=7, organizations=2, servers=4, days=1, sites_per_server=1)
    write_fleet(fleet, migrated_url)

    result = run_dbt(["build"], migrated_url, work_dir=tmp_path)

    assert result.success, result.failures()
    with psycopg.connect(migrated_url) as conn:
        slug_of = dict(conn.execute("select id, slug from tenancy.organizations").fetchall())
        usage = {
            slug_of[org]: (servers, apps, dbs)
            for org, servers, apps, dbs in conn.execute(
                "select organization_id, count_servers, count_applications, count_databases "
                "from marts.org_resource_usage"
            )
        }
        quotas = {
            slug_of[org]: (limit, used, remaining, at_limit, exceeded)
            for org, limit, used, remaining, at_limit, exceeded in conn.execute(
                "select organization_id, limit_value, used_value, remaining_value, is_at_limit, is_exceeded "
                "from marts.org_quota_status where quota_name = 'servers'"
            )
        }
        rollup = {
            slug_of[org]: total
            for org, total in conn.execute("select organization_id, total_count_servers from marts.org_usage_rollup")
        }
        scored = conn.execute(
            "select count(*), count(capacity_score), count(*) filter (where capacity_rank_in_organization = 1) "
            "from marts.server_capacity"
        ).fetchone()

    orgs = [o.slug for o in fleet.organizations]
    assert sorted(usage) == sorted(orgs)
    for slug in orgs:
        assert usage[slug] == (
            sum(s.organization == slug for s in fleet.servers),
            sum(a.organization == slug for a in fleet.applications),
            sum(d.organization == slug for d in fleet.databases),
        )
    first, second = orgs[0], orgs[1]
    n_first = usage[first][0]
    n_second = usage[second][0]
    assert quotas[first] == (n_first, n_first, 0, True, False)
    assert quotas[second] == (n_second - 1, n_second, -1, False, True)
    # the sub-organization generated under the first organization rolls up into it
    children = [o.slug for o in fleet.organizations if o.parent == first]
    assert children
    assert rollup[first] == n_first + sum(usage[c][0] for c in children)
    # one day of data for every server: each is scored; one pick per organization with servers
    with_servers = sum(1 for slug in orgs if usage[slug][0] > 0)
    assert scored == (len(fleet.servers), len(fleet.servers), with_servers)
