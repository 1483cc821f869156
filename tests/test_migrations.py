"""alembic revisions apply sql/ and can be undone, on the real engine."""

from __future__ import annotations

import psycopg
import pytest

from rmp import catalog, migrations

EXPECTED_TABLES = {
    ("tenancy", "organizations"), ("tenancy", "users"), ("tenancy", "memberships"),
    ("tenancy", "servers"), ("tenancy", "sites"), ("tenancy", "applications"),
    ("tenancy", "databases"), ("tenancy", "deployments"), ("tenancy", "licences"),
    ("tenancy", "organization_settings"),
    ("metrics", "server_samples"), ("metrics", "metric_samples"), ("metrics", "metric_types"),
    ("metrics", "site_usage"), ("metrics", "scaling_events"), ("metrics", "rejected_rows"),
    ("analytics", "forecasts"), ("analytics", "anomalies"), ("analytics", "report_runs"),
}
# Every aggregate of the catalog (rmp/catalog.py); tests/test_catalog.py pins the tiers and their windows.
EXPECTED_AGGREGATES = {a.name for a in catalog.AGGREGATES}
# The policy jobs the catalog asks for (compression and retention of the raw hypertables; refresh,
# compression and retention of each aggregate that has them) and the per-organization retention job:
# 3 x 2 + (3 + 3 + 3 + 2 + 1) + 1 = 19 with today's catalog.
EXPECTED_JOBS = (len(catalog.RAW_HYPERTABLES) * 2
                 + sum(1 + (a.compress_after is not None) + (a.retention is not None) for a in catalog.AGGREGATES)
                 + 1)


def _tables(conn: psycopg.Connection) -> set[tuple[str, str]]:
    return set(conn.execute(
        "select table_schema, table_name from information_schema.tables"
        " where table_schema in ('tenancy', 'metrics', 'analytics') and table_type = 'BASE TABLE'"
    ).fetchall())


def _aggregates(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("select view_name from timescaledb_information.continuous_aggregates")}


def _project_jobs(conn: psycopg.Connection) -> int:
    """Policies on metrics.* plus the organization retention job (revision 0002's jobs)."""
    return conn.execute(
        "select count(*) from timescaledb_information.jobs"
        " where hypertable_schema = 'metrics' or proc_name = 'apply_organization_retention'"
    ).fetchone()[0]


@pytest.fixture(scope="module")
def fresh_url(engine, tmp_path_factory):
    """An empty database (a private engine on the embedded kind): this module migrates it up and down."""
    with engine.fresh_database("rmp_migrations", tmp_path_factory.mktemp("migrations")) as url:
        yield url


def test_upgrade_downgrade_upgrade_on_empty_database(fresh_url):
    assert migrations.current(fresh_url) is None

    assert migrations.revisions()[:2] == ["0001_core", "0002_aggregates"]
    assert migrations.upgrade(fresh_url) == migrations.head()
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert _tables(conn) >= EXPECTED_TABLES  # later revisions add their own
        assert _aggregates(conn) == EXPECTED_AGGREGATES
        hypertables = {r[0] for r in conn.execute(
            "select hypertable_name from timescaledb_information.hypertables where hypertable_schema = 'metrics'")}
        assert hypertables == {"server_samples", "metric_samples", "site_usage", "scaling_events"}
        # metrics.server_metrics is the view over server_samples (revision 0012)
        assert conn.execute("select relkind from pg_class where oid = 'metrics.server_metrics'::regclass"
                            ).fetchone()[0] == "v"
        # 3 raw compression + 3 raw retention + 5 refresh + 4 aggregate compression
        # + 3 aggregate retention (1m, 5m, 1h; 1d is kept forever) + 1 organization retention
        assert _project_jobs(conn) == EXPECTED_JOBS

    assert migrations.downgrade(fresh_url, "0001_core") == "0001_core"
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        # before revision 0012 the rows are in the hypertable server_metrics itself
        assert _tables(conn) == EXPECTED_TABLES - {("metrics", "server_samples")} | {("metrics", "server_metrics")}
        assert _aggregates(conn) == set()
        assert _project_jobs(conn) == 0

    assert migrations.downgrade(fresh_url, "base") is None
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert _tables(conn) == set()
        assert conn.execute(
            "select count(*) from pg_namespace where nspname in ('tenancy', 'metrics', 'analytics')"
        ).fetchone()[0] == 0

    assert migrations.upgrade(fresh_url) == migrations.head()
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert _tables(conn) >= EXPECTED_TABLES
        assert _aggregates(conn) == EXPECTED_AGGREGATES
        assert _project_jobs(conn) == EXPECTED_JOBS


def test_upgrade_at_head_reapplies_policies_without_duplicates(fresh_url):
    migrations.upgrade(fresh_url)
    migrations.upgrade(fresh_url)
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        assert _project_jobs(conn) == EXPECTED_JOBS
        assert conn.execute("select count(*) from metrics.metric_types").fetchone()[0] == 21  # 20 + generic


def test_unknown_revision_is_a_user_error(fresh_url):
    with pytest.raises(migrations.MigrationError, match="nosuchrev"):
        migrations.upgrade(fresh_url, "nosuchrev")


def test_migrate_command_reports_revisions_and_one_line_errors(fresh_url, monkeypatch, capsys):
    from rmp_app.cli import main

    monkeypatch.setenv("DATABASE_URL", fresh_url)
    head = migrations.upgrade(fresh_url)    # xdist may run this test on a worker of its own
    main(["migrate", "current"])
    assert capsys.readouterr().out == f"current {head}, head {head}\n"

    with pytest.raises(SystemExit) as exit_info:
        main(["migrate", "upgrade", "nosuchrev"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "rmp: error: Can't locate revision identified by 'nosuchrev'\n"
