"""marts.server_snapshots: wide metrics joined with the narrow connection count, status from the thresholds.

Fixture (as_of = T0 + 1 h): server web-1 reports 4 samples at T0 + 0/30/60/90 s
with cpu 50, 95, 40, 40 and disk 10, 10, 96, 10, and connection_count
samples at T0 and T0 + 60 s only; server web-2 reports one sample at
as_of - 30 s. Thresholds (dbt_project.yml): cpu 90, memory 90, disk 95;
stale after 2 x 30 s.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import empty_data_tables

from transform.dbt_runner import run_dbt

T0 = datetime(2025, 2, 3, 8, 0, tzinfo=UTC)
AS_OF = T0 + timedelta(hours=1)


@pytest.fixture(scope="module")
def snapshots(migrated_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("dbt-snapshots")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        empty_data_tables(conn)
        org = conn.execute("insert into tenancy.organizations (name, slug) values ('snap', 'snap') "
                           "returning id").fetchone()[0]
        web1, web2 = (conn.execute("insert into tenancy.servers (organization_id, name) values (%s, %s) returning id",
                                   (org, name)).fetchone()[0] for name in ("web-1", "web-2"))
        for i, (cpu, disk) in enumerate(((50, 10), (95, 10), (40, 96), (40, 10))):
            conn.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_percent, "
                         "disk_percent) values (%s, %s, %s, 20, %s)", (web1, T0 + timedelta(seconds=30 * i), cpu, disk))
        conn.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_percent, "
                     "disk_percent) values (%s, %s, 10, 91, 10)", (web2, AS_OF - timedelta(seconds=30)))
        conn.execute("insert into metrics.metric_samples (server_id, metric_type_id, collected_at, value) "
                     "select %s, id, t, v from metrics.metric_types, (values (%s::timestamptz, 12.0), (%s, 17.0)) x(t, v) "
                     "where name = 'connection_count'", (web1, T0, T0 + timedelta(seconds=60)))
    result = run_dbt(["run", "--select", "+server_snapshots", "--vars", json.dumps({"as_of": AS_OF.isoformat()})],
                     migrated_url, work_dir=work)
    assert result.exit_code == 0, result.exception
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        rows = conn.execute("select server_id, collected_at, cpu_percent, connection_count, snapshot_status "
                            "from marts.server_snapshots order by server_id, collected_at").fetchall()
        empty_data_tables(conn)
    return web1, web2, rows


def test_status_follows_thresholds_and_staleness(snapshots):
    web1, web2, rows = snapshots
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        (web1, T0, 50.0, "ok"),
        (web1, T0 + timedelta(seconds=30), 95.0, "degraded"),           # cpu >= 90
        (web1, T0 + timedelta(seconds=60), 40.0, "degraded"),           # disk >= 95
        (web1, T0 + timedelta(seconds=90), 40.0, "down"),               # latest, an hour old
        (web2, AS_OF - timedelta(seconds=30), 10.0, "degraded"),        # memory 91, fresh: not down
    ]


def test_connection_count_comes_from_the_narrow_samples_at_the_same_instant(snapshots):
    _, _, rows = snapshots
    assert [r[3] for r in rows] == [12.0, None, 17.0, None, None]
