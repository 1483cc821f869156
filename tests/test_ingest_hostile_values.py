"""Values the validator used to let through and the database could not hold, rows the
database refuses for a reason nobody foresaw, and quarantine cells a spreadsheet would
run: each bad row is quarantined with its line, field and reason, every good row loads
once, the exit code is 1."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from ingest.cli import ingest as ingest_cmd
from ingest.loader import load_file
from ingest.quarantine import quarantine_path

HEADER = "server,collected_at,cpu_percent,cpu_cores,memory_used_bytes,disk_read_bytes,load_1m"


@pytest.fixture
def servers(db):
    org = db.execute("insert into tenancy.organizations (name, slug) values ('Acme', 'acme') returning id").fetchone()[0]
    return {name: db.execute("insert into tenancy.servers (organization_id, name) values (%s, %s) returning id",
                             (org, name)).fetchone()[0] for name in ("web-1", "web-2")}


def _stamp(i: int) -> str:
    return f"2024-01-01T{i // 120:02d}:{i // 2 % 60:02d}:{i % 2 * 30:02d}Z"


def _write(path, bad: dict[int, str], quoted: bool) -> int:
    """1,000 rows; ``bad`` maps a row index to its line's replacement tail. Returns the good count."""
    with open(path, "w") as fh:
        fh.write(HEADER + "\n")
        for i in range(1000):
            name = '"web-1"' if quoted and i == 0 else "web-1"
            tail = bad.get(i, f"{i % 100}.5,8,{1000 + i},{i},0.25")
            fh.write(f"{name},{_stamp(i)},{tail}\n")
    return 1000 - len(bad)


OVERFLOWS = {
    10: ("1.5,3000000000,1,1,0.25", "cpu_cores", "out of range for integer: 3000000000"),
    20: ("1.5,8,1e30,1,0.25", "memory_used_bytes", "out of range for bigint: " + str(int(1e30))),
    30: ("1.5,8,1,99999999999999999999,0.25", "disk_read_bytes",
         "out of range for bigint: 99999999999999999999"),
    40: ("1.5,-2147483649,1,1,0.25", "cpu_cores", "out of range for integer: -2147483649"),
    50: ("1.5,8,1,1,1e400", "load_1m", "expected a finite number, found '1e400'"),
}


@pytest.mark.parametrize("quoted", [False, True], ids=["fast-path", "general-path"])
def test_values_the_column_type_cannot_hold_are_quarantined(db, servers, tmp_path, migrated_url, quoted):
    p = tmp_path / "overflow.csv"
    good = _write(p, {i: tail for i, (tail, _, _) in OVERFLOWS.items()}, quoted)
    result = CliRunner().invoke(ingest_cmd, [str(p), "-q"], env={"DATABASE_URL": migrated_url})
    assert result.exit_code == 1, result.output
    assert f"{good:,} loaded, 0 duplicates skipped, {len(OVERFLOWS)} rejected" in result.output
    assert "Traceback" not in result.output
    with open(quarantine_path(p), newline="") as fh:
        got = [(int(r["line"]), r["field"], r["reason"]) for r in csv.DictReader(fh)]
    assert got == [(i + 2, field, reason) for i, (_, field, reason) in sorted(OVERFLOWS.items())]
    assert db.execute("select count(*), sum(memory_used_bytes) from metrics.server_metrics").fetchone() == (
        good, sum(1000 + i for i in range(1000) if i not in OVERFLOWS))
    # a reload adds nothing and records the rejections once
    again = load_file(p, migrated_url)
    assert (again.loaded, again.duplicates, again.rejected) == (0, good, len(OVERFLOWS))
    assert db.execute("select count(*) from metrics.rejected_rows").fetchone()[0] == len(OVERFLOWS)


