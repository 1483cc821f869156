"""`rmp report` on a database with nothing to report yet: a brand-new one (migrated, no
metrics, no dbt marts) and one emptied of its data render with an explicit "no data yet"
section instead of failing (charts.fleet was undefined without hourly data)."""

from __future__ import annotations

import psycopg
import pytest
from conftest import empty_data_tables

from analytics.report import write_report
from rmp import migrations


@pytest.fixture(scope="module")
def brand_new_url(engine, tmp_path_factory):
    with engine.fresh_database("rmp_report_empty", tmp_path_factory.mktemp("report-empty")) as url:
        migrations.upgrade(url)
        yield url


def _assert_no_data_report(path, url) -> None:
    md = (path / "report.md").read_text()
    html = (path / "index.html").read_text()
    assert "## No data yet" in md and "<h2>No data yet</h2>" in html
    assert "No server has reported metrics yet" in md and "no data window yet." in md
    assert "![fleet hourly averages]" not in md and "fleet hourly averages" not in html
    assert "| 0 | 0 | 0 | 0 |" in md    # organizations, servers, active, reporting
    assert not (path / "img" / "fleet_overview.png").exists()
    with psycopg.connect(url) as conn:
        assert conn.execute("select status, output_path from analytics.report_runs order by id desc limit 1"
                            ).fetchone() == ("ok", str(path))


def test_report_of_a_brand_new_database_says_no_data_yet(brand_new_url, tmp_path):
    path = write_report(brand_new_url, tmp_path)
    _assert_no_data_report(path, brand_new_url)
    # no marts either: the quota section says how to build them
    assert "marts.org\\_quota\\_status or marts.capacity\\_forecasts is not built yet" in (path / "report.md").read_text()


def test_report_of_an_emptied_database_says_no_data_yet(db, migrated_url, tmp_path):
    empty_data_tables(db)
    path = write_report(migrated_url, tmp_path)
    _assert_no_data_report(path, migrated_url)
