"""The embedded server keeps each login to its own rights and each client to its own state.

The engine under the server is one superuser WebAssembly session; these tests
try, as a hostile local login would, every known way to act as that superuser
(issue 12.1) or to touch another client's prepared statements (12.5), and
check that the login still acts as itself afterwards. Client-visible
behaviour that a PostgreSQL server defines (reported settings, RESET values,
error codes) is also checked on the native engine (PostgreSQL 15 +
TimescaleDB) when it is installed: the native server is the reference.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import struct
import time

import psycopg
import pytest
from psycopg import errors

from rmp.embedded import EmbeddedServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedServer(tmp_path_factory.mktemp("embedded-security"), job_interval=0.5) as srv:
        yield srv


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def make_login(url: str, role: str, *extra: str) -> str:
    with psycopg.connect(url, autocommit=True) as admin:
        exists = admin.execute("select 1 from pg_roles where rolname = %s", [role]).fetchone()
        if exists is None:
            admin.execute(f'create role "{role}" login {" ".join(extra)}')
        else:
            admin.execute(f'alter role "{role}" login nosuperuser {" ".join(extra)}')
    return as_role(url, role)


def identity(conn) -> tuple:
    return conn.execute("select session_user, current_user, current_setting('is_superuser')").fetchone()


def start_time(url: str):
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("select pg_postmaster_start_time()").fetchone()[0]


# ------------------------------------------------------------ role escapes --


@pytest.mark.parametrize("options", [
    "-csession_authorization=postgres",
    "-c role=postgres",
    "-c allow_system_table_mods=on",
])
@pytest.mark.embedded_only
def test_startup_packet_cannot_carry_identity(server, options):
    url = make_login(server.url, "esc_startup")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, options=options)
    with psycopg.connect(url, autocommit=True) as c:
        assert identity(c) == ("esc_startup", "esc_startup", "off")


@pytest.mark.embedded_only
def test_startup_settings_are_applied_and_checked(server):
    url = make_login(server.url, "esc_startup_ok")
    with psycopg.connect(url, autocommit=True, options="-c work_mem=8MB -c search_path=pg_catalog") as c:
        assert c.execute("select current_setting('work_mem'), current_setting('search_path')").fetchone() == (
            "8MB", "pg_catalog")
        assert identity(c) == ("esc_startup_ok", "esc_startup_ok", "off")
    with pytest.raises(psycopg.OperationalError, match="DateStyle"):
        psycopg.connect(url, options="-c DateStyle=nonsense")


@pytest.mark.parametrize("escape, sqlstate", [
    ("set session/**/authorization postgres", "42501"),
    ("set session authorization 'postgres'", "42501"),
    ("select set_config('session_'||'authorization', 'postgres', false)", "42501"),
    ("select set_config('session_authorization', 'postgres', false)", "42501"),
    ("create function pg_temp.esc() returns int language sql set session_authorization = postgres as 'select 1'",
     "42501"),
])
@pytest.mark.embedded_only
def test_statement_escapes_are_refused(server, escape, sqlstate):
    url = make_login(server.url, "esc_stmt")
    with psycopg.connect(url, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as info:
            c.execute(escape)
        assert info.value.sqlstate == sqlstate
        assert identity(c) == ("esc_stmt", "esc_stmt", "off")


@pytest.mark.embedded_only
def test_dynamic_sql_escape_ends_the_client(server):
    """Dynamic SQL gets past any reading of the text: the check after the turn ends that client."""
    url = make_login(server.url, "esc_dynamic")
    before = start_time(server.url)
    c = psycopg.connect(url, autocommit=True)
    with pytest.raises(errors.InsufficientPrivilege, match="session authorization"):
        c.execute("do $$begin execute 'set session auth'||'orization postgres'; end$$")
    assert c.broken
    c.close()
    with psycopg.connect(url, autocommit=True) as again:
        assert identity(again) == ("esc_dynamic", "esc_dynamic", "off")
    with psycopg.connect(server.url, autocommit=True) as admin:
        assert identity(admin) == ("postgres", "postgres", "on")
    assert start_time(server.url) == before


@pytest.mark.embedded_only
def test_dynamic_escape_inside_a_transaction_is_rolled_back(server):
    url = make_login(server.url, "esc_dyn_tx")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop table if exists esc_tx_target")
        admin.execute("create table esc_tx_target (x int)")
        admin.execute("grant insert, select on esc_tx_target to esc_dyn_tx")
    c = psycopg.connect(url)
    c.execute("insert into esc_tx_target values (1)")
    with pytest.raises(errors.InsufficientPrivilege):
        c.execute("select set_config(x, 'postgres', false) from (select 'session_' || 'authorization' as x) s")
    c.close()
    with psycopg.connect(server.url, autocommit=True) as admin:
        assert admin.execute("select count(*) from esc_tx_target").fetchone() == (0,)


@pytest.mark.embedded_only
def test_checks_survive_a_dynamic_deallocate_all(server):
    """The server's own prepared SHOWs are prepared again when dynamic SQL drops every statement."""
    url = make_login(server.url, "esc_dealloc")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("do $$begin execute 'deallocate all'; end$$")
    with psycopg.connect(url, autocommit=True) as c:
        assert identity(c) == ("esc_dealloc", "esc_dealloc", "off")
        c.execute("do $$begin execute 'deallocate all'; end$$")
        c.execute("set application_name = 'after'")
        assert c.info.parameter_status("application_name") == "after"
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("do $$begin execute 'deallocate all'; perform set_config(chr(115) || 'ession_authorization', "
                      "'postgres', false); end$$")