def test_ndjson_overflow_is_quarantined(db, servers, tmp_path, migrated_url):
    p = tmp_path / "overflow.ndjson"
    rows = [{"server": "web-1", "collected_at": _stamp(i), "cpu_cores": 4, "memory_used_bytes": 10} for i in range(4)]
    rows[1]["cpu_cores"] = 2**40
    rows[2]["memory_used_bytes"] = 2**70
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = load_file(p, migrated_url)
    assert (r.loaded, r.rejected) == (2, 2)
    assert [(x.line, x.field, x.reason) for x in r.rejections] == [
        (2, "cpu_cores", f"out of range for integer: {2**40}"),
        (3, "memory_used_bytes", f"out of range for bigint: {2**70}"),
    ]


def test_labels_jsonb_cannot_store_are_quarantined(db, servers, tmp_path, migrated_url):
    p = tmp_path / "labels.csv"
    labels = [
        ('{"gpu": "0"}', None),
        ('{"gpu": "\\u0000"}', "JSON contains \\u0000, which jsonb cannot store"),
        ('{"gpu": NaN}', "JSON contains NaN, which jsonb cannot store"),
        ('{"gpu": 1e400}', "JSON that jsonb cannot store: Out of range float values are not JSON compliant"),
        ('{"g\\u0000pu": 1}', "JSON contains \\u0000, which jsonb cannot store"),
        ('{"gpu": "\\ud800"}', None),   # a lone surrogate: refused below
        ('{"gpu": "1"}', None),
    ]
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["server", "metric_type", "collected_at", "value", "labels"])
        for i, (text, _) in enumerate(labels):
            w.writerow(["web-1", "gpu_utilization", _stamp(i), 50, text])
    r = load_file(p, migrated_url)
    assert (r.loaded, r.rejected) == (2, 5)
    got = {x.line: (x.field, x.reason) for x in r.rejections}
    for i, (_, reason) in enumerate(labels):
        if reason:
            assert got[i + 2] == ("labels", reason)
    assert got[7][0] == "labels" and got[7][1].startswith("JSON that jsonb cannot store: ")
    assert db.execute("select labels from metrics.metric_samples order by collected_at").fetchall() == [
        ({"gpu": "0"},), ({"gpu": "1"},)]


@pytest.mark.parametrize("quoted", [False, True], ids=["fast-path", "general-path"])
def test_a_batch_the_database_refuses_is_bisected_to_the_offending_rows(db, servers, tmp_path, migrated_url,
                                                                       quoted):
    # a rule the loader knows nothing about: the database is the only one to refuse these rows
    # (on the table that holds the rows: server_samples from revision 0012 on, cpu_cores kept as is)
    table = "metrics.server_samples" if db.execute(
        "select to_regclass('metrics.server_samples') is not null").fetchone()[0] else "metrics.server_metrics"
    db.execute(f"alter table {table} add constraint test_no_cores_42 check (cpu_cores <> 42)")
    try:
        p = tmp_path / "refused.csv"
        bad = {i: f"1.5,42,{1000 + i},1,0.25" for i in (3, 517, 518, 999)}
        good = _write(p, bad, quoted)
        result = CliRunner().invoke(ingest_cmd, [str(p), "-q", "--batch-rows", "400"],
                                    env={"DATABASE_URL": migrated_url})
        assert result.exit_code == 1, result.output
        assert f"{good:,} loaded, 0 duplicates skipped, 4 rejected" in result.output
        assert db.execute("select count(*), count(*) filter (where cpu_cores = 42) "
                          "from metrics.server_metrics").fetchone() == (good, 0)
        rows = db.execute("select line_number, field, reason from metrics.rejected_rows "
                          "order by line_number").fetchall()
        assert [(line, field) for line, field, _ in rows] == [(i + 2, "cpu_cores") for i in sorted(bad)]
        assert all(reason.startswith("refused by the database: ") and "test_no_cores_42" in reason
                   for _, _, reason in rows)
        # a reload: the good rows are duplicates, the refused ones are refused again (recorded once)
        r = load_file(p, migrated_url, batch_rows=400)
        assert (r.loaded, r.duplicates, r.rejected) == (0, good, 4)
        assert db.execute("select count(*) from metrics.rejected_rows").fetchone()[0] == 4
    finally:
        db.execute(f"alter table {table} drop constraint test_no_cores_42")


