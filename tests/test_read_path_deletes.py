"""DELETE and UPDATE of recent rows of metrics.server_metrics under the fleet read path
(sql/idempotent/read-path-changes.sql): changed rows are logged to the session's
pg_temp.rmp_read_path_changes and applied once per statement. After every statement
metrics.organization_cpu_hourly equals the sums and counts recomputed from the raw rows,
metrics.server_latest equals the raw last point of every server, and the log is empty:
large deletes, value updates, rows moved across hours, into and out of the two-day window
and to another server, upserts, several statements in one transaction, rolled-back
statements and savepoints, deletes mixed with inserts, compressed chunks, a server whose
last point is older than the window. And the log cannot be swapped for a user's table, nor
the functions that write the two tables called by a loader."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from schema_data import load, organization, server, sparse_rows, thirty_second_day

STEP = timedelta(seconds=30)


def _hourly(db) -> dict[tuple, tuple]:
    """metrics.organization_cpu_hourly without the rows a delete brought down to nothing."""
    return {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "select organization_id, hour, cpu_percent_sum, cpu_sample_count from metrics.organization_cpu_hourly"
        " where cpu_sample_count <> 0 or cpu_percent_sum <> 0").fetchall()}


def _hourly_truth(db) -> dict[tuple, tuple]:
    return {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
        "select s.organization_id, time_bucket(interval '1 hour', m.collected_at),"
        "       coalesce(sum(m.cpu_percent::numeric), 0), count(m.cpu_percent)"
        " from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id"
        " where m.collected_at >= now() - interval '2 days' group by 1, 2"
        " having count(m.cpu_percent) <> 0").fetchall()}


def _latest(db) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in db.execute("select * from metrics.server_latest").fetchall()}


def _latest_truth(db) -> dict[int, tuple]:
    return {r[0]: r[1:] for r in db.execute("select * from metrics.server_last_point_from_raw()").fetchall()}


def _log_rows(db) -> int:
    """Rows left in this session's change log (0 when the session never created it)."""
    if db.execute("select to_regclass('pg_temp.rmp_read_path_changes')").fetchone()[0] is None:
        return 0
    return db.execute("select count(*) from pg_temp.rmp_read_path_changes").fetchone()[0]


def _check(db) -> dict[tuple, tuple]:
    """Both tables equal the raw rows, and the statement left nothing in the log."""
    hourly = _hourly(db)
    assert hourly == _hourly_truth(db)
    assert _latest(db) == _latest_truth(db)
    assert _log_rows(db) == 0
    return hourly


def _now(db) -> datetime:
    return db.execute("select now()").fetchone()[0]


def _fleet(db, day_start: datetime) -> tuple[int, int, list[int]]:
    """Two organizations; four servers with a day of 30-s samples ending at ``day_start`` + 1 day."""
    org_a, org_b = organization(db, "DelA"), organization(db, "DelB")
    servers = [server(db, org_a, "a1"), server(db, org_a, "a2"), server(db, org_b, "b1"), server(db, org_b, "b2")]
    load(db, thirty_second_day(servers, day_start))
    return org_a, org_b, servers


def _recent_day(db) -> datetime:
    """The start of a day of samples ending at the current minute: every row inside the window."""
    return _now(db).replace(second=0, microsecond=0) - timedelta(days=1)


