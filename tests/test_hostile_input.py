"""Hostile names and fields through the CLI and the loader: stored literally or
refused with one line, and no statement other than the intended one runs
(the tables are all still there with the rows they had)."""

from __future__ import annotations

import csv

import psycopg
import pytest

from rmp import identifiers, queries
from rmp_app.cli import main

INJECTION = "'); drop table tenancy.servers; --"
HOSTILE_NAMES = [
    INJECTION,
    "O'Brien \"quoted\" name",
    "semi;colon;separated",
    "Ünïcödé 服务器 🚀 ﷽",
    "back\\slash\ttab $$dollar$$ %s %(x)s :name",
    "x" * 10_000,
]
TENANCY_TABLES = ("organizations", "users", "memberships", "servers", "sites", "applications", "databases",
                  "deployments", "licences", "organization_settings", "tenant_grants", "audit_log")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def assert_intact(conn: psycopg.Connection, servers: int) -> None:
    for table in TENANCY_TABLES:
        assert conn.execute("select to_regclass(%s)", (f"tenancy.{table}",)).fetchone()[0] is not None, table
    assert conn.execute("select count(*) from tenancy.servers").fetchone()[0] == servers


@pytest.fixture
def hostile_fleet(db):
    """One organization whose servers carry the hostile names; returns {name: id}."""
    org = db.execute("insert into tenancy.organizations (name, slug) values (%s, 'hostile') returning id",
                     (INJECTION,)).fetchone()[0]
    ids = {}
    for name in HOSTILE_NAMES:
        ids[name] = db.execute("insert into tenancy.servers (organization_id, name) values (%s, %s) returning id",
                               (org, name)).fetchone()[0]
    return ids


