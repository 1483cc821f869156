"""The embedded TimescaleDB server behaves like a PostgreSQL server to its clients.

These tests always run against a private embedded server (it is the thing
under test), whatever engine the rest of the suite uses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg import sql

from rmp.embedded import EmbeddedServer

# About the embedded server itself (its own private servers): not run on the native engine.
pytestmark = pytest.mark.embedded_only

UTC = dt.UTC
N_COPY = 200_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedServer(tmp_path_factory.mktemp("embedded-under-test"), job_interval=0.5) as srv:
        yield srv


@pytest.fixture
def conn(server):
    with psycopg.connect(server.url, autocommit=True) as c:
        yield c


def make_table(conn, name: str) -> None:
    conn.execute(sql.SQL("drop table if exists {} cascade").format(sql.Identifier(name)))
    conn.execute(
        sql.SQL("create table {} (ts timestamptz not null, n int not null, label text)").format(
            sql.Identifier(name)
        )
    )
    conn.execute("select create_hypertable(%s, by_range('ts', interval '1 day'))", [name])


def count(conn, name: str) -> int:
    return conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(name))).fetchone()[0]


@pytest.mark.parametrize("fmt", ["text", "csv", "binary"])
def test_copy_from_stdin_lands_every_row(conn, fmt):
    table = f"copy_{fmt}"
    make_table(conn, table)
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    stmt = sql.SQL("copy {} (ts, n, label) from stdin {}").format(
        sql.Identifier(table),
        sql.SQL({"text": "", "csv": "(format csv)", "binary": "(format binary)"}[fmt]),
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        if fmt == "binary":
            copy.set_types(["timestamptz", "int4", "text"])
        for i in range(N_COPY):
            ts = start + dt.timedelta(seconds=30 * i)
            if fmt == "csv":  # write_row speaks text format; CSV goes as raw data
                copy.write(f'{ts.isoformat()},{i},"row, {i}"\n')
            else:
                copy.write_row((ts, i, f"row, {i}"))
    row = conn.execute(
        sql.SQL("select count(*), sum(n), min(ts), max(label) from {}").format(sql.Identifier(table))
    ).fetchone()
    assert row[0] == N_COPY
    assert row[1] == N_COPY * (N_COPY - 1) // 2
    assert row[2] == start
    assert row[3] == "row, 99999"


def test_executemany_pipelines_including_empty(conn):
    make_table(conn, "many")
    with conn.cursor() as cur:
        cur.executemany("insert into many values ('2024-01-01', %s, %s)", [(i, str(i)) for i in range(500)])
        cur.executemany("insert into many values ('2024-01-01', %s, %s)", [])
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("insert into many values ('2024-01-02', %s, 'tx')", [])
        cur.executemany("insert into many values ('2024-01-02', %s, 'tx')", [(1,), (2,)])
    assert conn.execute("select count(*), sum(n) from many").fetchone() == (502, 499 * 500 // 2 + 3)


def test_pipelined_executemany_lands_every_row(server):
    """A pipeline of 20,000 Bind/Execute messages inside a transaction: no row is dropped."""
    with psycopg.connect(server.url, autocommit=True) as setup:
        make_table(setup, "pipelined")
    rows = [(i, f"r{i}") for i in range(20_000)]
    with psycopg.connect(server.url) as c:
        with c.cursor() as cur:
            cur.executemany("insert into pipelined values ('2024-01-03', %s, %s)", rows)
        c.commit()
        assert c.execute("select count(*), sum(n), max(label) from pipelined").fetchone() == (
            20_000, 19_999 * 20_000 // 2, "r9999",
        )


def test_copy_to_stdout(conn):
    make_table(conn, "copy_out")
    conn.execute("insert into copy_out select '2024-01-01'::timestamptz, g, 'x' from generate_series(1, 5) g")
    with conn.cursor() as cur, cur.copy("copy (select n from copy_out order by n) to stdout") as copy:
        assert [int(r[0]) for r in copy.rows()] == [1, 2, 3, 4, 5]


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql client not installed")
def test_psql_backslash_copy_csv(conn, server, tmp_path):
    make_table(conn, "psql_copy")
    path = tmp_path / "rows.csv"
    with path.open("w") as f:
        f.write("ts,n,label\n")
        for i in range(10_000):
            f.write(f"2024-01-0{1 + i % 5}T00:00:{i % 60:02d}Z,{i},\"a,b {i}\"\n")
    out = subprocess.run(
        ["psql", server.url, "-v", "ON_ERROR_STOP=1", "-c",
         f"\\copy psql_copy (ts, n, label) from '{path}' with (format csv, header true)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "COPY 10000"
    assert count(conn, "psql_copy") == 10_000
    assert conn.execute("select label from psql_copy where n = 42").fetchone()[0] == "a,b 42"


def test_copy_fail_rolls_back(conn):
    """psycopg sends CopyFail when the block raises; nothing of that COPY lands."""
    make_table(conn, "copy_fail")

    class GaveUp(Exception):
        pass

    with pytest.raises(GaveUp), conn.cursor() as cur, cur.copy("copy copy_fail (ts, n) from stdin") as copy:
        copy.write_row((dt.datetime(2024, 1, 1, tzinfo=UTC), 1))
        raise GaveUp
    assert count(conn, "copy_fail") == 0
    assert conn.execute("select 1").fetchone() == (1,)


def test_large_array_parameter(conn):
    values = list(range(50_000))
    assert conn.execute("select count(*), sum(x) from unnest(%s::int[]) x", [values]).fetchone() == (
        50_000, sum(values),
    )
    make_table(conn, "array_insert")
    ts = [dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i) for i in range(50_000)]
    conn.execute(
        "insert into array_insert (ts, n) select * from unnest(%s::timestamptz[], %s::int[])", [ts, values]
    )
    assert count(conn, "array_insert") == 50_000
    assert conn.execute("select 'still up'").fetchone() == ("still up",)


def test_open_transaction_holds_the_session(server):
    """A second client's query waits until the first one's transaction ends."""
    order: list[str] = []
    with psycopg.connect(server.url, autocommit=True) as setup:
        make_table(setup, "tx_order")
    a = psycopg.connect(server.url)
    b = psycopg.connect(server.url, autocommit=True)
    try:
        a.execute("insert into tx_order values ('2024-01-01', 1, 'a')")  # opens a transaction

        def other():
            # Must not see the uncommitted row, and must not run inside a's transaction.
            order.append("b-start")
            n = b.execute("select count(*) from tx_order").fetchone()[0]
            order.append(f"b-done:{n}")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(1.0)
        assert order == ["b-start"], "b ran while a held an open transaction"
        a.execute("insert into tx_order values ('2024-01-01', 2, 'a')")
        order.append("a-commit")
        a.commit()
        t.join(10)
        assert order == ["b-start", "a-commit", "b-done:2"]
    finally:
        a.close()
        b.close()


def test_prepared_statements_do_not_collide(server):
    """psycopg auto-prepares (_pg3_0, _pg3_1...) on every connection: same names, different SQL."""
    conns = [psycopg.connect(server.url, autocommit=True, prepare_threshold=0) for _ in range(2)]
    errors: list[BaseException] = []

    def work(c, k):
        try:
            for i in range(200):
                q = "select %s::int * 2" if k == 0 else "select %s::text || '!'"
                got = c.execute(q, [i]).fetchone()[0]
                assert got == (i * 2 if k == 0 else f"{i}!")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, k)) for k, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in conns:
        c.close()
    assert errors == []


def test_session_settings_do_not_leak(server):
    with psycopg.connect(server.url, autocommit=True) as a, psycopg.connect(server.url, autocommit=True) as b:
        a.execute("set statement_timeout = '123s'")
        a.execute("create temp table mine (x int)")
        assert b.execute("show statement_timeout").fetchone()[0] == "0"
        assert b.execute("select to_regclass('pg_temp.mine')").fetchone()[0] is None
        assert a.execute("show statement_timeout").fetchone()[0] == "123s"
        assert a.execute("show search_path").fetchone()[0] == '"$user", public'


def test_disconnect_mid_transaction_rolls_back(server):
    with psycopg.connect(server.url, autocommit=True) as c:
        make_table(c, "abandoned")
    sock_conn = psycopg.connect(server.url)
    sock_conn.execute("insert into abandoned values ('2024-01-01', 1, 'x')")
    # Cut the TCP connection without a Terminate message.
    socket.socket(fileno=sock_conn.fileno()).close()
    with psycopg.connect(server.url, autocommit=True) as c:
        assert count(c, "abandoned") == 0
        assert c.execute("select 1").fetchone() == (1,)


def test_killed_client_mid_copy_leaves_nothing(server, tmp_path):
    with psycopg.connect(server.url, autocommit=True) as c:
        make_table(c, "killed_copy")
    script = tmp_path / "copier.py"
    script.write_text(
        "import sys, time, psycopg\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
        "    with c.cursor() as cur, cur.copy('copy killed_copy (ts, n) from stdin') as cp:\n"
        "        for i in range(10**9):\n"
        "            cp.write_row(('2024-01-01T00:00:00Z', i))\n"
        "            if i == 50000: print('copying', flush=True)\n"
    )
    proc = subprocess.Popen(["python", str(script), server.url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "copying"
    proc.kill()
    proc.wait()
    with psycopg.connect(server.url, autocommit=True) as c:
        assert count(c, "killed_copy") == 0
        assert c.execute("select 'next client served'").fetchone() == ("next client served",)


def test_malformed_messages_do_not_kill_the_server(server):
    for payload in (
        b"\x00\x00\x00\x03",  # startup length too small
        struct.pack("!ii", 8, 12345678),  # unknown protocol version
        struct.pack("!ii", 8, 196608) + b"garbage",  # startup without user, then junk
    ):
        with socket.create_connection(("127.0.0.1", server.settings.port)) as s:
            s.sendall(payload)
            s.settimeout(5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                s.recv(1000)
    # A logged-in client sending an unknown message type and an absurd length.
    c = psycopg.connect(server.url)
    s = socket.socket(fileno=c.fileno())
    s.sendall(b"@" + struct.pack("!i", 8) + b"abcd")
    time.sleep(0.2)
    s.close()
    with psycopg.connect(server.url, autocommit=True) as c2:
        assert c2.execute("select 2").fetchone() == (2,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            c2.execute("select 1/0")
        assert c2.execute("select 3").fetchone() == (3,)


def test_login_role_is_applied(server):
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute("drop table if exists secret_stuff")
        admin.execute("create table secret_stuff (x int)")
        admin.execute("insert into secret_stuff values (1), (2)")
        admin.execute("drop role if exists reader_1")
        admin.execute("create role reader_1 login")
        admin.execute("drop table if exists public_stuff")
        admin.execute("create table public_stuff (x int)")
        admin.execute("grant select on public_stuff to reader_1")
    url = server.url.replace("postgres@", "reader_1@")
    with psycopg.connect(url, autocommit=True) as r:
        assert r.execute("select current_user, session_user").fetchone() == ("reader_1", "reader_1")
        assert r.execute("select count(*) from public_stuff").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            r.execute("select * from secret_stuff")
        for escape in ("set session authorization postgres",
                       "select set_config('session_authorization', 'postgres', false)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                r.execute(escape)
        for back_to_login in ("reset session authorization", "discard all"):  # as on a server
            r.execute(back_to_login)
        assert r.execute("select current_user, session_user").fetchone() == ("reader_1", "reader_1")
    # Startup settings are applied as the login's role: a superuser-only one is refused (FATAL, as on a server).
    with pytest.raises(psycopg.OperationalError, match="allow_system_table_mods"):
        psycopg.connect(url, options="-c allow_system_table_mods=on")
    with psycopg.connect(url, autocommit=True, options="-c work_mem=8MB") as r:
        with psycopg.connect(server.url, autocommit=True) as other:
            other.execute("select 1")  # makes the session change hands once more
        assert r.execute("show allow_system_table_mods").fetchone() == ("off",)
        assert r.execute("show work_mem").fetchone() == ("8MB",)
    with pytest.raises(psycopg.OperationalError, match='role "nobody_here" does not exist'):
        psycopg.connect(server.url.replace("postgres@", "nobody_here@"))
    with pytest.raises(psycopg.OperationalError, match='database "nodb" does not exist'):
        psycopg.connect(server.url.rsplit("/", 1)[0] + "/nodb")


def test_due_retention_policy_runs_without_run_job(conn):
    make_table(conn, "expiring")
    conn.execute(
        "insert into expiring select g, 1, null from generate_series("
        "now() - interval '20 days', now(), interval '1 hour') g"
    )
    before = count(conn, "expiring")
    job_id = conn.execute("select add_retention_policy('expiring', interval '5 days')").fetchone()[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        oldest = conn.execute("select min(ts) from expiring").fetchone()[0]
        if oldest > dt.datetime.now(UTC) - dt.timedelta(days=6):
            break
        time.sleep(0.5)
    assert conn.execute("select min(ts) > now() - interval '6 days' from expiring").fetchone()[0]
    assert count(conn, "expiring") < before
    stats = conn.execute(
        "select last_run_status, total_runs >= 1, next_start > now() "
        "from timescaledb_information.job_stats where job_id = %s", [job_id]
    ).fetchone()
    assert stats == ("Success", True, True)


def test_sigterm_keeps_committed_rows(tmp_path):
    srv = EmbeddedServer(tmp_path / "restart")
    srv.start()
    try:
        with psycopg.connect(srv.url, autocommit=True) as c:
            make_table(c, "durable")
            c.execute("insert into durable select '2024-01-01'::timestamptz + g * interval '1 minute', g, 'k' "
                      "from generate_series(1, 5000) g")
            open_tx = psycopg.connect(srv.url)
            open_tx.execute("insert into durable values ('2024-01-01', -1, 'uncommitted')")
        assert srv.stop() is True
        open_tx.close()
        srv.start()
        with psycopg.connect(srv.url, autocommit=True) as c:
            assert c.execute("select count(*), sum(n) from durable").fetchone() == (5000, 5000 * 5001 // 2)
    finally:
        srv.stop()


def test_server_checkpoints_by_itself(tmp_path):
    """No checkpointer process in PGlite: the server runs CHECKPOINT when idle, or pg_wal only grows."""
    with EmbeddedServer(tmp_path / "ckpt", checkpoint_interval=1) as srv, \
            psycopg.connect(srv.url, autocommit=True) as c:
        make_table(c, "walgen")
        c.execute("insert into walgen select '2024-01-01'::timestamptz + g * interval '1 s', g, repeat('x', 100)"
                  " from generate_series(1, 20000) g")
        written = c.execute("select pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            redo = c.execute("select redo_lsn from pg_control_checkpoint()").fetchone()[0]
            if c.execute("select %s::pg_lsn >= %s::pg_lsn", [redo, written]).fetchone()[0]:
                break
            time.sleep(0.5)
        assert c.execute("select %s::pg_lsn >= %s::pg_lsn", [redo, written]).fetchone()[0]


def test_port_taken_is_refused(server, tmp_path):
    from rmp.errors import EngineError

    clash = EmbeddedServer(tmp_path / "clash", port=server.settings.port)
    with pytest.raises(EngineError, match="already taken"):
        clash.start()


def test_idle_client_keeps_its_temp_table_while_no_job_is_due(server):
    """The job runner takes the session (and resets it) only when a job is due."""
    with psycopg.connect(server.url, autocommit=True) as c:
        # jobs other tests of this module left on this server may come due during the
        # wait (and then the runner rightly takes the session): none is due here
        paused = [r[0] for r in c.execute(
            "select job_id from timescaledb_information.jobs where scheduled").fetchall()]
        for job in paused:
            c.execute("select alter_job(%s, scheduled => false)", (job,))
        try:
            c.execute("create temp table kept_temp (x int)")
            c.execute("insert into kept_temp values (1), (2)")
            time.sleep(server.job_interval * 6)  # several job ticks with nothing due
            assert c.execute("select sum(x) from kept_temp").fetchone() == (3,)
        finally:
            for job in paused:
                c.execute("select alter_job(%s, scheduled => true)", (job,))