def test_large_deletes_and_value_updates_apply_once_per_statement(db):
    start = _recent_day(db)
    org_a, org_b, (a1, a2, b1, b2) = _fleet(db, start)
    before = _check(db)
    assert sum(n for _, n in before.values()) == 4 * 2880
    # every sample of a1 and the last 12 hours of b1 (one statement, 4,320 rows)
    deleted = db.execute("delete from metrics.server_metrics where server_id = %s"
                         " or (server_id = %s and collected_at >= %s)", (a1, b1, start + timedelta(hours=12))).rowcount
    assert deleted == 2880 + 1440
    after = _check(db)
    assert sum(n for (org, _), (_, n) in after.items() if org == org_a) == 2880
    assert sum(n for (org, _), (_, n) in after.items() if org == org_b) == 2880 + 1440
    assert a1 not in _latest(db)
    assert _latest(db)[b1][0] == start + timedelta(hours=12) - STEP
    # a value change of every row of a2 (the last point's cpu too), and of b2's memory only
    db.execute("update metrics.server_metrics set cpu_percent = cpu_percent / 2 + 0.25 where server_id = %s", (a2,))
    db.execute("update metrics.server_metrics set memory_used_bytes = memory_used_bytes + 1 where server_id = %s",
               (b2,))
    after = _check(db)
    assert sum(n for (org, _), (_, n) in after.items() if org == org_a) == 2880
    newest = start + 2879 * STEP
    assert _latest(db)[b2][0] == newest
    raw_b2 = db.execute("select memory_used_bytes from metrics.server_metrics where server_id = %s"
                        " and collected_at = %s", (b2, newest)).fetchone()[0]
    assert _latest(db)[b2][3] == raw_b2
    # rows set to no cpu at all count nowhere; a delete of nothing changes nothing
    db.execute("update metrics.server_metrics set cpu_percent = null where server_id = %s and collected_at < %s",
               (a2, start + timedelta(hours=1)))
    assert db.execute("delete from metrics.server_metrics where server_id = -1").rowcount == 0
    after = _check(db)
    assert sum(n for (org, _), (_, n) in after.items() if org == org_a) == 2880 - 120


def test_updates_move_rows_across_hours_and_to_other_servers(db):
    start = _recent_day(db)
    org_a, org_b, (a1, a2, b1, b2) = _fleet(db, start)
    # an hour of the day whose next 70 minutes stay in its chunk (a day: rows cannot change chunk)
    hour = next(h for h in (start.replace(minute=0) + timedelta(hours=k) for k in range(2, 20))
                if (h + timedelta(minutes=70)).date() == h.date())
    # a1's samples of one hour moved 10 minutes later: 20 of them into the next hour
    # (each row lands on a free time: the 10 minutes after the hour were deleted first)
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at >= %s and collected_at < %s",
               (a1, hour + timedelta(hours=1), hour + timedelta(hours=1, minutes=10)))
    moved = db.execute("update metrics.server_metrics set collected_at = collected_at + interval '10 minutes'"
                       " where server_id = %s and collected_at >= %s and collected_at < %s",
                       (a1, hour, hour + timedelta(hours=1))).rowcount
    assert moved == 120
    after = _check(db)
    assert after[(org_a, hour)][1] == 2 * 120 - 20
    assert after[(org_a, hour + timedelta(hours=1))][1] == 2 * 120
    # a2's newest sample handed to b1 (another organization): a2's last point goes back one
    # sample, b1's becomes it, and org_b's hour gains the row org_a's loses
    newest = start + 2879 * STEP
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s", (b1, newest))
    db.execute("update metrics.server_metrics set server_id = %s where server_id = %s and collected_at = %s",
               (b1, a2, newest))
    after = _check(db)
    assert _latest(db)[a2][0] == newest - STEP and _latest(db)[b1][0] == newest
    last_hour = newest.replace(minute=0, second=0)
    assert after[(org_a, last_hour)][1] == after[(org_b, last_hour)][1] - 1


def test_rows_moved_into_and_out_of_the_two_day_window(db):
    org = organization(db, "Edge")
    a, b = server(db, org, "a"), server(db, org, "b")
    with db.transaction():      # one now(): the window's edge does not move under the test
        edge = _now(db) - timedelta(days=2)
        if (edge - timedelta(minutes=15)).date() != (edge + timedelta(minutes=2)).date():
            pytest.skip("the window's edge is within minutes of midnight: rows cannot move to another chunk")
        load(db, sparse_rows(a, [edge - timedelta(minutes=2), edge - timedelta(minutes=1)], cpu=10.25)
             + sparse_rows(b, [edge + timedelta(minutes=1), edge + timedelta(minutes=2)], cpu=20.5))
        before = _check(db)
        assert sum(n for _, n in before.values()) == 2
        # into the window: a's older sample; out of it: b's newer sample
        db.execute("update metrics.server_metrics set collected_at = %s where server_id = %s and collected_at = %s",
                   (edge + timedelta(seconds=30), a, edge - timedelta(minutes=2)))
        db.execute("update metrics.server_metrics set collected_at = %s, cpu_percent = 30.75"
                   " where server_id = %s and collected_at = %s",
                   (edge - timedelta(minutes=3), b, edge + timedelta(minutes=2)))
        after = _check(db)
        assert (sum(s for s, _ in after.values()), sum(n for _, n in after.values())) == (Decimal("30.75"), 2)
        assert _latest(db)[a][:2] == (edge + timedelta(seconds=30), 10.25)
        assert _latest(db)[b][:2] == (edge + timedelta(minutes=1), 20.5)
        # both rows of a out of the window (no row trigger fires): a's last point follows anyway
        db.execute("update metrics.server_metrics set collected_at = collected_at - interval '10 minutes'"
                   " where server_id = %s", (a,))
        _check(db)
        assert _latest(db)[a][0] == edge - timedelta(minutes=9, seconds=30)


