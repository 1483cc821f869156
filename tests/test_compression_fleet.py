"""The generator's fleet answers the same before and after every raw and aggregate chunk
is compressed: rows read back bit for bit, the aggregates' stored buckets bit for bit,
order-independent aggregates (count, min, max, percentiles) exactly, sums to the last
few ulps (floating-point addition order may differ between the two scans)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from ingest.fleet_writers import write_fleet
from ingest.generator import generate_fleet

TIERS = ("server_metrics_1m", "server_metrics_5m", "server_metrics_1h", "server_metrics_1d")
EXACT = {
    "rows_of_one_server": "select * from metrics.server_metrics where server_id = %(s)s order by collected_at",
    "order_free_aggregates": (
        "select server_id, count(*), min(cpu_percent), max(memory_used_bytes), max(disk_percent),"
        " percentile_cont(0.95) within group (order by cpu_percent),"
        " percentile_cont(0.5) within group (order by network_rx_bytes)"
        " from metrics.server_metrics group by 1 order by 1"),
    **{tier: f"select * from metrics.{tier} order by bucket, server_id" for tier in TIERS},
}
SUMS = ("select server_id, sum(cpu_percent), avg(load_15m), sum(network_tx_bytes)::float8"
        " from metrics.server_metrics group by 1 order by 1")


def _answers(db, server_id: int) -> tuple[dict, list]:
    exact = {name: db.execute(q, {"s": server_id}).fetchall() for name, q in EXACT.items()}
    return exact, db.execute(SUMS).fetchall()


def test_generated_fleet_answers_identically_after_compression(db, migrated_url):
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=4)
    fleet = generate_fleet(seed=3, organizations=1, servers=3, days=2, start=start, sub_organizations=0,
                           sites_per_server=0, anomalies_per_server=1.0)
    summary = write_fleet(fleet, migrated_url, site_usage=False)
    assert summary.server_metrics == 3 * 2 * 2880
    for tier in TIERS:
        db.execute(f"call refresh_continuous_aggregate('metrics.{tier}', %s, %s)", (start, start + timedelta(days=2)))
    sid = fleet.server_ids[(fleet.servers[1].organization, fleet.servers[1].name)]
    exact_before, sums_before = _answers(db, sid)
    assert len(exact_before["rows_of_one_server"]) == 5760
    assert len(exact_before["server_metrics_1m"]) == 3 * 2 * 1440
    assert len(exact_before["server_metrics_1d"]) == 3 * 2

    relations = ["metrics.server_samples"] + [
        f"{s}.{t}" for s, t in db.execute(
            "select materialization_hypertable_schema, materialization_hypertable_name"
            " from timescaledb_information.continuous_aggregates where view_name = any(%s)", (list(TIERS),))]
    for rel in relations:
        db.execute("select compress_chunk(c) from show_chunks(%s::regclass) c", (rel,))
    compressed = db.execute("select count(*) filter (where is_compressed), count(*)"
                            " from timescaledb_information.chunks where hypertable_name = 'server_samples'"
                            ).fetchone()
    assert compressed[0] == compressed[1] >= 2

    exact_after, sums_after = _answers(db, sid)
    assert exact_after == exact_before
    assert len(sums_after) == len(sums_before) == 3
    for a, b in zip(sums_after, sums_before, strict=True):
        assert a[0] == b[0] and all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip(a[1:], b[1:], strict=True))
