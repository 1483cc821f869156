"""Revision 0012_compact_server_samples on a database with data: every raw row comes back
exactly through the view metrics.server_metrics (whole bytes that are no multiple of the
collector's unit, a MemAvailable that is not total - used, percents that are not the
derivation, NULLs, rows in compressed chunks), the aggregates keep their rows, the fleet
read path its tables, an analyst's view on the table its definition, grant and comment;
writes through the view (INSERT, COPY, UPDATE, DELETE) land in server_samples and reach
the read path; downgrade gives the table back with the same rows."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from schema_data import day_start, organization, server

from rmp import catalog, migrations

BEFORE = "0011_fleet_read_path"
REVISION = "0012_compact_server_samples"
COLUMNS = ["server_id", "collected_at", *catalog.SERVER_METRIC_COLUMNS, "interval_seconds"]


@pytest.fixture(scope="module")
def fresh_url(engine, tmp_path_factory):
    with engine.fresh_database("rmp_compact", tmp_path_factory.mktemp("compact")) as url:
        yield url


def _raw(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(f"select {', '.join(COLUMNS)} from metrics.server_metrics order by 1, 2").fetchall()


def _aggregates(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {t.name: conn.execute(
        f"select bucket, server_id, sample_count, cpu_avg_percent, cpu_p95_percent, memory_used_max_bytes,"
        f" memory_avg_percent, disk_max_percent, network_rx_avg_bytes_per_sec, disk_read_max_bytes_per_sec"
        f" from {t.qualified} order by 1, 2").fetchall() for t in catalog.TIERS}


def _read_path(conn: psycopg.Connection) -> tuple[list, list]:
    return (conn.execute("select * from metrics.server_latest order by server_id").fetchall(),
            # (without the rows a delete brought down to nothing)
            conn.execute("select * from metrics.organization_cpu_hourly"
                         " where cpu_sample_count <> 0 or cpu_percent_sum <> 0 order by 1, 2").fetchall())


def _same_aggregates(before: dict, after: dict) -> None:
    assert after.keys() == before.keys()
    for name, rows in before.items():
        assert len(after[name]) == len(rows), name
        for a, b in zip(after[name], rows, strict=True):
            assert a[:3] == b[:3]
            assert a[3:] == pytest.approx(b[3:], rel=1e-12), (name, a[:2])


def test_upgrade_and_downgrade_keep_every_value(fresh_url):
    assert migrations.upgrade(fresh_url, BEFORE) == BEFORE
    start = day_start(3)
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        org = organization(conn, "acme")
        web, db = server(conn, org, "web-1"), server(conn, org, "db-1")
        # three days of 30 s samples with values no collector unit divides, derived columns that
        # are not their derivation, and NULLs
        conn.execute(
            "insert into metrics.server_metrics (server_id, collected_at, cpu_percent, load_1m, load_5m, load_15m,"
            " cpu_cores, memory_total_bytes, memory_used_bytes, memory_available_bytes, memory_percent,"
            " disk_total_bytes, disk_used_bytes, disk_available_bytes, disk_percent, disk_read_bytes,"
            " disk_write_bytes, network_rx_bytes, network_tx_bytes, containers_running, containers_total,"
            " interval_seconds)"
            " select s, t, (i * 37 %% 10001) / 100.0, (i %% 800) / 100.0, (i %% 500) / 100.0, (i %% 300) / 100.0,"
            "  8, 17179869184, 4000000000 + i * 1031, 9000000000 - i * 7, (i * 13 %% 10001) / 100.0,"
            "  500000000000, 200000000000 + i * 4099, 299999999000 - i * 4099, 40.01 + (i %% 3) / 100.0,"
            "  i * 517, i * 513 + 1, i * 1001, case when i %% 10 = 0 then null else i * 999 end, 12, 14,"
            "  case when i %% 7 = 0 then 60 else 30 end"
            " from (values (%s::bigint), (%s::bigint)) as servers (s),"
            "  generate_series(0, 3 * 2880 - 1) as i, lateral (select %s::timestamptz + i * interval '30 s') as at (t)",
            (web, db, start))
        conn.execute("insert into metrics.server_metrics (server_id, collected_at) values (%s, %s)",
                     (web, start + timedelta(days=3, hours=1)))
        conn.execute("select compress_chunk(c) from show_chunks('metrics.server_metrics',"
                     " older_than => %s::timestamptz) c", (start + timedelta(days=1),))
        for t in catalog.TIERS:
            conn.execute(f"call refresh_continuous_aggregate('{t.qualified}', null, null)")
        conn.execute("create schema reports")
        conn.execute(f"create view reports.web_cpu as select collected_at, cpu_percent from metrics.server_metrics"
                     f" where server_id = {int(web)}")
        conn.execute("comment on view reports.web_cpu is 'web-1 cpu'")
        conn.execute("grant usage on schema reports to rmp_analyst")
        conn.execute("grant select on reports.web_cpu to rmp_analyst")
        raw, aggregates, read_path = _raw(conn), _aggregates(conn), _read_path(conn)
        assert len(raw) == 2 * 3 * 2880 + 1

    assert migrations.upgrade(fresh_url, REVISION) == REVISION
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert conn.execute("select relkind from pg_class where oid = 'metrics.server_metrics'::regclass"
                            ).fetchone()[0] == "v"
        assert _raw(conn) == raw
        _same_aggregates(aggregates, _aggregates(conn))
        assert _read_path(conn) == read_path
        assert conn.execute("select count(*) from reports.web_cpu").fetchone()[0] == 3 * 2880 + 1
        assert conn.execute("select obj_description('reports.web_cpu'::regclass)").fetchone()[0] == "web-1 cpu"
        assert conn.execute("select has_table_privilege('rmp_analyst', 'reports.web_cpu', 'select')").fetchone()[0]
        # a collector's values leave the remainders and residuals at 0; these do not, and survive
        stored = conn.execute("select count(*) filter (where memory_used_rem <> 0),"
                              " count(*) filter (where memory_available_bytes_residual <> 0),"
                              " count(*) filter (where memory_percent_residual <> 0)"
                              " from metrics.server_samples").fetchone()
        assert all(n > 0 for n in stored)

        # writes through the view: INSERT, COPY, UPDATE, DELETE
        now = conn.execute("select date_trunc('minute', now())").fetchone()[0]
        conn.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_used_bytes,"
                     " memory_total_bytes, memory_percent) values (%s, %s, 12.34, 1025, 4096, 25.03)", (db, now))
        with conn.cursor().copy("copy metrics.server_metrics (server_id, collected_at, cpu_percent, disk_read_bytes)"
                                " from stdin") as copy:
            copy.write_row((web, now, 99.99, 513))
        assert conn.execute("select cpu_percent, memory_used_bytes, memory_available_bytes, memory_percent"
                            " from metrics.server_metrics where server_id = %s and collected_at = %s",
                            (db, now)).fetchone() == (12.34, 1025, None, 25.03)
        assert conn.execute("select cpu_percent, disk_read_bytes, interval_seconds from metrics.server_metrics"
                            " where server_id = %s and collected_at = %s", (web, now)).fetchone() == (99.99, 513, 30)
        # the read path's triggers moved to server_samples with the rows
        assert conn.execute("select cpu_percent from metrics.server_latest where server_id = %s",
                            (web,)).fetchone()[0] == 99.99
        conn.execute("update metrics.server_metrics set cpu_percent = 50.5 where server_id = %s and collected_at = %s",
                     (web, now))
        assert conn.execute("select cpu_percent from metrics.server_latest where server_id = %s",
                            (web,)).fetchone()[0] == 50.5
        conn.execute("delete from metrics.server_metrics where collected_at = %s", (now,))
        assert _read_path(conn) == read_path
        assert _raw(conn) == raw

    assert migrations.downgrade(fresh_url, BEFORE) == BEFORE
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert conn.execute("select relkind from pg_class where oid = 'metrics.server_metrics'::regclass"
                            ).fetchone()[0] == "r"
        assert conn.execute("select to_regclass('metrics.server_samples')").fetchone()[0] is None
        assert _raw(conn) == raw
        _same_aggregates(aggregates, _aggregates(conn))
        assert _read_path(conn) == read_path
        assert conn.execute("select count(*) from reports.web_cpu").fetchone()[0] == 3 * 2880 + 1
        # the read path's triggers are back on the table
        conn.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, now(), 7)",
                     (web,))
        assert conn.execute("select cpu_percent from metrics.server_latest where server_id = %s",
                            (web,)).fetchone()[0] == 7


def test_a_new_metric_column_is_a_catalog_entry_and_one_call(migrated_url, monkeypatch):
    """What a revision that adds a column does from 0012 on (issue 15: a column is a few lines):
    add_metric_column() adds its storage columns to server_samples and re-renders the view and its
    triggers; what reads the view is kept; drop_metric_column() undoes it."""
    import sqlalchemy as sa

    from rmp import db as rmp_db

    swap = catalog.MetricColumn("swap_used_bytes", "bigint", catalog.NON_NEGATIVE,
                                stored=catalog.Stored("units", unit=1024, stored="swap_used_kib"))
    monkeypatch.setattr(catalog, "SERVER_METRICS", (*catalog.SERVER_METRICS, swap))
    engine = rmp_db.engine(migrated_url)
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.execute(sa.text("create view public.rmp_test_swap_reader as select server_id, collected_at"
                                 " from metrics.server_metrics"))
            migrations.add_metric_column(conn, swap)
            org = conn.execute(sa.text("insert into tenancy.organizations (name, slug) values ('swap', 'swap')"
                                       " returning id")).scalar()
            sid = conn.execute(sa.text("insert into tenancy.servers (organization_id, name) values (:o, 'w')"
                                       " returning id"), {"o": org}).scalar()
            conn.execute(sa.text("insert into metrics.server_metrics (server_id, collected_at, swap_used_bytes)"
                                 " values (:s, now(), 3073)"), {"s": sid})
            assert conn.execute(sa.text("select swap_used_kib, swap_used_rem from metrics.server_samples"
                                        " where server_id = :s"), {"s": sid}).one() == (3, 1)
            assert conn.execute(sa.text("select swap_used_bytes from metrics.server_metrics where server_id = :s"),
                                {"s": sid}).scalar() == 3073
            assert conn.execute(sa.text("select count(*) from public.rmp_test_swap_reader"
                                        " where server_id = :s"), {"s": sid}).scalar() == 1
            with pytest.raises(sa.exc.IntegrityError, match="server_metrics_swap_used_bytes_nonnegative"), \
                    conn.begin_nested():
                conn.execute(sa.text("insert into metrics.server_samples (server_id, collected_at,"
                                     " swap_used_kib, swap_used_rem) values (:s, now() - interval '1 h', -1, 0)"),
                             {"s": sid})
            migrations.drop_metric_column(conn, swap)
            assert "swap_used_bytes" not in list(conn.execute(sa.text("select * from metrics.server_metrics limit 0")).keys())
            assert conn.execute(sa.text("select count(*) from public.rmp_test_swap_reader")).scalar() >= 1
        finally:
            trans.rollback()


def test_an_update_through_the_view_may_shift_keys_onto_each_other(db):
    """One UPDATE that moves every sample of a server 30 s later, then back: each new key is an
    old key of another row of the same statement, which a row-at-a-time UPDATE checks in
    whatever order the rows come (the view applies it as one DELETE and one INSERT)."""
    org = organization(db, "shift")
    sid = server(db, org, "s")
    t0 = day_start(0) - timedelta(hours=2)
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_used_bytes)"
               " select %s, %s::timestamptz + i * interval '30 s', i, 1000 + i from generate_series(0, 9) i",
               (sid, t0))
    for step in ("+ interval '30 s'", "- interval '30 s'"):
        assert db.execute(f"update metrics.server_metrics set collected_at = collected_at {step}"
                          " where server_id = %s", (sid,)).rowcount == 10
    assert db.execute("select collected_at, cpu_percent, memory_used_bytes from metrics.server_metrics"
                      " where server_id = %s order by 1", (sid,)).fetchall() == [
        (t0 + timedelta(seconds=30 * i), float(i), 1000 + i) for i in range(10)]
