"""The catalog (rmp/catalog.py) and the migrated database say the same thing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rmp import catalog


def test_server_metrics_columns_types_and_checks_are_the_catalogs(db):
    columns = db.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
        " where a.attrelid = 'metrics.server_metrics'::regclass and a.attnum > 0 and not a.attisdropped"
        " order by a.attnum").fetchall()
    assert columns[:2] == [("server_id", "bigint"), ("collected_at", "timestamp with time zone")]
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    # in any order: a column a later revision adds stands after interval_seconds (0010)
    assert sorted(columns[2:]) == sorted([(c.name, c.sql_type) for c in catalog.SERVER_METRICS]
                                         + [(interval.name, interval.sql_type)])
    # the checks are on the table that holds the rows (the view's are its): the same names,
    # plus the range of each remainder (rmp/compact.py)
    checks = {r[0] for r in db.execute(
        "select conname from pg_constraint where conrelid = 'metrics.server_samples'::regclass and contype = 'c'")}
    remainders = {f"server_samples_{catalog.remainder_column(c.stored.stored)}_range"
                  for c in catalog.SERVER_METRICS if c.stored.kind == "units"}
    assert checks == {c.check_name for c in catalog.SERVER_METRICS} | {interval.check_name} | remainders
    # not null, the catalog's default (on the view too), its bounds
    for relation in ("server_metrics", "server_samples"):
        assert db.execute(
            "select pg_get_expr(d.adbin, d.adrelid) from pg_attribute a"
            " join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum"
            " where a.attrelid = %s::regclass and a.attname = 'interval_seconds'", (f"metrics.{relation}",)
        ).fetchone() == ("30",)
    assert db.execute("select attnotnull from pg_attribute where attrelid = 'metrics.server_samples'::regclass"
                      " and attname = 'interval_seconds'").fetchone() == (True,)
    assert interval.bounds == (0.05, 86_400.0)
    site_interval = catalog.SAMPLE_INTERVALS["site_usage"]
    site_checks = {r[0] for r in db.execute(
        "select conname from pg_constraint where conrelid = 'metrics.site_usage'::regclass and contype = 'c'")}
    assert site_checks == {c.check_name for c in catalog.SITE_USAGE if c.bounds != catalog.UNBOUNDED} | {
        site_interval.check_name}
    assert list(catalog.value_bounds("site_usage")) == [
        *(c.name for c in catalog.SITE_USAGE if c.name != "is_up"), site_interval.name]
    assert catalog.metric_column("cpu_percent").check_name == "server_metrics_cpu_percent_range"
    assert catalog.metric_column("disk_read_bytes").check_name == "server_metrics_disk_read_bytes_nonnegative"


def test_every_catalog_aggregate_exists_with_its_bucket(db):
    found = dict(db.execute(
        "select view_name, materialized_only from timescaledb_information.continuous_aggregates"
        " where view_schema = 'metrics'").fetchall())
    assert sorted(found) == sorted(a.name for a in catalog.AGGREGATES)
    assert not any(found.values())  # all real-time
    for tier in catalog.TIERS:
        # one bucket of data in, one bucket out: the width is the catalog's
        definition = db.execute("select view_definition from timescaledb_information.continuous_aggregates"
                                " where view_name = %s", (tier.name,)).fetchone()[0]
        width = db.execute("select %s::interval", (tier.bucket_width,)).fetchone()[0]
        assert f"time_bucket('{_pg_interval(width)}'::interval, " in definition, tier.name
        assert tier.bucket == width


def _pg_interval(value: timedelta) -> str:
    """timedelta -> PostgreSQL's interval output ('00:05:00', '1 day')."""
    if value.days:
        return f"{value.days} day" + ("s" if value.days > 1 else "")
    hours, rest = divmod(value.seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def test_published_tiers_are_the_catalogs(db):
    rows = db.execute("select view_name, resolution, bucket_width, retention, refresh_start_offset,"
                      " serves_window_up_to from metrics.aggregate_tiers").fetchall()
    assert [r[:2] for r in rows] == [(t.name, t.resolution) for t in catalog.TIERS]
    assert [r[2] for r in rows] == [t.bucket for t in catalog.TIERS]
    assert [r[5] for r in rows] == [t.serves_window_up_to for t in catalog.TIERS]


@pytest.mark.parametrize(("span", "tier"), [
    (timedelta(hours=6), "server_metrics_1m"),
    (timedelta(days=1), "server_metrics_1m"),
    (timedelta(days=1, seconds=1), "server_metrics_5m"),
    (timedelta(days=7), "server_metrics_5m"),
    (timedelta(days=30), "server_metrics_1h"),
    (timedelta(days=90), "server_metrics_1h"),
    (timedelta(days=365), "server_metrics_1d"),
])
def test_window_to_tier_is_one_mapping_in_python_and_sql(db, span, tier):
    assert catalog.tier_for_window(span).name == tier
    assert db.execute("select tenant.tier_for_window(%s)", (span,)).fetchone()[0] == tier


def test_policies_follow_the_catalog(db):
    jobs = dict(db.execute(
        "select hypertable_name, config from timescaledb_information.jobs"
        " where proc_name = 'policy_refresh_continuous_aggregate' and hypertable_schema = 'metrics'").fetchall())
    for aggregate in catalog.AGGREGATES:
        offset = db.execute("select %s::interval = %s::interval",
                            (jobs[aggregate.name]["start_offset"], aggregate.refresh_start_offset)).fetchone()[0]
        assert offset, aggregate.name
    retention = dict(db.execute(
        "select hypertable_name, config ->> 'drop_after' from timescaledb_information.jobs"
        " where proc_name = 'policy_retention' and hypertable_schema = 'metrics'").fetchall())
    assert {name for name in retention} == {
        *catalog.RAW_HYPERTABLES, *(a.name for a in catalog.AGGREGATES if a.retention)}


def test_rmp_catalog_show_lists_every_column_and_aggregate_of_the_catalog():
    """The reference tables come from the catalog (docs/schema.md points to them, never copies them)."""
    from click.testing import CliRunner

    from rmp_app.cli import cli

    shown = CliRunner().invoke(cli, ["catalog", "show"])
    assert shown.exit_code == 0
    for column in catalog.SERVER_METRICS:
        assert f"| `{column.name}` | {column.sql_type} |" in shown.output
    for aggregate in catalog.AGGREGATES:
        assert f"| `{aggregate.qualified}` |" in shown.output
    assert "| `cpu_percent` | double precision | 0–100 | `cpu_percent_x100`: hundredths (two decimals) |" in shown.output
    assert "| `load_1m` | double precision | 0–1e+12 |" in shown.output
    assert "| `memory_used_bytes` | bigint | ≥ 0 | `memory_used_kib`, `memory_used_rem`: 1024-byte units" in shown.output
    assert ("| `metrics.server_metrics_1h` | 1h | server_metrics | 1 hour | 1 year | 3 days | 7 days | ≤ 90 d |"
            in shown.output)
    assert "| `metrics.site_usage_daily` |  | site_usage | 1 day | forever | 7 days | never |  |" in shown.output