def test_quarantine_cells_cannot_run_as_spreadsheet_formulas(db, servers, tmp_path, migrated_url):
    p = tmp_path / "formulas.csv"
    hostile = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\tTAB"]
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["server", "collected_at", "cpu_percent"])
        w.writerow(["web-1", _stamp(0), 5])
        for i, name in enumerate(hostile, 1):
            w.writerow([name, _stamp(i), 5])
        w.writerow(["web-1", _stamp(9), "=1+1"])
    r = load_file(p, migrated_url)
    assert (r.loaded, r.rejected) == (1, len(hostile) + 1)
    with open(quarantine_path(p), newline="") as fh:
        cells = list(csv.DictReader(fh))
    for row in cells:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    lines = _raw_lines(p)
    assert [c["raw"] for c in cells] == [("'" + x if x.startswith(("=", "+", "-", "@", "\t")) else x)
                                         for x in lines[1:]]
    assert [c["raw"][:2] for c in cells] == ['"=', "'+", "'-", "'@", "'\t", "we"]
    assert cells[-1]["reason"] == "expected a number, found '=1+1'"
    # the table keeps the exact text
    raw = [x[0] for x in db.execute("select raw_line from metrics.rejected_rows order by line_number")]
    assert raw == _raw_lines(p)[1:]


def _raw_lines(p) -> list[str]:
    return [line.rstrip("\r\n") for line in open(p, newline="")][1:]


def test_ingest_help_documents_the_exit_codes():
    result = CliRunner().invoke(ingest_cmd, ["--help"])
    text = " ".join(result.output.split())
    assert "Exit codes: 0 every row loaded" in text
    assert "1 some rows rejected" in text and "2 the run could not complete" in text
    assert "--jobs" in text


def test_jobs_split_a_large_csv_into_ranges_with_the_same_outcome(db, servers, tmp_path, migrated_url, monkeypatch):
    import ingest.fastcsv
    from ingest.parallel import plan

    monkeypatch.setattr(ingest.fastcsv, "MIN_PART_BYTES", 1_000)
    p = tmp_path / "big.csv"
    bad = {5: "x,8,1,1,0.25", 700: "1.5,3000000000,1,1,0.25", 999: "1.5,8,1"}
    good = _write(p, bad, quoted=False)
    units = plan([p], 2, None)
    assert len(units) == 2 and units[0].byte_range[1] == units[1].byte_range[0]
    # the second range starts on a line boundary and knows its first line's number
    head = p.read_bytes()[:units[1].byte_range[0]]
    assert head.endswith(b"\n") and units[1].byte_range[2] == head.count(b"\n") + 1
    result = CliRunner().invoke(ingest_cmd, [str(p), "-q", "--jobs", "2", "--batch-rows", "128"],
                                env={"DATABASE_URL": migrated_url})
    assert result.exit_code == 1, result.output
    assert f"{good:,} loaded, 0 duplicates skipped, 3 rejected" in result.output
    with open(quarantine_path(p), newline="") as fh:
        assert [(int(r["line"]), r["field"]) for r in csv.DictReader(fh)] == [
            (7, "cpu_percent"), (702, "cpu_cores"), (1001, "-")]
    assert db.execute("select count(*), sum(memory_used_bytes) from metrics.server_metrics").fetchone() == (
        good, sum(1000 + i for i in range(1000) if i not in bad))
    again = CliRunner().invoke(ingest_cmd, [str(p), "-q", "--jobs", "2"], env={"DATABASE_URL": migrated_url})
    assert f"0 loaded, {good:,} duplicates skipped, 3 rejected" in again.output
    assert db.execute("select count(*) from metrics.rejected_rows").fetchone()[0] == 3
