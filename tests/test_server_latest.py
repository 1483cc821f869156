"""metrics.server_latest (what metrics.server_last_point reads) stays equal to the raw rows'
latest sample of each server, whatever writes them: COPY, the loader, INSERT, DELETE, UPDATE,
TRUNCATE, duplicates skipped by ON CONFLICT, compressed chunks."""

from __future__ import annotations

from datetime import timedelta

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
    db.execute("truncate metrics.server_metrics")
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
    db.execute("select compress_chunk(c, if_not_compressed => true) from show_chunks('metrics.server_metrics') c")
    # a newer row of b into a compressed chunk, then a's newest rows deleted from one
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, 7.5)",
               (b, t0 + timedelta(hours=30)))
    assert _last_points(db)[b][:2] == (t0 + timedelta(hours=30), 7.5)
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at >= %s",
               (a, t0 + timedelta(hours=40)))
    assert _last_points(db)[a][0] == t0 + timedelta(hours=39)
    assert _last_points(db) == _truth(db)
