"""The Python encoder of server_samples (ingest.compact) against the SQL of rmp.compact.

The writers encode rows with numpy; the migration, the view's triggers and the
aggregates use rmp.compact's SQL. Both must give the same integers for the same row,
on both engines, or a reloaded row would differ from a migrated one. And the view's
decoding of an encoded row gives back whole bytes and two-decimal values exactly.
The rows are evaluated from VALUES lists: no table is needed, so this runs on a
bare engine at any revision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from ingest.coltypes import col_type
from ingest.compact import STORAGE, EncodeError, Samples, encode_columns, physical_columns
from ingest.payload import Rows
from rmp import catalog, compact

COLUMNS = ["server_id", "collected_at", *catalog.SERVER_METRIC_COLUMNS, "interval_seconds"]
TYPES = {"server_id": "bigint", "collected_at": "timestamptz", "interval_seconds": "double precision",
         **{c.name: c.sql_type for c in catalog.SERVER_METRICS}}
I64 = 2**63 - 1
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _row(i: int, **values) -> dict:
    """A server_metrics row: every column NULL unless given (the key and interval always given)."""
    return {"server_id": 1, "collected_at": T0 + timedelta(seconds=30 * i), "interval_seconds": 30.0,
            **dict.fromkeys(catalog.SERVER_METRIC_COLUMNS), **values}


def _edge_rows() -> list[dict]:
    full = dict(cpu_percent=12.34, load_1m=0.07, load_5m=1.5, load_15m=99.99, cpu_cores=8,
                memory_total_bytes=16 * 2**30, memory_used_bytes=5 * 2**30 + 1024 * 777,
                memory_available_bytes=11 * 2**30 - 1024 * 777, memory_percent=33.33,
                disk_total_bytes=500 * 10**9, disk_used_bytes=4096 * 12_345_678,
                disk_available_bytes=500 * 10**9 - 4096 * 12_345_678, disk_percent=10.11,
                disk_read_bytes=512 * 1000, disk_write_bytes=512 * 3 + 7, network_rx_bytes=123_456_789,
                network_tx_bytes=0, containers_running=3, containers_total=5)
    return [
        _row(0, **full),
        _row(1),                                                     # every metric NULL
        _row(2, **dict.fromkeys(catalog.SERVER_METRIC_COLUMNS, 0)),  # zeros: total 0, used 0
        _row(3, **{**full, "memory_total_bytes": I64, "memory_used_bytes": I64, "memory_available_bytes": 0,
                   "disk_total_bytes": I64, "disk_used_bytes": I64 - 1, "disk_available_bytes": 1,
                   "disk_read_bytes": I64, "disk_write_bytes": I64 - 511, "network_rx_bytes": I64,
                   "memory_percent": 100.0, "disk_percent": 100.0}),  # bigint's top
        _row(4, **{**full, "memory_used_bytes": 20 * 2**30, "memory_available_bytes": 123,
                   "memory_percent": 99.5, "disk_used_bytes": 600 * 10**9}),   # used > total
        _row(5, **{**full, "memory_total_bytes": 0, "memory_used_bytes": 0, "memory_percent": 0.0,
                   "disk_total_bytes": 0, "disk_used_bytes": 4096, "disk_percent": 100.0}),  # total 0
        _row(6, **{**full, "memory_total_bytes": None, "disk_used_bytes": None}),  # derivation from NULL
        _row(7, **{**full, "memory_available_bytes": None, "disk_percent": None}),  # NULL value, inputs given
        _row(8, **{**full, "cpu_percent": 12.345, "load_1m": 0.125, "load_5m": 0.135, "memory_percent": 33.335,
                   "disk_percent": 0.005, "load_15m": 2.675}),        # more decimals (and halves)
        _row(9, **{**full, "memory_used_bytes": -1025, "disk_read_bytes": -1, "disk_write_bytes": -512,
                   "memory_available_bytes": 5, "disk_available_bytes": 0}),  # negative: floor and mask
        _row(10, **{**full, "memory_used_bytes": -5, "memory_percent": 50.0}),  # used < 0: no derivation
        _row(11, **{**full, "load_1m": 1e12, "load_5m": 999_999_999_999.99, "cpu_percent": 100.0}),  # bounds' top
    ]


def _random_rows(n: int, seed: int = 20) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        total = int(rng.integers(0, 2**62))
        used = int(rng.integers(0, total + 1)) if rng.random() < 0.8 else int(rng.integers(0, 2**62))
        dtotal = int(rng.choice([0, 1, 4096, int(rng.integers(1, 2**50))]))
        dused = int(rng.integers(0, max(dtotal, 1) * 2)) // 4096 * 4096 + int(rng.choice([0, 0, 0, 17]))
        two = rng.random() < 0.7       # two decimals, or whatever a float gives
        pct = (lambda x: round(x, 2)) if two else float
        row = dict(
            cpu_percent=pct(rng.uniform(0, 100)), load_1m=pct(rng.exponential(3)), load_5m=pct(rng.uniform(0, 1e6)),
            load_15m=pct(rng.uniform(0, 1e11)), cpu_cores=int(rng.integers(1, 257)),
            memory_total_bytes=total, memory_used_bytes=used,
            memory_available_bytes=max(total - used, 0) + int(rng.integers(-1000, 1000)) * (rng.random() < 0.3),
            memory_percent=pct(used / total * 100 if total and used <= total else rng.uniform(0, 100)),
            disk_total_bytes=dtotal, disk_used_bytes=dused,
            disk_available_bytes=max(dtotal - dused, 0), disk_percent=pct(rng.uniform(0, 100)),
            disk_read_bytes=int(rng.integers(0, 2**63 - 1)), disk_write_bytes=int(rng.integers(0, 2**40)) * 512,
            network_rx_bytes=int(rng.integers(0, 2**63 - 1)), network_tx_bytes=int(rng.integers(0, 2**20)),
            containers_running=int(rng.integers(0, 50)), containers_total=int(rng.integers(0, 50)),
        )
        for k in list(row):
            if rng.random() < 0.08:
                row[k] = None
        rows.append(_row(100 + i, **{k: abs(v) if k.endswith("_available_bytes") and v is not None else v
                                     for k, v in row.items()}))
    return rows


ROWS = _edge_rows() + _random_rows(300)


def _values_sql(rows: list[dict], columns: list[str], types: dict[str, str]) -> tuple[str, list]:
    """``(values (%s::type, ...), ...) as m(i, columns)`` and its parameters, in row order."""
    tuples = ", ".join("(" + ", ".join(["%s::integer", *(f"%s::{types[c]}" for c in columns)]) + ")"
                       for _ in rows)
    params = [x for i, r in enumerate(rows) for x in (i, *(r[c] for c in columns))]
    return f"(values {tuples}) as m(i, {', '.join(columns)})", params


def _sql_encoded(conn: psycopg.Connection, rows: list[dict]) -> tuple[list[str], list[tuple]]:
    names, exprs = compact.encoded("m")
    source, params = _values_sql(rows, COLUMNS, TYPES)
    return names, conn.execute(f"select {', '.join(exprs)} from {source} order by m.i", params).fetchall()


def _python_encoded(rows: list[dict]) -> dict[str, np.ma.MaskedArray]:
    return encode_columns({c: [r[c] for r in rows] for c in catalog.SERVER_METRIC_COLUMNS})


def _as_python(col: np.ma.MaskedArray) -> list:
    return [None if m else v for v, m in zip(np.ma.getdata(col).tolist(), np.ma.getmaskarray(col).tolist(),
                                             strict=True)]


def test_python_encoder_equals_the_sql_expressions(raw_conn):
    names, got = _sql_encoded(raw_conn, ROWS)
    mine = _python_encoded(ROWS)
    assert set(mine) == set(STORAGE) == {n for n, _ in compact.storage_columns()}
    by_column = dict(zip(names, zip(*got, strict=True), strict=True))
    for name in STORAGE:
        assert _as_python(mine[name]) == list(by_column[name]), name
    # a few values worked out by hand: the layouts themselves
    full, empty, zeros, top, over, zero_total, null_total = (dict(zip(names, got[i], strict=True)) for i in range(7))
    assert all(zeros[n] == 0 for n in STORAGE)
    assert (full["cpu_percent_x100"], full["load_1m_x100"], full["load_15m_x100"]) == (1234, 7, 9999)
    assert (full["memory_used_kib"], full["memory_used_rem"]) == (5 * 2**20 + 777, 0)
    assert (full["disk_write_sectors"], full["disk_write_rem"]) == (3, 7)
    used = 5 * 2**30 + 1024 * 777
    assert full["memory_available_bytes_residual"] == 0            # available = total - used
    assert full["memory_percent_residual"] == 3333 - round(used / (16 * 2**30) * 10000) == 3333 - 3125
    assert full["disk_percent_residual"] == 1011 - round(12_345_678 * 4096 / (500 * 10**9) * 10000) == 0
    assert all(empty[n] is None for n in STORAGE)
    assert (top["memory_used_kib"], top["memory_used_rem"]) == (I64 >> 10, 1023)
    assert (top["disk_read_sectors"], top["disk_read_rem"]) == (I64 >> 9, 511)
    assert (top["memory_percent_residual"], top["disk_percent_residual"]) == (0, 0)
    assert over["memory_available_bytes_residual"] == 123 and over["memory_percent_residual"] == 9950
    assert zero_total["memory_percent_residual"] == 0 and zero_total["disk_percent_residual"] == 10000
    assert null_total["memory_available_bytes_residual"] == 11 * 2**30 - 1024 * 777     # derivation counts 0
    negative = dict(zip(names, got[9], strict=True))
    assert (negative["memory_used_kib"], negative["memory_used_rem"]) == (-2, 1023)
    assert (negative["disk_read_sectors"], negative["disk_read_rem"]) == (-1, 511)
    assert (negative["disk_write_sectors"], negative["disk_write_rem"]) == (-1, 0)


def test_masked_arrays_and_lists_encode_alike():
    lists = _python_encoded(ROWS)
    arrays = {}
    for c in catalog.SERVER_METRICS:
        values = [r[c.name] for r in ROWS]
        mask = np.array([v is None for v in values])
        dtype = np.float64 if c.sql_type == "double precision" else np.int64
        arrays[c.name] = np.ma.MaskedArray(np.array([0 if v is None else v for v in values], dtype=dtype), mask)
    masked = encode_columns(arrays)
    for name in STORAGE:
        assert _as_python(masked[name]) == _as_python(lists[name]), name


def test_decoded_gives_back_whole_bytes_and_two_decimals_exactly(raw_conn):
    rows = [r for r in ROWS if all(v is None or not isinstance(v, float) or round(v, 2) == v for v in r.values())]
    assert len(rows) > 150
    names, encoded = _sql_encoded(raw_conn, rows)
    stored = [dict(zip(names, e, strict=True)) for e in encoded]
    types = {"server_id": "bigint", "collected_at": "timestamptz", "interval_seconds": "double precision",
             **dict(compact.storage_columns())}
    source, params = _values_sql(stored, names, types)
    back = raw_conn.execute(f"select {compact.decoded('m')} from {source} order by m.i", params).fetchall()
    assert [dict(zip(COLUMNS, b, strict=True)) for b in back] == rows


def test_samples_payload_copies_what_the_sql_encodes(raw_conn):
    """The loader's payload (binary COPY of the encoded columns) into a table shaped like server_samples."""
    physical = physical_columns(COLUMNS)
    types = {"server_id": "bigint", "collected_at": "timestamptz", "interval_seconds": "double precision",
             **dict(compact.storage_columns())}
    wires = [col_type("timestamp with time zone" if types[p] == "timestamptz" else types[p]).wire for p in physical]
    rows = [tuple(r[c] for c in COLUMNS) for r in ROWS]
    with raw_conn.transaction():
        raw_conn.execute(f"create temp table samples ({', '.join(f'{p} {types[p]}' for p in physical)})"
                         " on commit drop")
        payload = Samples(Rows(rows), COLUMNS, physical, wires)
        half = payload.take(0, 100)                        # a slice encodes on its own
        with raw_conn.cursor().copy(f"copy samples ({', '.join(physical)}) from stdin (format binary)") as copy:
            half.write(copy, [])
        with raw_conn.cursor().copy(f"copy samples ({', '.join(physical)}) from stdin (format binary)") as copy:
            payload.take(100, len(payload)).write(copy, [])
        copied = raw_conn.execute(f"select {', '.join(physical)} from samples order by collected_at").fetchall()
    names, want = _sql_encoded(raw_conn, ROWS)
    assert names == physical
    assert copied == want


