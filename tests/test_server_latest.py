"""metrics.server_latest (what metrics.server_last_point reads) and metrics.organization_cpu_hourly
(what the organization totals read) stay equal to the raw rows: the latest sample of each server,
and CPU sums per organization and hour, whatever writes them: COPY, the loader, INSERT, DELETE, UPDATE,
TRUNCATE, duplicates skipped by ON CONFLICT, compressed chunks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from schema_data import day_start, load, organization, server, sparse_rows

from ingest.loader import load_rows

COLUMNS = ["server_id", "collected_at", "cpu_percent", "memory_used_bytes", "memory_percent",
           "disk_used_bytes", "disk_percent", "network_rx_bytes", "network_tx_bytes", "load_1m"]


def _last_points(db) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in db.execute(
        "select server_id, last_metrics_at, cpu_percent, memory_used_bytes, disk_used_bytes, load_1m"
        " from metrics.server_last_point").fetchall()}


def _truth(db) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in db.execute(
        "select server_id, last_metrics_at, cpu_percent, memory_used_bytes, disk_used_bytes, load_1m"
        " from metrics.server_last_point_from_raw()").fetchall()}


def _fleet(db):
    org = organization(db, "Latest")
    return [server(db, org, name) for name in ("a", "b", "c")]


def test_each_write_path_keeps_the_newest_sample(db):
    a, b, c = _fleet(db)
    t0 = day_start(1)
    # COPY of a's and b's first hour, in time order across servers
    load(db, [r for k in range(120) for r in (sparse_rows(a, [t0 + k * timedelta(seconds=30)], cpu=10 + k / 4)
                                               + sparse_rows(b, [t0 + k * timedelta(seconds=30)], cpu=20.0))])
    newest = t0 + 119 * timedelta(seconds=30)
    assert _last_points(db) == {a: (newest, 10 + 119 / 4, 2_000_000_000, 100_000_000_000, 1.0),
                                b: (newest, 20.0, 2_000_000_000, 100_000_000_000, 1.0)}
    # the loader (several batches, one transaction each), c's samples arriving newest first
    times = [t0 + timedelta(hours=2) - k * timedelta(minutes=1) for k in range(25)]
    inserted, dupes = load_rows(db, "server_metrics", COLUMNS,
                                [(c, t, float(k), 3_000_000_000 + k, 30.0, 200_000_000_000, 40.0, 0, 0, 2.0)
                                 for k, t in enumerate(times)], batch_rows=10)
    assert (inserted, dupes) == (25, 0)
    assert _last_points(db)[c] == (times[0], 0.0, 3_000_000_000, 200_000_000_000, 2.0)
    # an older sample arriving late does not replace the newest
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, 99)",
               (a, t0 - timedelta(days=1)))
    assert _last_points(db)[a][:2] == (newest, 10 + 119 / 4)
    # a re-sent sample with other values is skipped by the loader (ON CONFLICT DO NOTHING): nothing changes
    load_rows(db, "server_metrics", COLUMNS, [(c, times[0], 77.0, 1, 1.0, 1, 1.0, 0, 0, 9.0)])
    assert _last_points(db)[c] == (times[0], 0.0, 3_000_000_000, 200_000_000_000, 2.0)
    # a plain INSERT of a newer sample
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, load_1m)"
               " values (%s, %s, 55.5, 0.5)", (b, newest + timedelta(seconds=30)))
    assert _last_points(db)[b] == (newest + timedelta(seconds=30), 55.5, None, None, 0.5)
    assert _last_points(db) == _truth(db)


def test_delete_update_and_truncate_re_derive_it(db):
    a, b, c = _fleet(db)
    t0 = day_start(1)
    load(db, sparse_rows(a, [t0 + k * timedelta(minutes=1) for k in range(10)], cpu=12.5)
         + sparse_rows(b, [t0 + k * timedelta(minutes=1) for k in range(5)], cpu=30.0))
    assert set(_last_points(db)) == {a, b}
    # the newest sample of a deleted: the one before it is the latest again
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s",
               (a, t0 + timedelta(minutes=9)))
    assert _last_points(db)[a][0] == t0 + timedelta(minutes=8)
    # every sample of b deleted: b has no last point
    db.execute("delete from metrics.server_metrics where server_id = %s", (b,))
    assert set(_last_points(db)) == {a}
    # an update of the latest sample's values
    db.execute("update metrics.server_metrics set cpu_percent = 81.25 where server_id = %s and collected_at = %s",
               (a, t0 + timedelta(minutes=8)))
    assert _last_points(db)[a][:2] == (t0 + timedelta(minutes=8), 81.25)
    assert _last_points(db) == _truth(db)
    db.execute("truncate metrics.server_samples")
    assert _last_points(db) == {}
    # a deleted server takes its last point along
    load(db, sparse_rows(c, [t0]))
    db.execute("delete from tenancy.servers where id = %s", (c,))
    assert _last_points(db) == {}


def test_writes_into_compressed_chunks_are_seen(db):
    a, b, _ = _fleet(db)
    t0 = day_start(5)
    load(db, sparse_rows(a, [t0 + k * timedelta(hours=1) for k in range(48)], cpu=5.0)
         + sparse_rows(b, [t0 + k * timedelta(hours=1) for k in range(24)], cpu=6.0))
    db.execute("select compress_chunk(c, if_not_compressed => true) from show_chunks('metrics.server_samples') c")
    # a newer row of b into a compressed chunk, then a's newest rows deleted from one
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, 7.5)",
               (b, t0 + timedelta(hours=30)))
    assert _last_points(db)[b][:2] == (t0 + timedelta(hours=30), 7.5)
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at >= %s",
               (a, t0 + timedelta(hours=40)))
    assert _last_points(db)[a][0] == t0 + timedelta(hours=39)
    assert _last_points(db) == _truth(db)


# ---------------------------------------------------------------- organization_cpu_hourly

def _cpu_hourly(db) -> dict[tuple, tuple]:
    return {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "select organization_id, hour, cpu_percent_sum, cpu_sample_count from metrics.organization_cpu_hourly"
        " where cpu_sample_count <> 0 or cpu_percent_sum <> 0").fetchall()}


def _cpu_truth(db) -> dict[tuple, tuple]:
    return {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "select s.organization_id, time_bucket(interval '1 hour', m.collected_at),"
        "       coalesce(sum(m.cpu_percent::numeric), 0), count(m.cpu_percent)"
        " from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id"
        " where m.collected_at >= now() - interval '2 days' group by 1, 2").fetchall()}


def test_organization_cpu_hourly_follows_every_write(db):
    org_a, org_b = organization(db, "CpuA"), organization(db, "CpuB")
    a, b = server(db, org_a, "a"), server(db, org_a, "b")
    c = server(db, org_b, "c")
    now = db.execute("select now()").fetchone()[0]
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    step = timedelta(minutes=5)
    # COPY: 3 hours of a and c, and rows 5 days old that the window never holds
    load(db, sparse_rows(a, [hour + k * step for k in range(36)], cpu=10.25)
         + sparse_rows(c, [hour + k * step for k in range(36)], cpu=40.5)
         + sparse_rows(c, [hour - timedelta(days=5)], cpu=99.0))
    got = _cpu_hourly(db)
    assert got[(org_a, hour)] == (12 * 10.25, 12) and got[(org_b, hour)] == (12 * 40.5, 12)
    assert len(got) == 6
    # the loader, b in org_a; a duplicate skipped adds nothing
    load_rows(db, "server_metrics", COLUMNS, [(b, hour + k * step, 20.0, 1, 1.0, 1, 1.0, 0, 0, 1.0)
                                              for k in range(6)])
    load_rows(db, "server_metrics", COLUMNS, [(b, hour, 77.0, 1, 1.0, 1, 1.0, 0, 0, 1.0)])
    assert _cpu_hourly(db)[(org_a, hour)] == (12 * 10.25 + 6 * 20.0, 18)
    # a row without cpu counts nowhere
    db.execute("insert into metrics.server_metrics (server_id, collected_at) values (%s, %s)",
               (b, hour + 7 * step))
    assert _cpu_hourly(db)[(org_a, hour)] == (12 * 10.25 + 6 * 20.0, 18)
    # delete and update
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at < %s", (a, hour + 2 * step))
    db.execute("update metrics.server_metrics set cpu_percent = 50.75 where server_id = %s and collected_at = %s",
               (c, hour + step))
    db.execute("update metrics.server_metrics set collected_at = collected_at + interval '1 hour'"
               " where server_id = %s and collected_at = %s", (b, hour))
    assert _cpu_hourly(db)[(org_a, hour)] == (10 * 10.25 + 5 * 20.0, 15)
    assert _cpu_hourly(db)[(org_b, hour)] == (11 * 40.5 + 50.75, 12)
    assert _cpu_hourly(db) == _cpu_truth(db)
    # b moves to org_b with its samples; c is deleted with its samples
    db.execute("update tenancy.servers set organization_id = %s where id = %s", (org_b, b))
    assert _cpu_hourly(db) == _cpu_truth(db)
    assert _cpu_hourly(db)[(org_b, hour)] == (11 * 40.5 + 50.75 + 5 * 20.0, 17)
    db.execute("delete from tenancy.servers where id = %s", (c,))
    assert _cpu_hourly(db) == _cpu_truth(db)
    assert _cpu_hourly(db)[(org_b, hour)] == (5 * 20.0, 5)
    db.execute("truncate metrics.server_samples")
    assert _cpu_hourly(db) == {}


def test_organization_cpu_hourly_sees_compressed_chunks(db):
    org = organization(db, "CpuZ")
    a = server(db, org, "a")
    now = db.execute("select now()").fetchone()[0]
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    load(db, sparse_rows(a, [hour + k * timedelta(minutes=10) for k in range(30)], cpu=8.5))
    db.execute("select compress_chunk(c, if_not_compressed => true) from show_chunks('metrics.server_samples') c")
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at < %s",
               (a, hour + timedelta(minutes=30)))
    db.execute("update metrics.server_metrics set cpu_percent = 9.5 where collected_at = %s",
               (hour + timedelta(hours=1),))
    assert _cpu_hourly(db)[(org, hour)] == (3 * 8.5, 3)
    assert _cpu_hourly(db) == _cpu_truth(db)


def test_deleting_an_organization_takes_its_servers_and_sums_along(db):
    org, other = organization(db, "Gone"), organization(db, "Stays")
    a, a2, b = server(db, org, "a"), server(db, org, "a2"), server(db, other, "b")
    now = db.execute("select now()").fetchone()[0]
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    load(db, sparse_rows(a, [hour], cpu=10.0) + sparse_rows(a2, [hour], cpu=20.0) + sparse_rows(b, [hour], cpu=30.0))
    db.execute("delete from tenancy.organizations where id = %s", (org,))
    assert _cpu_hourly(db) == {(other, hour): (30.0, 1)} == _cpu_truth(db)
    assert set(_last_points(db)) == {b}


# ---------------------------------------------------------------- organization totals

RAW_TOTALS = """
with recursive tree as (
    select id as root_id, id as organization_id from tenancy.organizations
    union all
    select tree.root_id, children.id from tree join tenancy.organizations as children on children.parent_id = tree.organization_id
),
last_point as (
    select distinct on (server_id) server_id, collected_at, memory_used_bytes, disk_used_bytes
    from metrics.server_metrics order by server_id, collected_at desc
),
cpu as (
    select tree.root_id, avg(m.cpu_percent) as cpu_avg
    from tree
    join tenancy.servers as s on s.organization_id = tree.organization_id
    join metrics.server_metrics as m on m.server_id = s.id
    where time_bucket(interval '1 hour', m.collected_at) >= now() - interval '24 hours'
    group by 1
)
select tree.root_id, count(s.id), sum(last_point.memory_used_bytes), sum(last_point.disk_used_bytes),
       (select cpu.cpu_avg from cpu where cpu.root_id = tree.root_id), max(last_point.collected_at)