@pytest.mark.embedded_only
def test_discard_all_keeps_the_login(server):
    url = make_login(server.url, "esc_discard")
    with psycopg.connect(url, autocommit=True) as c:
        for stmt in ("discard/**/all", "discard all", "reset session authorization",
                     "set session authorization default", "set session authorization esc_discard"):
            c.execute(stmt)
            assert identity(c) == ("esc_discard", "esc_discard", "off")


@pytest.mark.embedded_only
def test_set_role_follows_membership(server):
    url = make_login(server.url, "esc_member")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop role if exists esc_group")
        admin.execute("create role esc_group")
        admin.execute("grant esc_group to esc_member")
    with psycopg.connect(url, autocommit=True) as c:
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("set role postgres")
        c.execute("set role esc_group")
        with psycopg.connect(server.url, autocommit=True) as other:
            other.execute("select 1")  # the session changes hands and back
        assert c.execute("select session_user, current_user").fetchone() == ("esc_member", "esc_group")
        with c.transaction():
            c.execute("set local role none")
            assert c.execute("select current_user").fetchone() == ("esc_member",)
        with psycopg.connect(server.url, autocommit=True) as other:
            other.execute("select 1")
        assert c.execute("select current_user").fetchone() == ("esc_group",)


class RawClient:
    """Just enough of the frontend protocol to send what drivers never do (a function call)."""

    def __init__(self, port: int, user: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        body = b"user\0" + user.encode() + b"\0database\0template1\0\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(body), 196608) + body)
        self.buf = b""
        self.until_ready()

    def recv_message(self) -> tuple[str, bytes]:
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack("!i", self.buf[1:5])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        n = struct.unpack("!i", self.buf[1:5])[0]
        msg, self.buf = self.buf[: 1 + n], self.buf[1 + n:]
        return chr(msg[0]), msg[5:]

    def until_ready(self) -> list[tuple[str, bytes]]:
        out = []
        while True:
            t, body = self.recv_message()
            out.append((t, body))
            if t == "Z":
                return out

    def query(self, sql: str) -> list[tuple[str, bytes]]:
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(data)) + data)
        return self.until_ready()

    def function_call(self, oid: int, *args: str) -> list[tuple[str, bytes]]:
        body = struct.pack("!iHH", oid, 0, len(args))
        for a in args:
            body += struct.pack("!i", len(a.encode())) + a.encode()
        body += struct.pack("!H", 0)
        self.sock.sendall(b"F" + struct.pack("!i", 4 + len(body)) + body)
        return self.until_ready()

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.sendall(b"X\0\0\0\4")
        self.sock.close()


def error_code(messages) -> str | None:
    for t, body in messages:
        if t == "E":
            for field in body.split(b"\0"):
                if field[:1] == b"C":
                    return field[1:].decode()
    return None


