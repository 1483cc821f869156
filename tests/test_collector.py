"""The host collector writes real, plausible samples and survives a database outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psutil
from click.testing import CliRunner

from ingest.cli import collect
from ingest.collector import COLUMNS, Collector, register_host
from rmp.catalog import SERVER_METRIC_COLUMNS
from rmp.embedded import free_port


def test_collector_writes_plausible_rows(db, migrated_url):
    server_id = register_host(db, "local", "probe")
    assert register_host(db, "local", "probe") == server_id          # registering twice is harmless
    before = datetime.now(UTC)
    stats = Collector(migrated_url, server_id, interval=0.2).run(count=3)
    assert (stats.sampled, stats.written, stats.dropped) == (3, 3, 0)
    rows = db.execute(
        "select collected_at, cpu_percent, load_1m, cpu_cores, memory_total_bytes, memory_used_bytes, "
        "memory_available_bytes, memory_percent, disk_total_bytes, disk_percent, disk_read_bytes, "
        "network_rx_bytes, network_tx_bytes from metrics.server_metrics where server_id = %s order by 1",
        (server_id,),
    ).fetchall()
    assert len(rows) == 3
    total_mem = psutil.virtual_memory().total
    for at, cpu, load1, cores, mem_total, used, avail, mem_pct, disk_total, disk_pct, dread, rx, tx in rows:
        assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)
        assert 0 <= cpu <= 100 and load1 >= 0 and cores == psutil.cpu_count()
        assert mem_total == total_mem and used + avail == mem_total and 0 < mem_pct < 100
        assert disk_total > 0 and 0 < disk_pct <= 100
        assert dread >= 0 and rx >= 0 and tx >= 0
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]
    assert all(0.1 < g < 2 for g in gaps)


def test_samples_are_at_the_precision_server_samples_keeps(db, migrated_url):
    """Loads and percents with two decimals, memory in whole KiB (/proc/meminfo): every sampled
    value comes back from metrics.server_metrics exactly, whatever the storage layout."""
    server_id = register_host(db, "local", "exact")
    c = Collector(migrated_url, server_id, interval=0.05)
    for _ in range(3):
        c.collect_once()
    sampled = list(c.buffer)
    assert c.flush()
    columns = ["collected_at", *SERVER_METRIC_COLUMNS, "interval_seconds"]
    for row in sampled:
        got = dict(zip(COLUMNS, row, strict=True))
        for name in ("cpu_percent", "load_1m", "load_5m", "load_15m", "memory_percent", "disk_percent"):
            assert got[name] == round(got[name], 2), name
        assert got["memory_used_bytes"] % 1024 == 0 and got["memory_total_bytes"] % 1024 == 0
    stored = db.execute(f"select {', '.join(columns)} from metrics.server_metrics where server_id = %s "
                        "order by collected_at", (server_id,)).fetchall()
    assert stored == [tuple(row[1:]) for row in sampled]


def test_outage_keeps_samples_in_the_buffer_then_flushes(db, migrated_url):
    server_id = register_host(db, "local", "flaky")
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/rmp"   # nothing listens there
    c = Collector(down, server_id, interval=0.05, buffer_size=4)
    for _ in range(6):
        c.collect_once()
        assert not c.flush()
    assert len(c.buffer) == 4 and c.stats.dropped == 2 and c.stats.failed_flushes == 6
    kept = [row[1] for row in c.buffer]
    c.url = migrated_url                                                    # the database is back
    assert c.flush() and len(c.buffer) == 0 and c.stats.written == 4
    stored = [r[0] for r in db.execute(
        "select collected_at from metrics.server_metrics where server_id = %s order by 1", (server_id,))]
    assert stored == kept


def test_collect_command_counts_samples(db, migrated_url):
    result = CliRunner().invoke(collect, ["--interval", "0.1", "--count", "2", "--organization", "ci",
                                          "--name", "runner"], env={"DATABASE_URL": migrated_url})
    assert result.exit_code == 0, result.output
    assert "2 sample(s) written, 0 still buffered, 0 dropped" in result.output
    n = db.execute("select count(*) from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id "
                   "where s.name = 'runner'").fetchone()[0]
    assert n == 2