from tree
left join tenancy.servers as s on s.organization_id = tree.organization_id
left join last_point on last_point.server_id = s.id
group by tree.root_id order by 1
"""


def _totals_and_truth(db) -> tuple[list[tuple], list[tuple]]:
    """sql/queries/organization_totals.sql and the same figures from the raw rows, at one now()."""
    from rmp import queries

    with db.transaction():
        got = [(r[0], r[2], r[6], r[7], r[8], r[9]) for r in queries.run(db, "organization_totals")]
        truth = db.execute(RAW_TOTALS).fetchall()
    return got, truth


def _samples(server_id: int, times, cpu: float, memory: int) -> list[tuple]:
    return [(server_id, t, cpu, memory + k, 25.0, 100_000_000_000 - k, 20.0, 3000, 1500, 1.0)
            for k, t in enumerate(times)]


def test_organization_totals_equal_the_raw_rows_after_every_kind_of_write(db):
    parent = organization(db, "Parent")
    child = db.execute("insert into tenancy.organizations (name, slug, parent_id) values ('Child', 'child', %s)"
                       " returning id", (parent,)).fetchone()[0]
    other = organization(db, "Other")
    p1, c1, o1 = server(db, parent, "p1"), server(db, child, "c1"), server(db, other, "o1")
    now = db.execute("select now()").fetchone()[0]
    step = timedelta(minutes=5)
    recent = [now - timedelta(hours=3) + k * step for k in range(36)]

    def check() -> list[tuple]:
        got, truth = _totals_and_truth(db)
        assert [r[:4] + r[5:] for r in got] == [r[:4] + r[5:] for r in truth]
        assert [r[4] for r in got] == [pytest.approx(r[4], rel=1e-12) if r[4] is not None else None for r in truth]
        return got

    # COPY of three hours of every server
    load(db, _samples(p1, recent, 10.25, 1_000_000_000) + _samples(c1, recent, 30.5, 2_000_000_000)
         + _samples(o1, recent, 70.75, 3_000_000_000))
    got = {r[0]: r for r in check()}
    assert got[parent][1:4] == (2, 1_000_000_035 + 2_000_000_035, 2 * (100_000_000_000 - 35))
    assert got[parent][4] == pytest.approx((10.25 + 30.5) / 2, rel=1e-12) and got[other][4] == 70.75
    # late rows by the loader: one between c1's samples (in the window), one three days old (outside it)
    load_rows(db, "server_metrics", COLUMNS, [(c1, recent[10] + timedelta(seconds=30), 90.0, 5, 1.0, 5, 1.0, 0, 0, 1.0),
                                              (c1, now - timedelta(days=3), 99.0, 5, 1.0, 5, 1.0, 0, 0, 1.0)])
    got = {r[0]: r for r in check()}
    assert got[child][4] == pytest.approx((36 * 30.5 + 90.0) / 37, rel=1e-12)
    # a newer sample by INSERT; the newest of p1 deleted
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_used_bytes)"
               " values (%s, %s, 1.5, 42)", (o1, recent[-1] + step))
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s", (p1, recent[-1]))
    got = {r[0]: r for r in check()}
    assert got[other][2] == 42 and got[parent][2] == 1_000_000_034 + 2_000_000_035
    # compressed chunks: rows of 30 hours ago compressed, then one written into them and one deleted
    old = [now - timedelta(hours=30) + k * step for k in range(12)]
    load(db, _samples(o1, old, 5.5, 7_000_000_000))
    # (their chunks end before the three recent hours start: those stay uncompressed)
    db.execute("select compress_chunk(format('%%I.%%I', chunk_schema, chunk_name)::regclass, true)"
               " from timescaledb_information.chunks where hypertable_schema = 'metrics'"
               " and hypertable_name = 'server_samples' and range_end <= %s", (recent[0],))
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, 6.5)",
               (p1, old[3] + timedelta(seconds=30)))
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s", (o1, old[0]))
    check()