def test_hostile_server_names_and_fields_through_rmp_ingest(hostile_fleet, db, migrated_url, tmp_path,
                                                           monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    path = tmp_path / "hostile.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["server", "organization", "collected_at", "cpu_percent"])
        for i, name in enumerate(HOSTILE_NAMES):
            w.writerow([name, "hostile", "2025-03-01T00:00:00+00:00", i])            # lines 2..7
        w.writerow(["nul\x00byte", "hostile", "2025-03-01T00:00:00+00:00", 1])       # line 8
        w.writerow([HOSTILE_NAMES[0], "hostile", "2025-03-01T00:00:30+00:00", "1); drop table tenancy.servers; --"])
        # the organization's *name* is the injection text: it resolves, literally
        w.writerow([HOSTILE_NAMES[1], INJECTION, "2025-03-01T00:00:30+00:00", 5])    # line 10
    code, out, err = run_cli(["ingest", str(path), "-q"], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"{path}: 7 loaded, 0 duplicates skipped, 2 rejected into metrics.server_metrics"
        + out.split("metrics.server_metrics", 1)[1].splitlines()[0]]
    stored = db.execute(
        "select s.id, s.name, m.cpu_percent from metrics.server_metrics m join tenancy.servers s on s.id = m.server_id"
        " order by 1, 3").fetchall()
    expected = [(hostile_fleet[name], name, float(i)) for i, name in enumerate(HOSTILE_NAMES)]
    expected.insert(2, (hostile_fleet[HOSTILE_NAMES[1]], HOSTILE_NAMES[1], 5.0))
    assert stored == expected
    rejected = db.execute("select line_number, field, reason, raw_line from metrics.rejected_rows "
                          "order by line_number").fetchall()
    assert [(r[0], r[1]) for r in rejected] == [(8, "server"), (9, "cpu_percent")]
    assert rejected[0][2] == "unknown server 'nul\\x00byte' in organization 'hostile'"
    assert rejected[0][3] == "nul\\0byte,hostile,2025-03-01T00:00:00+00:00,1"   # NUL kept visible, not dropped
    assert rejected[1][2] == "expected a number, found '1); drop table tenancy.servers; --'"
    assert_intact(db, len(HOSTILE_NAMES))
    assert (tmp_path / "hostile.csv.rejected.csv").exists()


def test_hostile_names_through_rmp_tenant_are_refused_in_one_line(hostile_fleet, db, migrated_url,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    db.execute("drop role if exists hostile_login")
    db.execute("create role hostile_login login")
    try:
        cases = [
            (["tenant", "grant", "hostile", INJECTION],
             "rmp: error: login name \"'); drop table tenancy.servers; --\": use lowercase letters, digits and "
             "_ . @ - (starting with a letter or _)"),
            (["tenant", "grant", "hostile", "a" * 10_000],
             f"rmp: error: login name '{'a' * 40}...' is longer than 63 bytes"),
            (["tenant", "grant", "hostile", "Ünïcödé"],
             "rmp: error: login name 'Ünïcödé': use lowercase letters, digits and _ . @ - (starting with a letter "
             "or _)"),
            (["tenant", "grant", "x\x01;drop", "hostile_login"],
             "rmp: error: no organization 'x\\x01;drop' (give its slug, name or id)"),
            (["tenant", "grant", "o" * 10_000, "hostile_login"],
             "rmp: error: organization is 10,000 characters long (at most 1,000)"),
            (["tenant", "revoke", "hostile", "bad;login"],
             "rmp: error: login name 'bad;login': use lowercase letters, digits and _ . @ - (starting with a letter "
             "or _)"),
        ]
        for argv, message in cases:
            code, out, err = run_cli(argv, capsys)
            assert (code, out, err) == (2, "", message + "\n"), argv
        # the organization's name *is* the injection text: found literally, granted
        code, out, err = run_cli(["tenant", "grant", INJECTION, "hostile_login"], capsys)
        assert (code, err) == (0, "")
        org_id = db.execute("select id from tenancy.organizations where slug = 'hostile'").fetchone()[0]
        assert out == f"hostile_login: granted organization hostile (id {org_id}) and its sub-organizations\n"
        assert db.execute("select login from tenancy.tenant_grants").fetchall() == [("hostile_login",)]
        assert_intact(db, len(HOSTILE_NAMES))
    finally:
        db.execute("delete from tenancy.tenant_grants")
        db.execute("drop owned by hostile_login")
        db.execute("drop role hostile_login")


@pytest.mark.parametrize("name", [INJECTION, "Ünïcödé 服务器 🚀", "q'uote\"d;"])
def test_hostile_server_name_through_rmp_collect_is_stored_literally(db, migrated_url, monkeypatch, capsys, name):
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    code, out, err = run_cli(["collect", "--organization", "hostile", "--name", name, "--count", "1",
                              "--interval", "0.05"], capsys)
    assert code == 0
    assert out == "1 sample(s) written, 0 still buffered, 0 dropped\n"
    assert db.execute("select s.name, count(m.*) from tenancy.servers s "
                      "join metrics.server_metrics m on m.server_id = s.id group by 1").fetchall() == [(name, 1)]
    assert_intact(db, 1)


def test_hostile_organization_slug_through_rmp_collect_is_refused(db, migrated_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    code, out, err = run_cli(["collect", "--organization", INJECTION, "--count", "1"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == "Error: Invalid value for --organization: use lowercase letters, " \
                                          "digits and dashes"
    assert_intact(db, 0)


def test_query_names_cannot_reach_other_sql_files(db):
    with pytest.raises(queries.QueryError, match=r"^no query '\.\./preinstall/001-tenancy' in "):
        queries.run(db, "../preinstall/001-tenancy")
    assert_intact(db, 0)


def test_export_names_come_only_from_the_catalog_allow_list(db):
    from analytics.export import ExportError, fetch

    for bad in ("marts.org_quota_status; drop table tenancy.servers", "pg_catalog.pg_authid", "tenancy.servers",
                INJECTION, "x" * 10_000):
        with pytest.raises(ExportError, match="^cannot export "):
            fetch(db, bad)
    columns, rows = fetch(db, "anomalies")
    assert rows == [] and columns[:2] == ["id", "server_id"]
    assert_intact(db, 0)


def test_login_names_are_checked():
    assert identifiers.check_login("a" * 63) == "a" * 63
    with pytest.raises(identifiers.IdentifierError, match="longer than 63 bytes"):
        identifiers.check_login("a" * 64)
    with pytest.raises(identifiers.IdentifierError, match="longer than 63 bytes"):
        identifiers.check_login("é" * 32)   # 64 bytes: PostgreSQL would truncate it to another name
