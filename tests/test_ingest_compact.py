"""rmp ingest, the collector's and the fleet's writers from revision 0012 on: server_metrics
is a view and the rows are encoded (ingest.compact) and COPYed into metrics.server_samples.
The view gives back exactly what was loaded, reloads add nothing, and a row the database
refuses is still reported with its line and server_metrics' column."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from ingest.compact import STORAGE, EncodeError, constraint_columns, encode_columns
from ingest.loader import BatchWriter, load_columns, load_file, load_rows
from ingest.targets import get_target, table_columns
from rmp import catalog

T0 = datetime(2024, 1, 1, tzinfo=UTC)
METRICS = catalog.SERVER_METRIC_COLUMNS


@pytest.fixture
def servers(db):
    if not db.execute("select to_regclass('metrics.server_samples') is not null").fetchone()[0]:
        pytest.skip("metrics.server_samples does not exist (revision before 0012)")
    org = db.execute("insert into tenancy.organizations (name, slug) values ('Acme', 'acme') returning id").fetchone()[0]
    return {name: db.execute("insert into tenancy.servers (organization_id, name) values (%s, %s) returning id",
                             (org, name)).fetchone()[0] for name in ("web-1", "web-2")}


def _values(i: int) -> dict:
    """A collector's row (units of KiB, blocks, sectors), with deviations every few rows:
    a remainder, more decimals than two, available != total - used, used > total, NULLs."""
    total, dtotal = 16 * 2**30, 500 * 10**9
    used, dused = (i * 7919 % 2**20) * 1024, (i * 104729 % 10**8) * 4096
    row = dict(cpu_percent=round(i * 0.37 % 100, 2), load_1m=round(i * 0.013, 2), load_5m=1.25, load_15m=0.5,
               cpu_cores=8, memory_total_bytes=total, memory_used_bytes=used, memory_available_bytes=total - used,
               memory_percent=round(used / total * 100, 2), disk_total_bytes=dtotal, disk_used_bytes=dused,
               disk_available_bytes=dtotal - dused, disk_percent=round(dused / dtotal * 100, 2),
               disk_read_bytes=512 * i, disk_write_bytes=512 * (i % 7), network_rx_bytes=1000 + i,
               network_tx_bytes=i, containers_running=i % 5, containers_total=5)
    if i % 5 == 1:
        row.update(memory_used_bytes=used + 3, disk_read_bytes=512 * i + 511, memory_available_bytes=total - used - 999)
    if i % 7 == 2:
        row.update(memory_used_bytes=total + 4096, memory_percent=100.0, disk_percent=None, network_tx_bytes=None)
    if i % 11 == 3:
        row.update(memory_total_bytes=None, load_5m=None, disk_available_bytes=7)
    return row


def _write_csv(path, rows: list[dict], quoted: bool = False) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC if quoted else csv.QUOTE_MINIMAL)
        w.writerow(["server", "collected_at", *METRICS])
        for r in rows:
            w.writerow([r["server"], r["collected_at"].isoformat(), *("" if r[c] is None else r[c] for c in METRICS)])


def _rows(n: int, server: str = "web-1") -> list[dict]:
    return [{"server": server, "collected_at": T0 + timedelta(seconds=30 * i), **_values(i)} for i in range(n)]


def _view(db, server_id: int) -> list[dict]:
    cur = db.execute(f"select collected_at, {', '.join(METRICS)} from metrics.server_metrics "
                     "where server_id = %s order by collected_at", (server_id,))
    return [dict(zip(["collected_at", *METRICS], r, strict=True)) for r in cur.fetchall()]


@pytest.mark.parametrize("quoted", [False, True], ids=["fast-path", "general-path"])
def test_a_load_is_encoded_into_server_samples_and_reads_back_exactly(db, servers, tmp_path, migrated_url, quoted):
    rows = _rows(1000)
    p = tmp_path / "m.csv"
    _write_csv(p, rows, quoted)
    r = load_file(p, migrated_url, batch_rows=300)
    assert (r.loaded, r.duplicates, r.rejected) == (1000, 0, 0)
    assert _view(db, servers["web-1"]) == [{k: v for k, v in row.items() if k != "server"} for row in rows]
    # the table holds what the Python encoder computes, and interval_seconds took its default
    stored = list(STORAGE)
    got = db.execute(f"select {', '.join(stored)}, interval_seconds from metrics.server_samples "
                     "order by collected_at").fetchall()
    want = encode_columns({c: [row[c] for row in rows] for c in METRICS})
    for j, name in enumerate(stored):
        col = want[name]
        assert [g[j] for g in got] == [None if m else v for v, m in zip(
            np.ma.getdata(col).tolist(), np.ma.getmaskarray(col).tolist(), strict=True)], name
    assert {g[-1] for g in got} == {float(catalog.COLLECTION_INTERVAL_SECONDS)}
    # the collector's units leave most remainders 0; the deviating rows keep theirs
    whole_kib = sum(1 for row in rows if row["memory_used_bytes"] % 1024 == 0)
    assert 700 < whole_kib < 1000
    assert db.execute("select count(*) filter (where memory_used_rem = 0), count(*) filter (where disk_read_rem = 511)"
                      " from metrics.server_samples").fetchone() == (whole_kib, 200)
    again = load_file(p, migrated_url, batch_rows=300)
    assert (again.loaded, again.duplicates, again.rejected) == (0, 1000, 0)
    assert db.execute("select count(*) from metrics.server_samples").fetchone()[0] == 1000


def test_ndjson_with_missing_fields_and_an_interval(db, servers, tmp_path, migrated_url):
    p = tmp_path / "m.ndjson"
    with open(p, "w") as fh:
        fh.write(json.dumps({"server": "web-2", "collected_at": T0.isoformat(), "cpu_percent": 5.5,
                             "memory_used_bytes": 4097, "interval_seconds": 60}) + "\n")
        fh.write(json.dumps({"server": "web-2", "collected_at": (T0 + timedelta(minutes=1)).isoformat(),
                             "memory_percent": 12.34, "disk_write_bytes": 1024}) + "\n")
    r = load_file(p, migrated_url)
    assert (r.loaded, r.rejected) == (2, 0)
    got = db.execute("select cpu_percent, memory_used_bytes, memory_percent, disk_write_bytes, interval_seconds"
                     " from metrics.server_metrics order by collected_at").fetchall()
    assert got == [(5.5, 4097, None, None, 60.0), (None, None, 12.34, 1024, 30.0)]
    assert db.execute("select memory_used_kib, memory_used_rem, memory_percent_residual, disk_write_sectors"
                      " from metrics.server_samples order by collected_at").fetchall() == [
        (4, 1, None, None), (None, None, 1234, 2)]


def test_bad_rows_keep_their_line_field_and_reason(db, servers, tmp_path, migrated_url):
    rows = _rows(20)
    p = tmp_path / "bad.csv"
    _write_csv(p, rows)
    lines = p.read_text().splitlines()
    for line, cell, value in ((4, 6, "-8"),        # cpu_cores < 0
                              (6, 3, "2e12"),      # load_1m past LOAD's bound
                              (8, 1, "")):         # collected_at missing
        cells = lines[line - 1].split(",")
        cells[cell] = value
        lines[line - 1] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    # a rule only the database knows, on a storage column: its refusal names server_metrics' column
    db.execute("alter table metrics.server_samples add constraint test_kib check (memory_used_kib <> 7919)")
    try:
        r = load_file(p, migrated_url, batch_rows=8)
    finally:
        db.execute("alter table metrics.server_samples drop constraint test_kib")
    got = {x.line: (x.field, x.reason) for x in r.rejections}
    assert (r.loaded, r.rejected) == (16, 4)
    assert got[4] == ("cpu_cores", "must be >= 0: -8")
    assert got[6] == ("load_1m", "out of range 0-1e+12: 2000000000000.0")
    assert got[8] == ("collected_at", "missing value")
    assert got[3][0] == "memory_used_bytes" and got[3][1].startswith("refused by the database: ")
    assert "test_kib" in got[3][1]


def test_every_check_of_server_samples_names_a_column_of_server_metrics(db, servers):
    checks = [r[0] for r in db.execute(
        "select conname from pg_constraint where conrelid = 'metrics.server_samples'::regclass and contype = 'c'")]
    assert len(checks) == len(constraint_columns())
    assert set(checks) == set(constraint_columns())
    assert set(constraint_columns().values()) == {*METRICS, "interval_seconds"}


def test_trusted_rows_of_the_collector_and_fleet_path(db, servers, migrated_url):
    columns = ["server_id", "collected_at", *METRICS, "interval_seconds"]
    rows = [(servers["web-1"], r["collected_at"], *(r[c] for c in METRICS), 30.0) for r in _rows(50)]
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        writer = BatchWriter(conn, get_target("server_metrics"), [
            c for c in table_columns(conn, get_target("server_metrics")) if c.name in columns])
        assert writer.compact is not None and writer.compact.table == "server_samples"
        # COPY into the table itself, never into the view (whose triggers would encode again)
        assert writer.copy_direct.as_string(conn).startswith('copy "metrics"."server_samples" (')
        assert load_rows(conn, "server_metrics", columns, rows, batch_rows=20) == (50, 0)
        assert load_rows(conn, "server_metrics", columns, rows[:30] + rows[:5], batch_rows=20) == (0, 35)
    assert [tuple(v.values()) for v in _view(db, servers["web-1"])] == [r[1:-1] for r in rows]
    # a trusted row whose value cannot be encoded raises (nothing wraps, nothing is written)
    bad = (servers["web-2"], T0, *(1e17 if c == "load_1m" else None for c in METRICS), 30.0)
    with psycopg.connect(migrated_url, autocommit=True) as conn, pytest.raises(EncodeError) as err:
        load_rows(conn, "server_metrics", columns, [bad])
    assert err.value.column == "load_1m"
    assert db.execute("select count(*) from metrics.server_samples where server_id = %s",
                      (servers["web-2"],)).fetchone()[0] == 0


def test_columns_of_the_fleet_writer_with_nulls(db, servers, migrated_url):
    """load_columns (write_fleet's path): arrays in, masked entries NULL, re-sent rows skipped."""
    n = 100
    stamps = np.array([np.datetime64("2024-01-01T00:00:00") + np.timedelta64(30 * i, "s") for i in range(n)])
    cpu = np.ma.MaskedArray(np.arange(n) / 4, mask=np.arange(n) % 10 == 0)
    used = np.arange(n, dtype=np.int64) * 4096 + 5
    part = {"server_id": np.full(n, servers["web-2"]), "collected_at": stamps, "cpu_percent": cpu,
            "memory_used_bytes": used}
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        assert load_columns(conn, "server_metrics", list(part), [part], batch_rows=30) == (n, 0)
        assert load_columns(conn, "server_metrics", list(part), [part, part], batch_rows=150) == (0, 2 * n)
    got = db.execute("select collected_at, cpu_percent, memory_used_bytes from metrics.server_metrics "
                     "where server_id = %s order by collected_at", (servers["web-2"],)).fetchall()
    assert got == [(T0 + timedelta(seconds=30 * i), None if i % 10 == 0 else i / 4, i * 4096 + 5) for i in range(n)]
    assert db.execute("select sum(memory_used_kib), sum(memory_used_rem) from metrics.server_samples").fetchone() \
        == (sum(i * 4 for i in range(n)), 5 * n)
