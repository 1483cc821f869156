"""Client-visible conformance: the same checks on a real server and the embedded engine.

The native engine (PostgreSQL + TimescaleDB) is the reference: every test here
runs on both (the ``engine`` fixtures of conftest.py) and asserts what the real server does — reported settings after
SET/RESET, RESET ALL / DISCARD ALL values, encodings, notifications between two
connections, cancel of a queued and of a running query, statement_timeout,
termination, backend pids, prepared
statements across clients and the error codes of issue 18. The last test sends
each input that used to crash the embedded engine and checks that it did not
restart and that other clients kept their connections.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
import zoneinfo

import psycopg
import pytest
from pgwire import RawConnection, error_fields
from psycopg import errors

from rmp.embedded import EmbeddedServer

IDLE_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def idle_engine_url(engine, tmp_path_factory):
    """The same kind of engine, with a short idle-in-transaction timeout."""
    if engine.kind != "embedded":  # a real server: the setting, for these connections
        sep = "&" if "?" in engine.url else "?"
        yield f"{engine.url}{sep}options=-c%20idle_in_transaction_session_timeout%3D{IDLE_TIMEOUT_S * 1000}"
        return
    with EmbeddedServer(tmp_path_factory.mktemp("conformance-idle"),
                        idle_in_transaction_timeout=IDLE_TIMEOUT_S) as srv:
        yield srv.url


def connect(url: str, **kwargs) -> psycopg.Connection:
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(url, **kwargs)


def role_url(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def make_role(conn, role: str) -> None:
    conn.execute(f'drop role if exists "{role}"')
    conn.execute(f'create role "{role}" login')


# ------------------------------------------------------------------ pids --

def test_backend_pid_is_the_one_in_backend_key_data(engine_url):
    with connect(engine_url) as a, connect(engine_url) as b:
        assert a.execute("select pg_backend_pid()").fetchone()[0] == a.info.backend_pid
        assert b.execute("select pg_backend_pid()").fetchone()[0] == b.info.backend_pid
        assert a.info.backend_pid != b.info.backend_pid
        # and it stays the same after the session changed hands
        assert a.execute("select pg_backend_pid()").fetchone()[0] == a.info.backend_pid


# --------------------------------------------------------- LISTEN/NOTIFY --

def next_notify(conn, timeout: float = 10):
    for n in conn.notifies(timeout=timeout, stop_after=1):
        return n
    return None


def test_notification_reaches_the_listening_connection_with_the_sender_pid(engine_url):
    with connect(engine_url) as a, connect(engine_url) as b, connect(engine_url) as c:
        a.execute("listen conf_chan")
        c.execute('listen "Conf Other"')
        b.execute("notify conf_chan, 'hello'")
        n = next_notify(a)
        assert (n.channel, n.payload, n.pid) == ("conf_chan", "hello", b.info.backend_pid)
        # c listens on another channel only; b does not listen at all
        b.execute("select pg_notify('Conf Other', 'for c')")
        n = next_notify(c)
        assert (n.channel, n.payload, n.pid) == ("Conf Other", "for c", b.info.backend_pid)
        assert next_notify(b, timeout=0.5) is None
        # a notification to itself carries its own pid
        a.execute("notify conf_chan, 'self'")
        n = next_notify(a)
        assert (n.channel, n.payload, n.pid) == ("conf_chan", "self", a.info.backend_pid)


def test_unlisten_and_rolled_back_listen(engine_url):
    with connect(engine_url) as a, connect(engine_url) as b, connect(engine_url) as other:
        other.execute("listen conf_keep")
        a.execute("listen conf_keep")
        a.execute("unlisten *")  # must not stop `other` from hearing conf_keep
        with a.transaction():
            a.execute("listen conf_never")
            raise_rollback = psycopg.Rollback()
            raise raise_rollback
        b.execute("notify conf_keep, 'k'")
        b.execute("notify conf_never, 'n'")
        n = next_notify(other)
        assert (n.channel, n.payload) == ("conf_keep", "k")
        assert next_notify(a, timeout=0.5) is None


def test_notification_inside_a_transaction_is_sent_at_commit(engine_url):
    with connect(engine_url) as a, connect(engine_url, autocommit=False) as b:
        a.execute("listen conf_tx")
        b.execute("notify conf_tx, 'first'")
        b.execute("notify conf_tx, 'second'")
        b.commit()
        got = [(n.payload, n.pid) for n in a.notifies(timeout=10, stop_after=2)]
        assert got == [("first", b.info.backend_pid), ("second", b.info.backend_pid)]


# ------------------------------------------------------ cancel, terminate --

def test_cancel_of_a_query_that_waits(engine_url):
    """b's query waits behind a's open transaction (a lock on a server, the
    session on the embedded engine); cancelling it gives 57014, and b goes on."""
    with connect(engine_url) as setup:
        setup.execute("create table if not exists conf_wait (x int)")
    with connect(engine_url, autocommit=False) as a, connect(engine_url) as b:
        a.execute("lock table conf_wait in access exclusive mode")
        outcome = []

        def waiter():
            try:
                b.execute("select count(*) from conf_wait")
                outcome.append("answered")
            except errors.QueryCanceled as exc:
                outcome.append(exc.sqlstate)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(1.0)  # let the query reach the server
        b.cancel_safe()
        t.join(30)
        assert outcome == ["57014"]
        a.rollback()
        assert b.execute("select count(*) from conf_wait").fetchone() == (0,)


def _run_catching(conn, sql, outcome):
    try:
        conn.execute(sql)
        outcome.append("completed")
    except errors.QueryCanceled as exc:
        outcome.append((exc.sqlstate, str(exc).strip()))


def test_statement_timeout_fails_a_running_statement(engine_url):
    with connect(engine_url) as c:
        c.execute("set statement_timeout = '300ms'")
        outcome: list = []
        _run_catching(c, "select pg_sleep(60)", outcome)
        assert outcome == [("57014", "canceling statement due to statement timeout")]
        assert c.execute("select pg_sleep(0.01), 'short statements run'").fetchone() == ("", "short statements run")
        c.execute("reset statement_timeout")
        assert c.execute("select pg_sleep(0.6), 'no timeout'").fetchone() == ("", "no timeout")
    # from the startup packet, in milliseconds
    with connect(engine_url, options="-c statement_timeout=300") as c:
        outcome = []
        _run_catching(c, "select pg_sleep(60)", outcome)
        assert outcome == [("57014", "canceling statement due to statement timeout")]


def test_cancel_when_nothing_runs_is_harmless(engine_url):
    with connect(engine_url) as a:
        a.cancel_safe()
        assert a.execute("select 42").fetchone() == (42,)


def test_terminate_backend(engine_url):
    with connect(engine_url) as admin:
        make_role(admin, "conf_term_user")
    with connect(engine_url) as a, connect(engine_url) as b:
        assert a.execute("select pg_terminate_backend(%s)", [b.info.backend_pid]).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            for _ in range(50):  # the FATAL may arrive just after the call returned
                b.execute("select 1")
                time.sleep(0.1)
        # no such backend: false, with a warning
        assert a.execute("select pg_terminate_backend(2147480000)").fetchone() == (False,)
    # inside an open transaction the target ends at once, not at commit
    with connect(engine_url, autocommit=False) as control, connect(engine_url) as victim:
        assert control.execute("select pg_terminate_backend(%s)", [victim.info.backend_pid]).fetchone() == (True,)
        with pytest.raises(psycopg.OperationalError):
            for _ in range(50):
                victim.execute("select 1")
                time.sleep(0.1)
        control.rollback()
    # a connection that ends itself gets the FATAL instead of a result
    with connect(engine_url) as itself, pytest.raises(errors.AdminShutdown):
        itself.execute("select pg_terminate_backend(pg_backend_pid())")
    with connect(engine_url) as a, connect(role_url(engine_url, "conf_term_user")) as plain:
        with pytest.raises(errors.InsufficientPrivilege):
            plain.execute("select pg_terminate_backend(%s)", [a.info.backend_pid])
        assert a.execute("select 'a survives'").fetchone() == ("a survives",)
        # a login may end its own role's other connection
        with connect(role_url(engine_url, "conf_term_user")) as twin:
            assert plain.execute("select pg_terminate_backend(%s)", [twin.info.backend_pid]).fetchone() == (True,)
            with pytest.raises(psycopg.OperationalError):
                for _ in range(50):
                    twin.execute("select 1")
                    time.sleep(0.1)


# ------------------------------------- statements, settings, error codes --

def test_prepared_statements_are_per_connection(engine_url):
    with connect(engine_url) as a, connect(engine_url) as b:
        a.execute("prepare conf_ps as select 'a'")
        b.execute("prepare conf_ps as select 'b'")
        assert a.execute("execute conf_ps").fetchone() == ("a",)
        assert b.execute("execute conf_ps").fetchone() == ("b",)
        b.execute("select 1; deallocate all")
        assert a.execute("execute conf_ps").fetchone() == ("a",)
        with pytest.raises(errors.InvalidSqlStatementName, match='^prepared statement "conf_ps" does not exist$'):
            b.execute("execute conf_ps")


def test_settings_are_reported_after_set_and_reset(engine_url):
    with connect(engine_url) as c:
        assert c.info.parameter_status("client_encoding") == "UTF8"
        c.execute("set datestyle = 'SQL, DMY'")
        assert c.info.parameter_status("DateStyle") == "SQL, DMY"
        assert c.execute("select '2024-01-31'::date").fetchone() == (dt.date(2024, 1, 31),)
        c.execute("reset datestyle")
        assert c.info.parameter_status("DateStyle") == "ISO, MDY"
        c.execute("set timezone = 'Europe/Rome'")
        assert c.info.parameter_status("TimeZone") == "Europe/Rome"
        got = c.execute("select '2024-01-01 00:00:00+00'::timestamptz").fetchone()[0]
        assert got.tzinfo == zoneinfo.ZoneInfo("Europe/Rome")
        assert got == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        c.execute("set application_name = 'conformance'")
        assert c.info.parameter_status("application_name") == "conformance"


def test_reset_all_and_discard_all_give_server_defaults(engine_url):
    with connect(engine_url) as c:
        for stmt in ("reset all", "discard all"):
            c.execute("set search_path = pg_catalog")
            c.execute("set enable_seqscan = off")
            c.execute(stmt)
            assert c.execute("show search_path").fetchone() == ('"$user", public',)
            assert c.execute("show enable_seqscan").fetchone() == ("on",)
            assert c.execute("show exit_on_error").fetchone() == ("off",)
            assert c.execute("select 1").fetchone() == (1,)


def test_non_utf8_client_encoding(engine_url):
    """The server converts to and from the client's encoding (the embedded server
    does it per client in embedded/encoding.mjs; its session stays UTF8)."""
    with connect(engine_url) as c, connect(engine_url) as listener:
        c.execute("set client_encoding to latin1")
        assert c.info.parameter_status("client_encoding") == "LATIN1"
        assert c.execute("show client_encoding").fetchone() == ("LATIN1",)
        latin = bytes([*range(32, 127), *range(160, 256)]).decode("latin1")
        assert c.execute("select %s::text, 'café', length(%s::text)", [latin, latin]).fetchone() == (
            latin, "café", len(latin))
        # a character LATIN1 has no byte for: the server's 22P05, the connection stays
        with pytest.raises(errors.UntranslatableCharacter, match='no equivalent in encoding "LATIN1"'):
            c.execute("select chr(8364)")
        assert c.execute("select 'still here'").fetchone() == ("still here",)
        # COPY text both ways, converted too
        c.execute("drop table if exists conf_enc")
        c.execute("create table conf_enc (t text)")
        with c.cursor().copy("copy conf_enc from stdin") as cp:
            cp.write_row(["àéîõü"])
        assert c.execute("select t, octet_length(t) from conf_enc").fetchone() == ("àéîõü", 10)
        with c.cursor().copy("copy conf_enc to stdout") as cp:
            assert list(cp.rows()) == [("àéîõü",)]
        # notifications to a LATIN1 listener
        listener.execute("set client_encoding to 'WIN1252'")
        assert listener.info.parameter_status("client_encoding") == "WIN1252"
        listener.execute("listen conf_enc_ch")
        with connect(engine_url) as sender:  # UTF8
            sender.execute("notify conf_enc_ch, 'où €'")
        assert c.execute("select 1").fetchone() == (1,)
        note = next(listener.notifies(timeout=10))
        assert (note.channel, note.payload) == ("conf_enc_ch", "où €")
        # SET is transactional; a rolled-back one is reported back
        c.execute("begin")
        c.execute("set client_encoding to koi8")
        assert c.info.parameter_status("client_encoding") == "KOI8R"
        assert c.execute("select 'привет'").fetchone() == ("привет",)
        c.execute("rollback")
        assert c.info.parameter_status("client_encoding") == "LATIN1"
        c.execute("set client_encoding to euc_jp")
        assert c.execute("select %s::text", ["日本語テキスト"]).fetchone() == ("日本語テキスト",)
        with pytest.raises(errors.InvalidParameterValue):  # 22023
            c.execute("set client_encoding to no_such_encoding")
        c.execute("reset client_encoding")
        assert c.info.parameter_status("client_encoding") == "UTF8"
        c.execute("drop table conf_enc")
    # from the startup packet
    with connect(engine_url, client_encoding="latin1") as c:
        assert c.info.parameter_status("client_encoding") == "LATIN1"
        assert c.execute("select %s::text", ["ñandú"]).fetchone() == ("ñandú",)
        c.execute("reset all")
        assert c.info.parameter_status("client_encoding") == "LATIN1"


def test_error_codes(engine_url):
    with connect(engine_url) as admin:
        make_role(admin, "conf_plain")
    with connect(engine_url) as c:
        with pytest.raises(errors.ObjectNotInPrerequisiteState), c.transaction():  # 55000
            c.execute("prepare transaction 'conf_x'")
        with pytest.raises(errors.InvalidSqlStatementName, match='^prepared statement "nosuch" does not exist$'):
            c.execute("execute nosuch")
        with pytest.raises(errors.InvalidSqlStatementName, match='^prepared statement "nosuch" does not exist$'):
            c.execute("deallocate nosuch")
    with connect(role_url(engine_url, "conf_plain")) as plain:
        with pytest.raises(errors.InsufficientPrivilege):  # 42501
            plain.execute("set session authorization postgres")
        assert plain.execute("select current_user").fetchone() == ("conf_plain",)


# --------------------------------------------------------- idle in transaction

def test_idle_in_transaction_timeout_ends_the_client(idle_engine_url):
    with connect(idle_engine_url) as setup:
        setup.execute("create table if not exists conf_idle (x int)")
        setup.execute("truncate conf_idle")
    idle = connect(idle_engine_url, autocommit=False)
    idle.execute("insert into conf_idle values (1)")
    time.sleep(IDLE_TIMEOUT_S + 2)
    with pytest.raises(errors.IdleInTransactionSessionTimeout):  # 25P03
        idle.execute("select 1")
    idle.close()
    with connect(idle_engine_url) as c:
        assert c.execute("select count(*) from conf_idle").fetchone() == (0,)


# ---------------------------------------------------------- crash triggers --

CRASH_TRIGGERS = {
    "latin1 client_encoding": ["set client_encoding to latin1", "select 'é'"],
    "latin9 client_encoding": ["set client_encoding to latin9"],
    "euc_jp client_encoding": ["set client_encoding to euc_jp", "select 'x'"],
    "latin1 via set_config": ["select set_config('client_encoding', 'latin1', false)"],
    "reset all": ["reset all", "select 1"],
    "discard all": ["discard all", "select 1"],
    "prepare transaction": ["begin", "prepare transaction 'crash_x'"],
    "unknown prepared statement": ["execute nosuch"],
}


def test_crash_triggers_do_not_restart_the_engine(engine_url):
    with connect(engine_url) as bystander:
        started = bystander.execute("select pg_postmaster_start_time()").fetchone()[0]
        for name, statements in CRASH_TRIGGERS.items():
            with connect(engine_url) as c:
                for stmt in statements:
                    try:
                        c.execute(stmt)
                    except psycopg.errors.DatabaseError:
                        c.rollback()
            # the session changes hands after each trigger
            assert bystander.execute("select %s::text", [name]).fetchone() == (name,), name
        # a cancelled pg_sleep: running statements finish, nobody freezes
        with connect(engine_url) as sleeper:
            t = threading.Thread(target=lambda: _ignore(sleeper.execute, "select pg_sleep(1)"))
            t.start()
            time.sleep(0.3)
            sleeper.cancel_safe()
            t.join(30)
            assert sleeper.execute("select 'after cancel'").fetchone() == ("after cancel",)
        # a malformed message from a raw client
        host, port = _host_port(engine_url)
        rawc = RawConnection(host, port, database=engine_url.rsplit("/", 1)[1])
        rawc.send(b"P\x00\x00\x00\x05x")
        kind, body = rawc.read_message()  # a server answers 08P01 (and may keep or end the connection)
        assert (kind, error_fields(body)["C"]) == (b"E", "08P01")
        rawc.close()
        assert bystander.execute("select 'bystander kept its connection'").fetchone() == (
            "bystander kept its connection",)
        assert bystander.execute("select pg_postmaster_start_time()").fetchone()[0] == started


def _ignore(fn, *args):
    with contextlib.suppress(psycopg.Error):
        fn(*args)


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("@", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)