@pytest.mark.parametrize(("column", "value"), [
    ("cpu_percent", 3e7),                 # x100 beyond integer
    ("load_1m", 1e17),                    # x100 beyond bigint
    ("memory_percent", -3e7),             # x100 beyond integer
    ("memory_available_bytes", -(2**63)),  # minus the derivation: below bigint
    ("load_5m", float("inf")),
])
def test_values_that_do_not_fit_raise_instead_of_wrapping(raw_conn, column, value):
    row = _row(0, memory_total_bytes=100, memory_used_bytes=10, **{column: value})
    with pytest.raises(EncodeError) as err:
        _python_encoded([row])
    assert err.value.column == column
    if value != float("inf"):     # the database refuses the same rows
        with pytest.raises(psycopg.errors.NumericValueOutOfRange), raw_conn.transaction():
            _sql_encoded(raw_conn, [row])


def test_integer_columns_refuse_fractions_and_overflow():
    with pytest.raises(EncodeError, match="memory_used_bytes"):
        encode_columns({"memory_used_bytes": [1.5]})
    with pytest.raises(EncodeError, match="disk_read_bytes"):
        encode_columns({"disk_read_bytes": [2**63]})
    with pytest.raises(EncodeError, match="cpu_cores"):
        encode_columns({"cpu_cores": [2**31]})
    with pytest.raises(EncodeError, match="network_rx_bytes"):     # would be rounded as a double
        encode_columns({"network_rx_bytes": [2**60 + 1, 2.0]})
    out = encode_columns({"memory_used_bytes": [2048.0, None]})
    assert _as_python(out["memory_used_kib"]) == [2, None] and _as_python(out["cpu_percent_x100"]) == [None, None]