def test_several_statements_savepoints_and_a_rollback_in_one_transaction(db):
    start = _recent_day(db)
    org_a, org_b, (a1, a2, b1, b2) = _fleet(db, start)
    before = _check(db)
    latest_before = _latest(db)
    # a rolled-back delete: nothing changes, nothing stays in the log
    with pytest.raises(psycopg.errors.DivisionByZero), db.transaction():
        db.execute("delete from metrics.server_metrics where server_id = %s", (a1,))
        assert _log_rows(db) == 0 and _latest(db).get(a1) is None
        db.execute("select 1 / 0")
    assert _check(db) == before and _latest(db) == latest_before
    # several statements of one transaction, each applied at its end; a savepoint rolled back
    with db.transaction():
        db.execute("delete from metrics.server_metrics where server_id = %s and collected_at < %s",
                   (a1, start + timedelta(hours=6)))
        _check(db)
        db.execute("update metrics.server_metrics set cpu_percent = 99.75 where server_id = %s", (b1,))
        _check(db)
        with pytest.raises(psycopg.errors.DivisionByZero), db.transaction():
            db.execute("delete from metrics.server_metrics where server_id = %s", (b2,))
            db.execute("select 1 / 0")
        _check(db)
        assert db.execute("select count(*) from metrics.server_metrics where server_id = %s", (b2,)).fetchone()[0] == 2880
        assert b2 in _latest(db)
        db.execute("delete from metrics.server_metrics where server_id = %s and collected_at >= %s",
                   (a2, start + timedelta(hours=20)))
        _check(db)
    after = _check(db)
    assert sum(n for (org, _), (_, n) in after.items() if org == org_a) == 2 * 2880 - 720 - 480
    assert sum(s for (org, _), (s, _) in after.items() if org == org_b) == (
        2880 * Decimal("99.75") + db.execute("select sum(cpu_percent::numeric) from metrics.server_metrics where server_id = %s",
                                  (b2,)).fetchone()[0])


def test_deletes_mixed_with_inserts_and_upserts(db):
    start = _recent_day(db)
    org_a, org_b, (a1, a2, b1, b2) = _fleet(db, start)
    newest = start + 2879 * STEP
    with db.transaction():
        db.execute("delete from metrics.server_metrics where server_id = %s and collected_at > %s",
                   (a1, newest - timedelta(hours=1)))
        load(db, sparse_rows(a1, [newest - timedelta(minutes=30) + k * timedelta(minutes=1) for k in range(5)],
                             cpu=12.5))
        _check(db)
        db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, 7.25)",
                   (a2, newest + STEP))
        db.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s", (a2, newest + STEP))
        _check(db)
    assert _latest(db)[a1][:2] == (newest - timedelta(minutes=26), 12.5)
    assert _latest(db)[a2][0] == newest
    # an upsert: the conflicting row updated (row trigger and statement trigger of UPDATE), a new one inserted
    # (on the table under the view: ON CONFLICT needs its unique index)
    db.execute("insert into metrics.server_samples (server_id, collected_at, cpu_percent_x100) values (%s, %s, 150),"
               " (%s, %s, 250) on conflict (server_id, collected_at) do update set cpu_percent_x100 = excluded.cpu_percent_x100",
               (b1, newest, b1, newest + STEP))
    after = _check(db)
    assert _latest(db)[b1][:2] == (newest + STEP, 2.5)
    assert sum(n for (org, _), (_, n) in after.items() if org == org_b) == 2 * 2880 + 1