def first_value(messages) -> str:
    for t, body in messages:
        if t == "D":
            n = struct.unpack("!i", body[2:6])[0]
            return body[6:6 + n].decode()
    raise AssertionError(f"no row in {messages}")


@pytest.mark.embedded_only
def test_function_call_message_refused_to_non_superusers(server):
    make_login(server.url, "esc_fastpath")
    with psycopg.connect(server.url, autocommit=True) as admin:
        set_config = admin.execute("select 'pg_catalog.set_config'::regproc::oid").fetchone()[0]
        absolute = admin.execute("select 'pg_catalog.abs(integer)'::regprocedure::oid").fetchone()[0]
    raw = RawClient(server.settings.port, "esc_fastpath")
    try:
        assert error_code(raw.function_call(set_config, "session_authorization", "postgres", "false")) == "42501"
        assert first_value(raw.query("select session_user")) == "esc_fastpath"
    finally:
        raw.close()
    su = RawClient(server.settings.port, "postgres")
    try:
        reply = su.function_call(absolute, "-5")
        assert error_code(reply) is None
        assert [b for t, b in reply if t == "V"][0][4:] == b"5"
    finally:
        su.close()


@pytest.mark.embedded_only
def test_copy_where_trick_never_runs_as_superuser(server):
    url = make_login(server.url, "esc_copy")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop table if exists esc_copy_t")
        admin.execute("create table esc_copy_t (a text)")
        admin.execute("grant insert, select on esc_copy_t to esc_copy")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create function pg_temp.f() returns bool language sql as "
                  "$$ select set_config('esc.ran_as', current_user, false) is not null $$")
        with pytest.raises(errors.FeatureNotSupported), c.cursor() as cur, \
                cur.copy("copy esc_copy_t from stdin delimiter E'\\'' where pg_temp.f() --'") as cp:
            cp.write("x\n")
        assert c.execute("select current_setting('esc.ran_as', true)").fetchone() in ((None,), ("",))
        assert identity(c) == ("esc_copy", "esc_copy", "off")
        with c.cursor() as cur, cur.copy("copy esc_copy_t (a) from stdin") as cp:
            cp.write_row(("allowed",))
        assert c.execute("select a from esc_copy_t").fetchall() == [("allowed",)]


@pytest.mark.embedded_only
def test_copy_never_reaches_the_logins_temp_objects(server):
    """A superuser's trigger that names a table unqualified must not reach the login's temp table (and its trigger)."""
    url = make_login(server.url, "esc_copy_path")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop table if exists esc_path_t, esc_path_log")
        admin.execute("create table esc_path_t (a text)")
        admin.execute("create table esc_path_log (a text)")
        admin.execute("create or replace function public.esc_path_audit() returns trigger language plpgsql as "
                      "$$ begin insert into esc_path_log values (new.a); return new; end $$")
        admin.execute("create trigger audit after insert on esc_path_t for each row execute function esc_path_audit()")
        admin.execute("grant insert, select on esc_path_t to esc_copy_path")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create temp table esc_path_log (a text)")
        c.execute("create function pg_temp.grab() returns trigger language plpgsql as "
                  "$$ begin perform set_config('esc.ran_as', current_user, false); return new; end $$")
        c.execute("create trigger grab before insert on pg_temp.esc_path_log for each row execute function pg_temp.grab()")
        c.execute("set search_path = pg_temp, public")
        with c.cursor() as cur, cur.copy("copy esc_path_t (a) from stdin") as cp:
            cp.write_row(("row",))
        assert c.execute("select current_setting('esc.ran_as', true)").fetchone() in ((None,), ("",))
        assert c.execute("select count(*) from pg_temp.esc_path_log").fetchone() == (0,)
        assert c.execute("show search_path").fetchone() == ("pg_temp, public",)
        assert identity(c) == ("esc_copy_path", "esc_copy_path", "off")
    with psycopg.connect(server.url, autocommit=True) as admin:
        assert admin.execute("select a from public.esc_path_log").fetchall() == [("row",)]


