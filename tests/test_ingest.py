"""rmp ingest against a real engine: exact counts, values, quarantine, reloads, killed loads."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ingest.cli import ingest as ingest_cmd
from ingest.errors import IngestFileError
from ingest.loader import BatchWriter, load_file
from ingest.quarantine import quarantine_path

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HEADER = ["server", "collected_at", "cpu_percent", "memory_used_bytes", "disk_read_bytes"]


@pytest.fixture
def fleet(db):
    """Organization acme with servers web-1 and web-2; returns their ids."""
    org = db.execute("insert into tenancy.organizations (name, slug) values ('Acme', 'acme') returning id").fetchone()[0]
    ids = {}
    for name in ("web-1", "web-2"):
        ids[name] = db.execute(
            "insert into tenancy.servers (organization_id, name) values (%s, %s) returning id", (org, name)
        ).fetchone()[0]
    return ids


def count(db, table="metrics.server_metrics") -> int:
    return db.execute(f"select count(*) from {table}").fetchone()[0]


def test_csv_load_exact_values(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "m.csv"
    p.write_text(
        "server_id,collected_at,cpu_percent,memory_used_bytes,disk_read_bytes\n"
        f"{fleet['web-1']},2024-01-01T00:00:00Z,12.5,1000,0\n"
        f"{fleet['web-1']},2024-01-01T01:00:30+01:00,99.75,2000,512\n"
        f"{fleet['web-2']},2024-01-01T00:00:00+00:00,0,3000,\n"
    )
    r = load_file(p, migrated_url)
    assert (r.rows, r.loaded, r.duplicates, r.rejected) == (3, 3, 0, 0)
    assert r.quarantine is None and not quarantine_path(p).exists()
    rows = db.execute(
        "select server_id, collected_at, cpu_percent, memory_used_bytes, disk_read_bytes, memory_percent "
        "from metrics.server_metrics order by server_id, collected_at"
    ).fetchall()
    assert rows == [
        (fleet["web-1"], T0, 12.5, 1000, 0, None),
        (fleet["web-1"], T0 + timedelta(seconds=30), 99.75, 2000, 512, None),
        (fleet["web-2"], T0, 0.0, 3000, None, None),
    ]


def test_ndjson_load_by_server_name_and_organization(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "m.ndjson"
    lines = [
        {"organization": "acme", "server": "web-2", "collected_at": "2024-01-01T00:00:00Z", "cpu_percent": 1.5},
        {"server": "web-1", "collected_at": "2024-01-01T00:00:30Z", "cpu_percent": 2, "network_rx_bytes": 7},
        {"server": "web-1", "collected_at": "2024-01-01T00:01:00Z", "load_1m": 0.25},
    ]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = load_file(p, migrated_url)
    assert (r.table, r.loaded, r.rejected) == ("metrics.server_metrics", 3, 0)
    rows = db.execute(
        "select server_id, collected_at, cpu_percent, network_rx_bytes, load_1m "
        "from metrics.server_metrics order by collected_at"
    ).fetchall()
    assert rows == [
        (fleet["web-2"], T0, 1.5, None, None),
        (fleet["web-1"], T0 + timedelta(seconds=30), 2.0, 7, None),
        (fleet["web-1"], T0 + timedelta(seconds=60), None, None, 0.25),
    ]


def test_parquet_load_streams_row_groups(db, fleet, tmp_path, migrated_url):
    n = 25_000   # more than one Parquet batch and more than one load batch
    stamps = [T0 + timedelta(seconds=30 * i) for i in range(n)]
    table = pa.table({
        "server_id": pa.array([fleet["web-1"]] * n, pa.int64()),
        "collected_at": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        "cpu_percent": pa.array([i % 100 + 0.5 for i in range(n)], pa.float64()),
        "containers_running": pa.array([i % 7 for i in range(n)], pa.int32()),
    })
    p = tmp_path / "m.parquet"
    pq.write_table(table, p, row_group_size=4_000)
    r = load_file(p, migrated_url, batch_rows=10_000)
    assert (r.loaded, r.rejected, r.batches) == (n, 0, 3)
    got = db.execute(
        "select count(*), sum(cpu_percent), sum(containers_running), min(collected_at), max(collected_at) "
        "from metrics.server_metrics"
    ).fetchone()
    assert got == (n, sum(i % 100 + 0.5 for i in range(n)), sum(i % 7 for i in range(n)), stamps[0], stamps[-1])


def test_parquet_naive_timestamps_need_assume_utc(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "naive.parquet"
    pq.write_table(pa.table({
        "server_id": pa.array([fleet["web-1"]] * 2, pa.int64()),
        "collected_at": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 1, 0, 0, 30)], pa.timestamp("s")),
        "cpu_percent": [1.0, 2.0],
    }), p)
    r = load_file(p, migrated_url)
    assert (r.loaded, r.rejected) == (0, 2)
    assert [(x.line, x.field) for x in r.rejections] == [(1, "collected_at"), (2, "collected_at")]
    r = load_file(p, migrated_url, assume_utc=True)
    assert (r.loaded, r.rejected) == (2, 0)
    assert db.execute("select min(collected_at) from metrics.server_metrics").fetchone()[0] == T0


def _ten_broken_in_10000(path, fleet) -> dict[int, str]:
    """10,000 data rows (lines 2..10001); returns line -> field of the 10 broken ones."""
    broken = {
        101: ("cpu_percent", lambda r: r.__setitem__(2, "12,5x")),            # bad number
        1002: ("cpu_percent", lambda r: r.__setitem__(2, "150")),             # percent 150
        2003: ("server", lambda r: r.__setitem__(0, "db-9")),                 # unknown server
        3004: ("collected_at", lambda r: r.__setitem__(1, "")),               # missing field
        4005: ("collected_at", lambda r: r.__setitem__(1, "2024-01-01T10:00:00")),  # naive timestamp
        5006: ("-", lambda r: r.append("7")),                                 # wrong column count
        6007: ("-", None),                                                    # empty line
        7008: ("memory_used_bytes", lambda r: r.__setitem__(3, "-5")),       # negative bytes
        8009: ("collected_at", lambda r: r.__setitem__(1, "yesterday")),      # not a timestamp
        9010: ("disk_read_bytes", lambda r: r.__setitem__(4, "1.5")),        # fractional count
    }
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        for i in range(10_000):
            line = i + 2
            server = "web-1" if i % 2 else "web-2"
            row = [server, (T0 + timedelta(seconds=30 * i)).isoformat(), f"{i % 100}.25", str(1000 + i), str(i)]
            if line in broken:
                mutate = broken[line][1]
                if mutate is None:
                    fh.write("\n")
                    continue
                mutate(row)
            w.writerow(row)
    return {line: field for line, (field, _) in broken.items()}


def test_ten_broken_rows_among_10000_are_quarantined_with_line_numbers(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "broken.csv"
    expected = _ten_broken_in_10000(p, fleet)
    result = CliRunner().invoke(ingest_cmd, [str(p), "--quiet"], env={"DATABASE_URL": migrated_url})
    assert result.exit_code == 1, result.output
    assert "9,990 loaded, 0 duplicates skipped, 10 rejected" in result.output
    assert count(db) == 9_990
    # the good rows are exactly the others: sum of memory_used_bytes over the good lines
    good_mem = sum(1000 + (line - 2) for line in range(2, 10_002) if line not in expected)
    assert db.execute("select sum(memory_used_bytes) from metrics.server_metrics").fetchone()[0] == good_mem

    with open(quarantine_path(p), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["line"]), r["field"]) for r in rows] == sorted(expected.items())
    assert all(r["file"] == str(p) for r in rows)
    by_line = {int(r["line"]): r for r in rows}
    assert by_line[1002]["reason"] == "percent out of range 0-100: 150.0"
    assert by_line[2003]["reason"] == "unknown server 'db-9'"
    assert by_line[3004]["reason"] == "missing value"
    assert by_line[4005]["reason"].startswith("timestamp has no time zone")
    assert by_line[5006]["reason"] == "expected 5 fields, found 6"
    assert by_line[6007]["reason"] == "empty line" and by_line[6007]["raw"] == ""
    assert by_line[101]["raw"] == f"web-1,{(T0 + timedelta(seconds=30 * 99)).isoformat()},\"12,5x\",1099,99"

    table = db.execute(
        "select line_number, field, source_file, target_table from metrics.rejected_rows order by line_number"
    ).fetchall()
    assert table == [(line, field, str(p.resolve()), "metrics.server_metrics")
                     for line, field in sorted(expected.items())]


def test_reload_adds_no_rows(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "broken.csv"
    _ten_broken_in_10000(p, fleet)
    first = load_file(p, migrated_url, batch_rows=3_000)
    second = load_file(p, migrated_url, batch_rows=3_000)
    assert (first.loaded, first.duplicates, first.rejected) == (9_990, 0, 10)
    assert (second.loaded, second.duplicates, second.rejected) == (0, 9_990, 10)
    assert count(db) == 9_990
    assert count(db, "metrics.rejected_rows") == 10   # rejections are recorded once, too


def test_killed_load_leaves_whole_batches_and_rerun_completes(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "broken.csv"
    _ten_broken_in_10000(p, fleet)
    batches = []

    def die_after_three(b):
        batches.append(b)
        if len(batches) == 3:
            raise KeyboardInterrupt   # as if the operator pressed Ctrl-C between batches

    with pytest.raises(KeyboardInterrupt):
        load_file(p, migrated_url, batch_rows=1_000, on_batch=die_after_three)
    # lines 2..3001 hold broken lines 101, 1002 and 2003: 2,997 good rows committed
    assert sum(b.loaded for b in batches) == 2_997
    assert count(db) == 2_997
    r = load_file(p, migrated_url, batch_rows=1_000)
    assert (r.loaded, r.duplicates) == (9_990 - 2_997, 2_997)
    assert count(db) == 9_990


def test_failure_inside_a_batch_rolls_the_batch_back(db, fleet, tmp_path, migrated_url, monkeypatch):
    p = tmp_path / "broken.csv"
    _ten_broken_in_10000(p, fleet)
    original = BatchWriter.write
    calls = {"n": 0}

    def crash_on_fourth(self, rows):
        calls["n"] += 1
        inserted = original(self, rows)          # rows are in the hypertable, not yet committed
        if calls["n"] == 4:
            raise ConnectionError("simulated crash before commit")
        return inserted

    monkeypatch.setattr(BatchWriter, "write", crash_on_fourth)
    with pytest.raises(ConnectionError):
        load_file(p, migrated_url, batch_rows=2_500)
    assert count(db) == 3 * 2_500 - 8     # three whole batches: lines 2..7501 minus 8 broken ones
    monkeypatch.setattr(BatchWriter, "write", original)
    r = load_file(p, migrated_url, batch_rows=2_500)
    assert r.loaded == 2_500 - 2 and count(db) == 9_990


def test_metric_samples_by_type_name_with_labels(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "gpu.csv"
    p.write_text(
        "server,metric_type,collected_at,value,labels\n"
        'web-1,gpu_utilization,2024-01-01T00:00:00Z,87.5,"{""gpu"": ""0""}"\n'
        "web-1,gpu_temperature,2024-01-01T00:00:00Z,71,\n"
        "web-1,no_such_metric,2024-01-01T00:00:00Z,1,\n"
    )
    r = load_file(p, migrated_url)
    assert (r.table, r.loaded, r.rejected) == ("metrics.metric_samples", 2, 1)
    assert (r.rejections[0].line, r.rejections[0].field) == (4, "metric_type")
    rows = db.execute(
        "select t.name, s.value, s.labels from metrics.metric_samples s "
        "join metrics.metric_types t on t.id = s.metric_type_id order by t.name"
    ).fetchall()
    assert rows == [("gpu_temperature", 71.0, {}), ("gpu_utilization", 87.5, {"gpu": "0"})]


def test_site_usage_detected_and_loaded(db, fleet, tmp_path, migrated_url):
    org = db.execute("select id from tenancy.organizations where slug = 'acme'").fetchone()[0]
    site = db.execute(
        "insert into tenancy.sites (organization_id, server_id, name) values (%s, %s, 'shop') returning id",
        (org, fleet["web-1"]),
    ).fetchone()[0]
    p = tmp_path / "sites.csv"
    p.write_text(
        "site,collected_at,memory_used_mb,cpu_percent,requests,response_time_ms,is_up\n"
        "shop,2024-01-01T00:00:00Z,512.5,3.5,1200,85.25,true\n"
        "shop,2024-01-01T00:05:00Z,500,2,0,,false\n"
        "shop,2024-01-01T00:10:00Z,500,2,10,1,\n"
    )
    r = load_file(p, migrated_url)
    assert (r.table, r.loaded, r.rejected) == ("metrics.site_usage", 3, 0)
    rows = db.execute(
        "select site_id, memory_used_mb, requests, response_time_ms, is_up from metrics.site_usage order by collected_at"
    ).fetchall()
    # is_up left empty takes the column default (true)
    assert rows == [(site, 512.5, 1200, 85.25, True), (site, 500.0, 0, None, False), (site, 500.0, 10, 1.0, True)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty file"),
        ("blank.csv", "\n", "line 1: empty header"),
        ("odd.csv", "server,collected_at,cpu_percent,colour\nweb-1,2024-01-01T00:00:00Z,1,red\n",
         "unknown column(s) for metrics.server_metrics: colour"),
        ("what.csv", "a,b\n1,2\n", "cannot tell the target table from the header"),
        ("data.xml", "<x/>", "unknown format '.xml'"),
        ("nothing.ndjson", "\n\n", "no JSON object found"),
    ],
)
def test_unloadable_files_give_one_line_errors(db, fleet, tmp_path, migrated_url, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(IngestFileError) as info:
        load_file(p, migrated_url)
    assert str(info.value).startswith(f"{p}: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    assert count(db) == 0


def test_cli_reports_unloadable_file_and_loads_the_others(db, fleet, tmp_path, migrated_url):
    good = tmp_path / "good.csv"
    good.write_text("server,collected_at,cpu_percent\nweb-1,2024-01-01T00:00:00Z,5\n")
    result = CliRunner().invoke(ingest_cmd, [str(tmp_path / "missing.csv"), str(good), "-q"],
                                env={"DATABASE_URL": migrated_url})
    assert result.exit_code == 2
    assert f"rmp: error: {tmp_path / 'missing.csv'}: no such file" in result.output
    assert "Traceback" not in result.output
    assert count(db) == 1


def test_assume_utc_reads_naive_csv_timestamps(db, fleet, tmp_path, migrated_url):
    p = tmp_path / "naive.csv"
    p.write_text("server,collected_at,cpu_percent\nweb-1,2024-01-01 00:00:30,5\n")
    assert load_file(p, migrated_url).rejected == 1
    r = load_file(p, migrated_url, assume_utc=True)
    assert r.loaded == 1
    assert db.execute("select collected_at from metrics.server_metrics").fetchone()[0] == T0 + timedelta(seconds=30)
