"""Property: any valid batch written as CSV, NDJSON or Parquet loads back exactly: whole
bytes and integers as they were, percents and loads at two decimals (revision 0012
stores them as hundredths, rounded half to even like PostgreSQL's round(double))."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.loader import load_file
from rmp import catalog

COLUMNS = ["cpu_percent", "load_1m", "memory_used_bytes", "memory_percent", "disk_write_bytes",
           "containers_running"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)

percent = st.floats(min_value=0, max_value=100, allow_nan=False)
row = st.fixed_dictionaries({
    "cpu_percent": st.none() | percent,
    "load_1m": st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
    "memory_used_bytes": st.integers(min_value=0, max_value=2**63 - 1),
    "memory_percent": percent,
    "disk_write_bytes": st.none() | st.integers(min_value=0, max_value=2**40),
    "containers_running": st.integers(min_value=0, max_value=2**31 - 1),
})
batch = st.tuples(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**7)), min_size=1, max_size=60,
             unique_by=lambda k: k),                         # (server, seconds): the unique key
    st.lists(row, min_size=60, max_size=60),
    st.sampled_from(["csv", "ndjson", "parquet"]),
    st.sampled_from([timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8)]),
)


def _write(path, fmt, records):
    if fmt == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["server_id", "collected_at", *COLUMNS])
            for r in records:
                w.writerow([r["server_id"], r["collected_at"].isoformat(),
                            *("" if r[c] is None else repr(r[c]) for c in COLUMNS)])
    elif fmt == "ndjson":
        with open(path, "w") as fh:
            for r in records:
                fh.write(json.dumps({**r, "collected_at": r["collected_at"].isoformat()}) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(records, schema=pa.schema(
            [("server_id", pa.int64()), ("collected_at", pa.timestamp("us", tz="UTC"))]
            + [(c, pa.float64() if c in ("cpu_percent", "load_1m", "memory_percent") else pa.int64())
               for c in COLUMNS])), path)


def _stored(column: str, value, compact: bool):
    """What server_metrics gives back for ``value``: two decimals where server_samples keeps hundredths."""
    kind = catalog.metric_column(column).stored.kind
    if value is None or kind not in ("hundredths", "percent_of") or not compact:
        return value
    return float(np.rint(value * 100)) / 100


def test_any_valid_batch_round_trips_exactly(db, migrated_url, tmp_path_factory):
    org = db.execute("insert into tenancy.organizations (name, slug) values ('P', 'p') returning id").fetchone()[0]
    servers = [db.execute("insert into tenancy.servers (organization_id, name) values (%s, %s) returning id",
                          (org, f"s{i}")).fetchone()[0] for i in range(3)]
    directory = tmp_path_factory.mktemp("roundtrip")
    compact = db.execute("select to_regclass('metrics.server_samples') is not null").fetchone()[0]
    table = "metrics.server_samples" if compact else "metrics.server_metrics"

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(batch)
    def check(b):
        keys, values, fmt, offset = b
        zone = (UTC if not offset else __import__("datetime").timezone(offset))
        records = [{"server_id": servers[s], "collected_at": (T0 + timedelta(seconds=sec)).astimezone(zone),
                    **values[i]} for i, (s, sec) in enumerate(keys)]
        db.execute(f"truncate {table}")
        path = directory / f"batch.{fmt}"
        _write(path, fmt, records)
        r = load_file(path, migrated_url, batch_rows=17)
        assert (r.loaded, r.rejected, r.duplicates) == (len(records), 0, 0)
        got = db.execute(
            "select server_id, collected_at, " + ", ".join(COLUMNS)
            + " from metrics.server_metrics order by server_id, collected_at"
        ).fetchall()
        want = sorted((r["server_id"], r["collected_at"], *(_stored(c, r[c], compact) for c in COLUMNS)) for r in records)
        assert got == [tuple(x) for x in want]

    check()