@pytest.mark.embedded_only
def test_demoted_role_loses_rights_at_next_login(server):
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop role if exists esc_demoted")
        admin.execute("create role esc_demoted login superuser")
    url = as_role(server.url, "esc_demoted")
    with psycopg.connect(url, autocommit=True) as c:
        assert identity(c) == ("esc_demoted", "esc_demoted", "on")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("alter role esc_demoted nosuperuser")
    with psycopg.connect(url, autocommit=True) as c:
        assert identity(c) == ("esc_demoted", "esc_demoted", "off")
        assert c.info.parameter_status("is_superuser") == "off"
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("set session authorization postgres")
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("alter role esc_demoted nologin")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(url)


@pytest.mark.embedded_only
def test_demoted_role_open_connection_is_checked_again(server):
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop role if exists esc_live")
        admin.execute("create role esc_live login superuser")
    with psycopg.connect(as_role(server.url, "esc_live"), autocommit=True) as c:
        assert identity(c)[2] == "on"
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute("alter role esc_live nosuperuser")
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("set session authorization postgres")
        assert identity(c) == ("esc_live", "esc_live", "off")


# -------------------------------------------- prepared statements (12.5) --


@pytest.mark.embedded_only
def test_multi_statement_queries_keep_statements_apart(server):
    with psycopg.connect(server.url, autocommit=True) as a, psycopg.connect(server.url, autocommit=True) as b:
        a.execute("prepare mine as select 'a'::text")
        real = b.execute("select name from pg_prepared_statements where name like '%mine'").fetchone()[0]
        assert real != "mine"  # namespaced on the shared session
        b.execute("select 1; deallocate all")
        b.execute(f'/**/prepare "{real}" as select \'b\'::text')
        b.execute("select 1; /* hide */ deallocate   prepare all; select 2")
        b.execute("discard all")
        assert a.execute("execute mine").fetchone() == ("a",)
        with pytest.raises(errors.InvalidSqlStatementName, match='prepared statement "gone" does not exist'):
            b.execute("select 1; execute gone")


@pytest.mark.embedded_only
def test_statement_names_in_every_statement(server):
    with psycopg.connect(server.url, autocommit=True) as c:
        c.execute("prepare p1 as select $1::int * 2; prepare p2 as select 'two'")
        assert c.execute("execute p1(21)").fetchone() == (42,)
        cur = c.execute("select 0; execute p2")
        assert cur.fetchone() == (0,)
        assert cur.nextset()
        assert cur.fetchone() == ("two",)
        plan = c.execute("explain execute p1(1)").fetchall()
        assert plan and "Result" in plan[0][0]
        c.execute("create temp table from_exec as execute p1(5)")
        assert c.execute("select * from from_exec").fetchone() == (10,)
        c.execute("deallocate p1; deallocate prepare p2")
        with pytest.raises(errors.InvalidSqlStatementName, match='prepared statement "p1" does not exist'):
            c.execute("execute p1(1)")


# ------------------------------------------- conformance on both engines --


def test_prepare_transaction_is_disabled(engine_url):
    with psycopg.connect(engine_url) as c:
        c.execute("select 1")
        with pytest.raises(errors.ObjectNotInPrerequisiteState, match="prepared transactions are disabled"):
            c.execute("prepare transaction 'x'")
        c.rollback()
        assert c.execute("select 'still here'").fetchone() == ("still here",)


