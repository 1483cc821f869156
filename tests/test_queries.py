"""The analyst queries in sql/queries/ return exactly what the raw rows say."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from schema_data import load

from rmp import catalog, queries

STEP = timedelta(minutes=10)
K = 40 * 144  # 40 days of one sample per 10 minutes per server


def _floor(t: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return t - (t - epoch) % width


@pytest.fixture
def fleet(db):
    parent = db.execute("insert into tenancy.organizations (name, slug) values ('parent', 'parent') returning id"
                        ).fetchone()[0]
    child = db.execute("insert into tenancy.organizations (name, slug, parent_id) values ('child', 'child', %s)"
                       " returning id", (parent,)).fetchone()[0]
    servers = []
    for org, name, cores in ((parent, "a", 4), (parent, "b", 8), (child, "c", 16)):
        servers.append(db.execute(
            "insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes, disk_total_bytes)"
            " values (%s, %s, %s, %s, %s) returning id",
            (org, name, cores, cores * 2_000_000_000, cores * 100_000_000_000),
        ).fetchone()[0])
    base = _floor(datetime.now(UTC), STEP)
    rows = []
    for i, sid in enumerate(servers):
        for k in range(1, K + 1):
            rows.append((
                sid, base - k * STEP, ((k * 37 + 11 * i) % 401) / 4, 1_000_000_000 + (k % 1000) * 1_000_000,
                25.0, 100_000_000_000 - k * 1000, 20.0, (k % 97) * 30, (k % 89) * 30, 1.5,
            ))
    load(db, rows)
    return {"parent": parent, "child": child, "servers": servers, "rows": rows}


def _expected_buckets(rows, sid: int, width: timedelta, since: datetime) -> list[tuple]:
    groups: dict[datetime, list[tuple]] = defaultdict(list)
    for r in rows:
        if r[0] == sid:
            groups[_floor(r[1], width)].append(r)
    out = []
    for bucket in sorted(b for b in groups if b >= since):
        g = groups[bucket]
        cpu = np.array([r[2] for r in g])
        out.append((bucket, len(g), cpu.sum() / len(g), cpu.max(), np.percentile(cpu, 95),
                    sum(r[3] for r in g) / len(g), float(max(r[3] for r in g)), float(max(r[5] for r in g)),
                    sum(r[7] / 30 for r in g) / len(g), sum(r[8] / 30 for r in g) / len(g)))
    return out


@pytest.mark.parametrize("window", [timedelta(hours=24), timedelta(days=7), timedelta(days=30)],
                         ids=["24h", "7d", "30d"])
def test_server_window_query_reads_the_right_aggregate(db, fleet, window):
    # buckets of the tier the catalog maps the window to (pinned in tests/test_catalog.py)
    width = catalog.tier_for_window(window).bucket
    sid = fleet["servers"][1]
    now = db.execute("select now()").fetchone()[0]
    got = queries.run(db, "server_window", server_id=sid, window=window)
    expected = _expected_buckets(fleet["rows"], sid, width, now - window)
    assert [r[0] for r in got] == [e[0] for e in expected]
    # one bucket per sample width step inside the window, give or take the partial edges
    assert abs(len(got) - window / max(width, STEP)) <= 1
    for g, e in zip(got, expected, strict=True):
        assert g[1] == e[1]                            # sample_count
        assert (g[2], g[3]) == (e[2], e[3])            # cpu avg, max (quarters: exact)
        assert g[4] == pytest.approx(e[4], rel=1e-12)  # cpu p95
        assert (g[5], g[6], g[7]) == (e[5], e[6], e[7])
        assert g[8] == pytest.approx(e[8], rel=1e-12) and g[9] == pytest.approx(e[9], rel=1e-12)


def test_organization_totals_roll_sub_organizations_into_parents(db, fleet):
    a, b, c = fleet["servers"]
    now = db.execute("select now()").fetchone()[0]
    got = {r[1]: r for r in queries.run(db, "organization_totals")}
    assert set(got) == {"parent", "child"}
    last_at = fleet["rows"][0][1]  # k = 1 is the newest sample of every server
    mem_now, disk_now = 1_000_000_000 + 1_000_000, 100_000_000_000 - 1000

    def cpu_24h(sids):
        since = now - timedelta(hours=24)
        vals = [r[2] for r in fleet["rows"] if r[0] in sids and _floor(r[1], timedelta(hours=1)) >= since]
        return sum(vals) / len(vals)

    parent = got["parent"]
    assert parent[0] == fleet["parent"]
    assert parent[2:8] == (3, 28, 56_000_000_000, 2_800_000_000_000, 3 * mem_now, 3 * disk_now)
    assert parent[8] == pytest.approx(cpu_24h({a, b, c}), rel=1e-12)
    assert parent[9] == last_at
    child = got["child"]
    assert child[2:8] == (1, 16, 32_000_000_000, 1_600_000_000_000, mem_now, disk_now)
    assert child[8] == pytest.approx(cpu_24h({c}), rel=1e-12)


def test_compare_servers_side_by_side(db, fleet):
    a, _, c = fleet["servers"]
    now = db.execute("select now()").fetchone()[0]
    got = queries.run(db, "compare_servers", server_ids=[c, a], since="7 days")
    assert [r[0] for r in got] == [a, c]
    hour = timedelta(hours=1)
    for row in got:
        sid = row[0]
        rows = [r for r in fleet["rows"] if r[0] == sid and _floor(r[1], hour) >= now - timedelta(days=7)]
        hours = defaultdict(list)
        for r in rows:
            hours[_floor(r[1], hour)].append(r[2])
        cpu = [r[2] for r in rows]
        assert row[1] == {a: "a", c: "c"}[sid]
        assert row[2] == len(rows)
        assert row[3] == pytest.approx(sum(cpu) / len(cpu), rel=1e-12)
        assert row[4] == max(cpu)
        assert row[5] == pytest.approx(max(np.percentile(v, 95) for v in hours.values()), rel=1e-12)
        assert row[6] == float(max(r[3] for r in rows))
        assert row[8] == pytest.approx(sum(r[7] / 30 for r in rows) / len(rows), rel=1e-12)


def test_history_pages_follow_each_other_without_gaps(db, fleet):
    sid = fleet["servers"][0]
    newest = [r for r in fleet["rows"] if r[0] == sid][:12]  # k = 1..12, newest first
    page1 = queries.run(db, "server_history_page", server_id=sid, before="infinity", page_size=5)
    page2 = queries.run(db, "server_history_page", server_id=sid, before=page1[-1][0], page_size=5)
    assert [(r[0], r[1]) for r in page1 + page2] == [(r[1], r[2]) for r in newest[:10]]


def test_query_with_a_missing_variable_names_it(db):
    with pytest.raises(queries.QueryError, match="server_window needs server_id, window"):
        queries.run(db, "server_window")
    with pytest.raises(queries.QueryError, match="no query 'nope'"):
        queries.run(db, "nope")


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_query_files_run_in_psql_with_variables(db, fleet, migrated_url):
    sid = fleet["servers"][2]
    out = subprocess.run(
        ["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-v", f"server_id={sid}", "-v", "before=infinity",
         "-v", "page_size=3", "-f", str(queries.QUERIES_DIR / "server_history_page.sql"), migrated_url],
        capture_output=True, text=True, check=True,
    ).stdout
    got = list(csv.DictReader(io.StringIO(out)))
    expected = queries.run(db, "server_history_page", server_id=sid, before="infinity", page_size=3)
    assert [(datetime.fromisoformat(r["collected_at"]), float(r["cpu_percent"])) for r in got] == [
        (r[0], r[1]) for r in expected]
    assert len(got) == 3


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_server_window_runs_in_psql_with_a_window_variable(db, fleet, migrated_url):
    sid = fleet["servers"][0]
    out = subprocess.run(
        ["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-v", f"server_id={sid}", "-v", "window=7 days",
         "-f", str(queries.QUERIES_DIR / "server_window.sql"), migrated_url],
        capture_output=True, text=True, check=True,
    ).stdout
    got = [datetime.fromisoformat(r["bucket"]) for r in csv.DictReader(io.StringIO(out))]
    expected = [r[0] for r in queries.run(db, "server_window", server_id=sid, window=timedelta(days=7))]
    assert got == expected
    assert abs(len(got) - 7 * 144) <= 1  # one 10-minute sample per 5-minute bucket