def test_compressed_chunks_and_a_server_silent_for_days(db):
    org = organization(db, "Quiet")
    live, quiet, spare = server(db, org, "live"), server(db, org, "quiet"), server(db, org, "spare")
    now = _now(db)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    load(db, sparse_rows(live, [hour + k * timedelta(minutes=10) for k in range(30)], cpu=8.5)
         + sparse_rows(quiet, [now - timedelta(days=4, hours=k) for k in range(3)], cpu=3.25))
    db.execute("select compress_chunk(c, if_not_compressed => true) from show_chunks('metrics.server_samples') c")
    _check(db)
    # by the segment-by column alone (TimescaleDB could drop whole compressed batches without
    # the rows reaching a row trigger: with the read path's triggers it decompresses them)
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at < %s",
               (live, hour + timedelta(hours=2)))
    db.execute("delete from metrics.server_metrics where server_id = %s", (live,))
    _check(db)
    assert live not in _latest(db)
    # the quiet server's newest sample, four days old: no row trigger fires, its last point follows
    db.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s",
               (quiet, now - timedelta(days=4)))
    _check(db)
    assert _latest(db)[quiet][:2] == (now - timedelta(days=4, hours=1), 3.25)
    # its oldest sample handed to a server without any: an UPDATE outside the window that moves
    # a row to another server is logged too
    db.execute("update metrics.server_metrics set server_id = %s where server_id = %s and collected_at = %s",
               (spare, quiet, now - timedelta(days=4, hours=2)))
    _check(db)
    assert _latest(db)[spare][:2] == (now - timedelta(days=4, hours=2), 3.25)


def test_deleting_servers_and_organizations_leaves_no_stale_sums(db):
    start = _recent_day(db)
    org_a, org_b, (a1, a2, b1, b2) = _fleet(db, start)
    with db.transaction():
        db.execute("delete from tenancy.servers where id = %s", (a1,))     # its rows cascade from the chunks
        db.execute("delete from metrics.server_metrics where server_id = %s and collected_at < %s",
                   (a2, start + timedelta(hours=1)))
        _check(db)
    db.execute("delete from tenancy.organizations where id = %s", (org_b,))
    after = _check(db)
    assert {org for org, _ in after} == {org_a}
    assert sum(n for _, n in after.values()) == 2880 - 120
    assert set(_latest(db)) == {a2}


def test_the_log_cannot_be_a_table_someone_else_created(db, migrated_url):
    org = organization(db, "Guard")
    a = server(db, org, "a")
    now = _now(db)
    load(db, sparse_rows(a, [now - timedelta(hours=1, minutes=k) for k in range(4)], cpu=5.0))
    before = _check(db)
    with psycopg.connect(migrated_url, autocommit=True) as admin:
        admin.execute("set role rmp_admin")
        # the fleet read path's own log works for a role that is not its owner
        admin.execute("delete from metrics.server_metrics where server_id = %s and collected_at = %s",
                      (a, now - timedelta(hours=1, minutes=3)))
        assert _hourly(db) == _hourly_truth(db) != before
        # a table of the same name created by that role first (its triggers would run as the
        # statement trigger's owner): refused, nothing changes
        admin.execute("discard temp")
        admin.execute("create temp table rmp_read_path_changes (server_id bigint, collected_at timestamptz,"
                      " cpu_percent double precision, sign smallint)")
        with pytest.raises(psycopg.errors.RaiseException, match="not created by the fleet read path"):
            admin.execute("delete from metrics.server_metrics where server_id = %s", (a,))
        admin.execute("reset role")
        # nor can a loader call the functions that write the two tables (0011 left moving sums
        # between organizations open to every role)
        admin.execute("set role rmp_ingest")
        for call, args in (("metrics.organization_cpu_move_server(%s, %s, %s)", (a, org, org)),
                           ("metrics.organization_cpu_hourly_add(%s, %s, %s, %s)", ([org], [now], [1], [1])),
                           ("metrics.server_latest_refresh(%s)", ([a],))):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                admin.execute(f"select {call}", args)
        admin.execute("reset role")
    _check(db)
    assert len(_latest(db)) == 1
