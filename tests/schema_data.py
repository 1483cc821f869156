"""Hand-built deterministic metric rows for the schema tests (no generator, no randomness at run time
beyond a fixed numpy seed). Values are chosen to be exact in binary floating point (quarters,
integers, byte deltas that are multiples of 30), so sums do not depend on summation order and
aggregates can be compared with ``==``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg

SERVER_METRIC_COLUMNS = (
    "server_id", "collected_at", "cpu_percent", "memory_used_bytes", "memory_percent",
    "disk_used_bytes", "disk_percent", "network_rx_bytes", "network_tx_bytes", "load_1m",
)


def day_start(days_ago: int) -> datetime:
    """UTC midnight ``days_ago`` days before today."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def organization(db: psycopg.Connection, name: str) -> int:
    return db.execute(
        "insert into tenancy.organizations (name, slug) values (%s, %s) returning id", (name, name.lower())
    ).fetchone()[0]


def server(db: psycopg.Connection, org: int, name: str) -> int:
    return db.execute(
        "insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes, disk_total_bytes)"
        " values (%s, %s, 8, 16000000000, 500000000000) returning id",
        (org, name),
    ).fetchone()[0]


def thirty_second_day(server_ids: list[int], start: datetime, seed: int = 42) -> list[tuple]:
    """One day of 30-s rows per server (2,880 each) with exactly representable values."""
    rng = np.random.default_rng(seed)
    n = 2880
    rows: list[tuple] = []
    for sid in server_ids:
        cpu = rng.integers(0, 401, n) / 4
        mem = rng.integers(1_000_000_000, 8_000_000_000, n)
        mem_pct = rng.integers(0, 401, n) / 4
        disk = 100_000_000_000 + np.cumsum(rng.integers(0, 1_000_000, n))
        disk_pct = rng.integers(0, 401, n) / 4
        rx = rng.integers(0, 1_000_000, n) * 30
        tx = rng.integers(0, 500_000, n) * 30
        load = rng.integers(0, 64, n) / 8
        for i in range(n):
            rows.append((
                sid, start + timedelta(seconds=30 * i), float(cpu[i]), int(mem[i]), float(mem_pct[i]),
                int(disk[i]), float(disk_pct[i]), int(rx[i]), int(tx[i]), float(load[i]),
            ))
    return rows


def sparse_rows(server_id: int, times: list[datetime], cpu: float = 50.0) -> list[tuple]:
    """One row per given time with fixed values (for retention tests)."""
    return [(server_id, t, cpu, 2_000_000_000, 25.0, 100_000_000_000, 20.0, 3000, 1500, 1.0) for t in times]


def load_samples(db: psycopg.Connection, rows: list[tuple]) -> int:
    """COPY rows (SERVER_METRIC_COLUMNS order) straight into metrics.server_samples, encoded
    (ingest.compact): the COPY `rmp ingest` runs, where ``load`` goes through the view's triggers."""
    from ingest.compact import encode_columns

    by_name = dict(zip(SERVER_METRIC_COLUMNS, zip(*rows, strict=True), strict=True))
    encoded = encode_columns({k: list(v) for k, v in by_name.items() if k not in ("server_id", "collected_at")},
                             n=len(rows))
    with db.cursor() as cur, cur.copy(
        f"copy metrics.server_samples (server_id, collected_at, {', '.join(encoded)}) from stdin"
    ) as copy:
        for i in range(len(rows)):
            copy.write_row((by_name["server_id"][i], by_name["collected_at"][i],
                            *(None if v.mask[i] else v.data[i].item() for v in encoded.values())))
    return len(rows)


def load(db: psycopg.Connection, rows: list[tuple]) -> int:
    """COPY rows (SERVER_METRIC_COLUMNS order) into metrics.server_metrics."""
    with db.cursor() as cur, cur.copy(
        f"copy metrics.server_metrics ({', '.join(SERVER_METRIC_COLUMNS)}) from stdin"
    ) as copy:
        for row in rows:
            copy.write_row(row)
    return len(rows)
