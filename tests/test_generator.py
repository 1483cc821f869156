"""The fleet generator: reproducible, seasonal, labelled, and loadable exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ingest.fleet_writers import write_fleet, write_fleet_files, write_labels
from ingest.generator import generate_fleet
from ingest.loader import load_file

START = datetime(2024, 3, 4, tzinfo=UTC)     # a Monday


def test_same_seed_same_fleet_and_series():
    a = generate_fleet(seed=7, organizations=2, servers=4, days=2, start=START)
    b = generate_fleet(seed=7, organizations=2, servers=4, days=2, start=START)
    c = generate_fleet(seed=8, organizations=2, servers=4, days=2, start=START)
    assert a.servers == b.servers and a.labels == b.labels and a.licences == b.licences
    pd.testing.assert_frame_equal(a.server_metrics(a.servers[3]), b.server_metrics(b.servers[3]))
    assert not a.server_metrics(a.servers[0])["cpu_percent"].equals(c.server_metrics(c.servers[0])["cpu_percent"])


def test_fleet_layout_organizations_quotas_and_sizes():
    f = generate_fleet(seed=1, organizations=4, servers=12, days=3, start=START, sub_organizations=2)
    parents = [o for o in f.organizations if o.parent is None]
    subs = [o for o in f.organizations if o.parent is not None]
    assert len(parents) == 4 and len(subs) == 4          # 2 under each of the first half
    assert {o.parent for o in subs} == {parents[0].slug, parents[1].slug}
    assert len(f.servers) == 12 and len(f.sites) == 24
    assert f.samples_per_server == 3 * 2880 and f.server_metric_rows == 12 * 8640
    servers_of = {o.slug: sum(1 for s in f.servers if s.organization == o.slug) for o in f.organizations}
    lic = {x.organization: x for x in f.licences}
    assert lic[parents[0].slug].max_servers == servers_of[parents[0].slug]          # at the limit
    assert lic[parents[1].slug].max_servers == servers_of[parents[1].slug] - 1      # over it
    assert lic[parents[2].slug].max_servers > servers_of[parents[2].slug]           # room left


def test_series_have_daily_and_weekly_seasonality_and_valid_ranges():
    f = generate_fleet(seed=3, organizations=1, servers=3, days=14, start=START, anomalies_per_server=0)
    for s in f.servers:
        df = f.server_metrics(s)
        assert len(df) == 14 * 2880
        assert df["collected_at"].is_monotonic_increasing and df["collected_at"].dt.tz is not None
        for col in ("cpu_percent", "memory_percent", "disk_percent"):
            assert df[col].between(0, 100).all()
        assert (df[[c for c in df.columns if c.endswith("_bytes")]] >= 0).all().all()
        assert (df["memory_used_bytes"] + df["memory_available_bytes"] == s.memory_total_bytes).all()
        assert (df["disk_used_bytes"] + df["disk_available_bytes"] == s.disk_total_bytes).all()
        # a Linux collector's precision: kB, 4 KiB blocks, 512-byte sectors; two-decimal percents
        assert (df["memory_used_bytes"] % 1024 == 0).all() and (df["disk_used_bytes"] % 4096 == 0).all()
        assert (df[["disk_read_bytes", "disk_write_bytes"]] % 512 == 0).all().all()
        assert df["disk_write_bytes"].gt(0).mean() > 0.9                 # not floored to nothing
        for col in ("cpu_percent", "memory_percent", "disk_percent", "load_1m", "load_5m", "load_15m"):
            assert (df[col] == df[col].round(2)).all(), col
        hour = df["collected_at"].dt.hour
        weekday = df["collected_at"].dt.day_of_week < 5
        busy = df.loc[weekday & (hour == 15), "cpu_percent"].mean()
        quiet = df.loc[weekday & (hour == 3), "cpu_percent"].mean()
        weekend_busy = df.loc[~weekday & (hour == 15), "cpu_percent"].mean()
        assert busy > quiet + 5
        assert weekend_busy < busy


def test_one_disk_fills_past_90_percent():
    f = generate_fleet(seed=11, organizations=2, servers=8, days=7, start=START)
    last = {(s.organization, s.name): f.server_metrics(s)["disk_percent"].iloc[-1] for s in f.servers}
    first = {(s.organization, s.name): f.server_metrics(s)["disk_percent"].iloc[0] for s in f.servers}
    assert sum(v >= 90 for v in last.values()) == 1
    assert all(last[n] >= first[n] for n in last)          # disks only fill up


def test_injected_anomalies_are_labelled_and_visible():
    f = generate_fleet(seed=5, organizations=2, servers=6, days=5, start=START, anomalies_per_server=2)
    assert f.labels and {lab.kind for lab in f.labels} == {"spike", "level_shift"}
    for lab in f.labels:
        assert START + (f.end - START) * 0.4 <= lab.start < lab.end <= f.end
        df = f.server_metrics(f.server(lab.server, lab.organization)).set_index("collected_at")
        inside = df.loc[lab.start: lab.end - pd.Timedelta(seconds=1), lab.metric]
        if lab.kind == "spike":
            assert inside.mean() > 85
        else:
            before = df.loc[lab.start - pd.Timedelta(hours=6): lab.start - pd.Timedelta(seconds=1), lab.metric]
            assert inside.mean() > before.mean() + 5


def test_write_fleet_loads_exact_counts_and_is_idempotent(db, migrated_url, tmp_path):
    f = generate_fleet(seed=2, organizations=2, servers=3, days=1, start=START, sites_per_server=1)
    summary = write_fleet(f, migrated_url)
    assert summary.server_metrics == 3 * 2880 and summary.site_usage == 3 * 288 and summary.duplicates == 0
    counts = db.execute(
        "select (select count(*) from tenancy.organizations), (select count(*) from tenancy.servers), "
        "(select count(*) from tenancy.sites), (select count(*) from tenancy.licences), "
        "(select count(*) from metrics.server_metrics), (select count(*) from metrics.site_usage)"
    ).fetchone()
    assert counts == (len(f.organizations), 3, 3, len(f.organizations), 3 * 2880, 3 * 288)
    s = f.servers[1]
    want = f.server_metrics(s)
    got = db.execute(
        "select sum(cpu_percent), sum(disk_write_bytes), max(collected_at) from metrics.server_metrics "
        "where server_id = %s", (f.server_ids[(s.organization, s.name)],)
    ).fetchone()
    assert got[1] == int(want["disk_write_bytes"].sum()) and got[2] == want["collected_at"].iloc[-1]
    assert got[0] == pytest.approx(float(np.sum(want["cpu_percent"])), rel=1e-12)
    again = write_fleet(f, migrated_url)
    assert (again.server_metrics, again.site_usage, again.duplicates) == (0, 0, 3 * 2880 + 3 * 288)
    labels = write_labels(f, tmp_path / "labels.json").read_text()
    assert all(f'"server_id": {lab.server_id}' in labels for lab in f.labels)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_fleet_files_ingest_to_the_same_rows(db, migrated_url, tmp_path, fmt):
    from ingest.fleet_writers import write_tenancy

    f = generate_fleet(seed=4, organizations=1, servers=2, days=1, start=START, sites_per_server=1)
    write_tenancy(db, f)
    paths = write_fleet_files(f, tmp_path, fmt)
    results = [load_file(p, migrated_url) for p in paths]
    assert [(r.table, r.loaded, r.rejected) for r in results] == [
        ("metrics.server_metrics", 2 * 2880, 0), ("metrics.site_usage", 2 * 288, 0)]
    s = f.servers[0]
    want = f.server_metrics(s)
    got = db.execute("select sum(memory_used_bytes), sum(network_tx_bytes) from metrics.server_metrics "
                     "where server_id = %s", (f.server_ids[(s.organization, s.name)],)).fetchone()
    assert got == (int(want["memory_used_bytes"].sum()), int(want["network_tx_bytes"].sum()))
