"""Compression runs through its policies and compressed chunks answer queries identically."""

from __future__ import annotations

from datetime import timedelta

import pytest
from schema_data import day_start, load, organization, server, thirty_second_day

QUERIES = {
    "per_server": "select server_id, count(*), sum(cpu_percent), max(memory_used_bytes), sum(network_rx_bytes)"
                  " from metrics.server_metrics group by 1 order by 1",
    "one_hour_of_one_server": "select collected_at, cpu_percent, disk_used_bytes from metrics.server_metrics"
                              " where server_id = %(s)s and collected_at >= %(h)s and collected_at < %(h)s + interval '1 hour'"
                              " order by collected_at desc",
    "hourly_p95": "select time_bucket('1 hour', collected_at), server_id,"
                  " percentile_cont(0.95) within group (order by cpu_percent)"
                  " from metrics.server_metrics group by 1, 2 order by 1, 2",
}


def _job(db, proc: str, schema: str, name: str) -> int:
    return db.execute(
        "select job_id from timescaledb_information.jobs"
        " where proc_name = %s and hypertable_schema = %s and hypertable_name = %s",
        (proc, schema, name),
    ).fetchone()[0]


def _answers(db, params) -> dict[str, list[tuple]]:
    return {name: db.execute(q, params).fetchall() for name, q in QUERIES.items()}


@pytest.fixture
def old_day(db):
    org = organization(db, "acme")
    servers = [server(db, org, f"web-{i}") for i in (1, 2, 3)]
    start = day_start(15)
    assert load(db, thirty_second_day(servers, start, seed=7)) == 8640
    return servers, start


def test_compression_policy_compresses_old_chunks_and_answers_stay_identical(db, old_day):
    servers, start = old_day
    params = {"s": servers[1], "h": start + timedelta(hours=7)}
    before = _answers(db, params)
    assert len(before["per_server"]) == 3
    assert len(before["one_hour_of_one_server"]) == 120

    db.execute("call run_job(%s)", (_job(db, "policy_compression", "metrics", "server_samples"),))

    stats = db.execute(
        "select compression_status, before_compression_total_bytes, after_compression_total_bytes"
        " from chunk_compression_stats('metrics.server_samples')"
    ).fetchall()
    assert [s[0] for s in stats] == ["Compressed"]  # the day fits one 1-day chunk
    total = db.execute(
        "select total_chunks, number_compressed_chunks, before_compression_total_bytes,"
        " after_compression_total_bytes from hypertable_compression_stats('metrics.server_samples')"
    ).fetchone()
    assert total[:2] == (1, 1)
    assert total[3] < total[2], f"compressed {total[3]} bytes is not smaller than {total[2]}"
    assert _answers(db, params) == before


def test_resent_sample_into_a_compressed_chunk_is_deduplicated(db, old_day):
    servers, start = old_day
    db.execute("call run_job(%s)", (_job(db, "policy_compression", "metrics", "server_samples"),))
    db.execute(
        "insert into metrics.server_metrics (server_id, collected_at, cpu_percent) values (%s, %s, 99)"
        "",  # a re-sent sample is ignored (the view's INSERT trigger: on conflict do nothing)
        (servers[0], start),
    )
    assert db.execute(
        "select count(*), count(*) filter (where cpu_percent = 99 and collected_at = %s)"
        " from metrics.server_metrics where server_id = %s",
        (start, servers[0]),
    ).fetchone() == (2880, 0)


def test_aggregate_compression_policy_compresses_old_aggregate_chunks(db, old_day):
    servers, start = old_day
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1m', %s, %s)",
               (start, start + timedelta(days=1)))
    query = ("select bucket, server_id, sample_count, cpu_p95_percent, network_tx_max_bytes_per_sec"
             " from metrics.server_metrics_1m where bucket >= %s and bucket < %s order by 1, 2")
    window = (start, start + timedelta(days=1))
    before = db.execute(query, window).fetchall()
    assert len(before) == 3 * 1440

    schema, table = db.execute(
        "select materialization_hypertable_schema, materialization_hypertable_name"
        " from timescaledb_information.continuous_aggregates where view_name = 'server_metrics_1m'"
    ).fetchone()
    db.execute("call run_job(%s)", (_job(db, "policy_compression", "metrics", "server_metrics_1m"),))

    compressed = db.execute(
        "select count(*) from timescaledb_information.chunks"
        " where hypertable_schema = %s and hypertable_name = %s and is_compressed",
        (schema, table),
    ).fetchone()[0]
    assert compressed == 1
    assert db.execute(query, window).fetchall() == before
