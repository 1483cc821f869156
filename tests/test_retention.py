"""Retention per tier keeps aggregated history; the per-organization override trims one tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schema_data import day_start, load, organization, server, sparse_rows

from rmp.catalog import RAW_RETENTION


def _job(db, proc: str, name: str) -> int:
    return db.execute(
        "select job_id from timescaledb_information.jobs"
        " where proc_name = %s and hypertable_schema = 'metrics' and hypertable_name = %s",
        (proc, name),
    ).fetchone()[0]


def _org_retention_job(db) -> int:
    return db.execute(
        "select job_id from timescaledb_information.jobs where proc_name = 'apply_organization_retention'"
    ).fetchone()[0]


def test_raw_retention_drops_old_chunks_and_hourly_and_daily_history_survives(db):
    assert RAW_RETENTION == "90 days"
    sid = server(db, organization(db, "acme"), "web-1")
    # Four samples a day at 00:00, 06:00, 12:00, 18:00 for days 120..1 ago.
    days = list(range(120, 0, -1))
    times = [day_start(d) + timedelta(hours=h) for d in days for h in (0, 6, 12, 18)]
    load(db, sparse_rows(sid, times))
    for level in ("1h", "1d"):
        db.execute("call refresh_continuous_aggregate(%s::regclass, null, %s)",
                   (f"metrics.server_metrics_{level}", day_start(0)))
    hourly_before = db.execute("select bucket, sample_count, cpu_avg_percent from metrics.server_metrics_1h"
                               " order by 1").fetchall()
    daily_before = db.execute("select bucket, sample_count, cpu_p95_percent from metrics.server_metrics_1d"
                              " order by 1").fetchall()
    assert len(hourly_before) == 480 and len(daily_before) == 120

    now = datetime.now(UTC)
    db.execute("call run_job(%s)", (_job(db, "policy_retention", "server_samples"),))

    # Whole 1-day chunks go once their end is older than the horizon.
    cutoff = (now - timedelta(days=90)).replace(hour=0, minute=0, second=0, microsecond=0)
    expected_raw = [t for t in times if t >= cutoff]
    assert db.execute("select min(collected_at), count(*) from metrics.server_metrics").fetchone() == (
        min(expected_raw), len(expected_raw))
    assert len(expected_raw) < len(times)

    # The refresh policies run over their windows: buckets older than the raw horizon stay.
    for level in ("1h", "1d"):
        db.execute("call run_job(%s)", (_job(db, "policy_refresh_continuous_aggregate", f"server_metrics_{level}"),))
    assert db.execute("select bucket, sample_count, cpu_avg_percent from metrics.server_metrics_1h"
                      " order by 1").fetchall() == hourly_before
    assert db.execute("select bucket, sample_count, cpu_p95_percent from metrics.server_metrics_1d"
                      " order by 1").fetchall() == daily_before


def test_one_minute_retention_drops_only_its_own_old_buckets(db):
    sid = server(db, organization(db, "acme"), "web-1")
    times = [day_start(d) + timedelta(hours=12) for d in range(60, 0, -1)]
    load(db, sparse_rows(sid, times))
    for level in ("1m", "1h"):
        db.execute("call refresh_continuous_aggregate(%s::regclass, null, %s)",
                   (f"metrics.server_metrics_{level}", day_start(0)))
    schema, table = db.execute(
        "select materialization_hypertable_schema, materialization_hypertable_name"
        " from timescaledb_information.continuous_aggregates where view_name = 'server_metrics_1m'"
    ).fetchone()
    now = datetime.now(UTC)
    # Retention drops whole chunks of the materialization hypertable whose end is past 30 days.
    kept_from = db.execute(
        "select coalesce(min(range_start), 'infinity') from timescaledb_information.chunks"
        " where hypertable_schema = %s and hypertable_name = %s and range_end > %s",
        (schema, table, now - timedelta(days=30)),
    ).fetchone()[0]
    db.execute("call run_job(%s)", (_job(db, "policy_retention", "server_metrics_1m"),))

    expected = [t for t in times if t >= kept_from]
    assert len(expected) < len(times)
    assert db.execute("select count(*), min(bucket) from metrics.server_metrics_1m"
                      " where bucket < %s", (day_start(0),)).fetchone() == (len(expected), min(expected))
    # The 1 h level (kept a year) still has all 60 days.
    assert db.execute("select count(*) from metrics.server_metrics_1h").fetchone()[0] == 60


def test_organization_override_trims_only_that_organizations_raw_rows(db):
    short, other, longer = organization(db, "short"), organization(db, "other"), organization(db, "longer")
    servers = {org: server(db, org, "web-1") for org in (short, other, longer)}
    now = datetime.now(UTC)
    # One row per day, k days and one hour ago, k = 0..59: the 30-day override keeps k = 0..29.
    times = [now - timedelta(days=k, hours=1) for k in range(60)]
    gpu = db.execute("select id from metrics.metric_types where name = 'gpu_utilization'").fetchone()[0]
    for sid in servers.values():
        load(db, sparse_rows(sid, times))
        with db.cursor() as cur:
            cur.executemany(
                "insert into metrics.metric_samples (server_id, metric_type_id, collected_at, value)"
                " values (%s, %s, %s, 75)",
                [(sid, gpu, t) for t in times],
            )
    db.execute("insert into tenancy.organization_settings (organization_id, metrics_retention)"
               " values (%s, '30 days'), (%s, '200 days')", (short, longer))
    # Old chunks are compressed first: the override must delete from compressed chunks too.
    db.execute("call run_job(%s)", (_job(db, "policy_compression", "server_samples"),))

    db.execute("call run_job(%s)", (_org_retention_job(db),))

    def counts(table: str) -> dict[int, int]:
        return dict(db.execute(f"select server_id, count(*) from metrics.{table} group by 1").fetchall())

    expected = {servers[short]: 30, servers[other]: 60, servers[longer]: 60}
    assert counts("server_metrics") == expected
    assert counts("metric_samples") == expected
    assert db.execute("select min(collected_at) from metrics.server_metrics where server_id = %s",
                      (servers[short],)).fetchone()[0] == times[29]


def test_organization_retention_job_reads_the_global_raw_tier(db):
    config = db.execute(
        "select config from timescaledb_information.jobs where proc_name = 'apply_organization_retention'"
    ).fetchone()[0]
    assert config == {"raw_retention": "90 days"}