def test_unknown_prepared_statement_keeps_its_name(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as c:
        with pytest.raises(errors.InvalidSqlStatementName) as info:
            c.execute("execute nosuch")
        assert str(info.value).splitlines()[0] == 'prepared statement "nosuch" does not exist'
        c.execute("prepare twice as select 1")
        with pytest.raises(errors.DuplicatePreparedStatement) as info:
            c.execute("prepare twice as select 1")
        assert str(info.value).splitlines()[0] == 'prepared statement "twice" already exists'
        c.execute("deallocate twice")


def test_startup_reports_canonical_values(engine_url):
    with psycopg.connect(engine_url, autocommit=True, client_encoding="utf8", application_name="rmp-test",
                         options="-c DateStyle=sql,dmy") as c:
        ps = c.info.parameter_status
        assert ps("client_encoding") == "UTF8"
        assert ps("server_encoding") == "UTF8"
        assert ps("DateStyle") == "SQL, DMY"
        assert ps("application_name") == "rmp-test"
        assert ps("integer_datetimes") == "on"
        assert ps("standard_conforming_strings") == "on"
        assert ps("is_superuser") == "on"
        assert ps("session_authorization") == "postgres"
        assert ps("IntervalStyle") == "postgres"
        assert ps("in_hot_standby") == "off"
        assert ps("TimeZone") == c.execute("show timezone").fetchone()[0]


def test_startup_values_without_settings_are_the_sessions(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as c:
        for name in ("client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "integer_datetimes",
                     "standard_conforming_strings", "is_superuser", "session_authorization", "application_name",
                     "default_transaction_read_only", "server_encoding", "server_version"):
            assert c.info.parameter_status(name) == c.execute(f"show {name}").fetchone()[0], name


def test_set_and_reset_are_reported(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as c:
        ps = c.info.parameter_status
        c.execute("set datestyle = 'SQL, DMY'")
        assert ps("DateStyle") == "SQL, DMY"
        assert c.execute("select '2024-03-01'::date").fetchone() == (dt.date(2024, 3, 1),)
        c.execute("set datestyle = 'ISO, DMY'")  # psycopg reads timestamps in ISO only
        assert ps("DateStyle") == "ISO, DMY"
        c.execute("set timezone = 'Europe/Rome'")
        assert ps("TimeZone") == "Europe/Rome"
        got = c.execute("select '2024-06-01 12:00:00+00'::timestamptz").fetchone()[0]
        assert got.utcoffset() == dt.timedelta(hours=2)
        c.execute("set intervalstyle = 'iso_8601'")
        assert ps("IntervalStyle") == "iso_8601"
        assert c.execute("select (interval '1 day 2 hours')::text").fetchone() == ("P1DT2H",)
        c.execute("set application_name = 'renamed'")
        assert ps("application_name") == "renamed"
        c.execute("select set_config('application_name', 'by_function', false)")
        assert ps("application_name") == "by_function"
        with c.transaction():
            c.execute("set local datestyle = 'German'")
            assert ps("DateStyle") == "German, DMY"
        assert ps("DateStyle") == "ISO, DMY"
        c.execute("reset all")
        assert (ps("DateStyle"), ps("IntervalStyle"), ps("application_name")) == ("ISO, MDY", "postgres", "")
        assert ps("TimeZone") == c.execute("show timezone").fetchone()[0]


def test_role_changes_are_reported(engine_url):
    url = make_login(engine_url, "rep_login")
    with psycopg.connect(engine_url, autocommit=True) as admin:
        admin.execute("grant pg_read_all_settings to rep_login")
    with psycopg.connect(engine_url, autocommit=True) as c:
        c.execute("set session authorization rep_login")
        assert (c.info.parameter_status("session_authorization"), c.info.parameter_status("is_superuser")) == (
            "rep_login", "off")
        c.execute("reset session authorization")
        assert (c.info.parameter_status("session_authorization"), c.info.parameter_status("is_superuser")) == (
            "postgres", "on")
    with psycopg.connect(url, autocommit=True) as c:
        assert c.info.parameter_status("is_superuser") == "off"


def test_standard_conforming_strings_reported_for_superuser(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as c:
        c.execute("set standard_conforming_strings = off")
        assert c.info.parameter_status("standard_conforming_strings") == "off"
        assert c.execute("select %s", ["a'b\\c"]).fetchone() == ("a'b\\c",)
        c.execute("set standard_conforming_strings = on")
        assert c.info.parameter_status("standard_conforming_strings") == "on"


SERVER_DEFAULTS = {
    "search_path": '"$user", public',
    "exit_on_error": "off",
    "enable_seqscan": "on",
    "client_min_messages": "notice",
}


def settings_of(c) -> dict:
    return {k: c.execute(f"show {k}").fetchone()[0] for k in SERVER_DEFAULTS}


@pytest.mark.parametrize("reset", ["reset all", "discard all", "reset search_path; reset enable_seqscan; "
                                   "reset client_min_messages; reset exit_on_error"])
def test_reset_returns_to_server_defaults(engine_url, reset):
    with psycopg.connect(engine_url, autocommit=True) as c:
        c.execute("set search_path = pg_catalog; set enable_seqscan = off; set client_min_messages = warning")
        c.execute(reset)
        assert settings_of(c) == SERVER_DEFAULTS


def test_reset_all_through_the_extended_protocol(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as c:
        c.execute("set search_path = pg_catalog")
        c.execute("reset all", prepare=True)
        assert settings_of(c) == SERVER_DEFAULTS


def test_discard_all_in_a_transaction_is_refused(engine_url):
    with psycopg.connect(engine_url) as c:
        c.execute("select 1")
        with pytest.raises(errors.ActiveSqlTransaction):
            c.execute("discard all")
        c.rollback()
    with psycopg.connect(engine_url, autocommit=True) as c, pytest.raises(errors.ActiveSqlTransaction):
        c.execute("select 1; discard all")


def test_exit_on_error_ends_only_that_client(engine_url):
    with psycopg.connect(engine_url, autocommit=True) as other:
        c = psycopg.connect(engine_url, autocommit=True)
        c.execute("set exit_on_error = on")
        with pytest.raises(psycopg.Error):
            c.execute("select 1/0")
        assert c.closed or c.broken
        c.close()
        assert other.execute("select 'others go on'").fetchone() == ("others go on",)
        assert other.execute("show exit_on_error").fetchone() == ("off",)


@pytest.mark.embedded_only
def test_job_owner_needing_quotes_runs(server):
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute('drop role if exists "Job Owner"')
        admin.execute('create role "Job Owner" login')
        admin.execute("drop table if exists job_marks")
        admin.execute("create table job_marks (at timestamptz)")
        admin.execute('grant insert on job_marks to "Job Owner"')
        admin.execute('set role "Job Owner"')
        admin.execute("create procedure pg_temp.noop() language sql as 'select 1'")  # role can create
        admin.execute("reset role")
        admin.execute("create or replace procedure public.mark_job(job_id int, config jsonb) language sql "
                      "as 'insert into job_marks values (now())'")
        admin.execute('grant execute on procedure public.mark_job to "Job Owner"')
        admin.execute('set role "Job Owner"')
        job = admin.execute("select add_job('public.mark_job', '1 hour', initial_start => now())").fetchone()[0]
        admin.execute("reset role")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = admin.execute("select last_run_status from timescaledb_information.job_stats where job_id = %s",
                                [job]).fetchone()
            if row and row[0]:
                break
            time.sleep(0.5)
        assert row == ("Success",)
        assert admin.execute("select count(*) from job_marks").fetchone() == (1,)
        admin.execute("select delete_job(%s)", [job])


# ------------------------------------------------------- encodings (18.1) --


@pytest.mark.embedded_only
def test_client_encodings_never_crash_and_unconverted_ones_are_refused(server):
    """The server converts most encodings itself (test_conformance); what it does not
    convert is refused cleanly, and the engine's own conversions stay off."""
    before = start_time(server.url)
    with psycopg.connect(server.url, autocommit=True) as other:
        for enc in ("latin1", "LATIN9", "euc_jp"):
            c = psycopg.connect(server.url, autocommit=True)
            c.execute(f"set client_encoding to {enc}")
            assert c.execute("select 'é'").fetchone() == ("é",)
            # set_config reaches the engine's own setting, whose conversions PGlite cannot run
            with pytest.raises(errors.FeatureNotSupported):
                c.execute("select set_config('client_encoding', %s, false)", [enc])
            c.close()
            assert other.execute("select 'still up'").fetchone() == ("still up",)
        with pytest.raises(errors.FeatureNotSupported, match="EUC_TW"):
            other.execute("set client_encoding to euc_tw")
        assert other.info.parameter_status("client_encoding") == "UTF8"
        with pytest.raises(psycopg.OperationalError, match="MULE_INTERNAL"):
            psycopg.connect(server.url, client_encoding="mule_internal")
        with pytest.raises(errors.UndefinedFunction):
            other.execute("select convert_to('é', 'LATIN1')")
        other.execute("set client_encoding to 'SQL_ASCII'")
        assert other.info.parameter_status("client_encoding") == "SQL_ASCII"
        other.execute("set client_encoding to 'UTF8'")
        assert other.execute("select 'ok'").fetchone() == ("ok",)
    assert start_time(server.url) == before

