"""The embedded server's connection layer: hostile or broken clients cost only themselves.

Malformed and random protocol messages, a client idling inside a transaction,
and a large COPY: the engine never restarts, other clients keep answering.
These are about the embedded engine itself (the thing under test), so they run
against a private embedded server; client-visible behaviour shared with a real
server is in test_conformance.py.
"""

from __future__ import annotations

import datetime as dt
import struct
import threading

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgwire import SYNC, Closed, RawConnection, cstr, error_fields, message, query

from rmp.embedded import EmbeddedServer

IDLE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedServer(tmp_path_factory.mktemp("embedded-protocol"), job_interval=0.5,
                        idle_in_transaction_timeout=IDLE_TIMEOUT_S) as srv:
        yield srv


@pytest.fixture(scope="module")
def bystander(server):
    """A second client that must keep its connection through everything in this module."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        yield conn


def engine_start(conn) -> dt.datetime:
    return conn.execute("select pg_postmaster_start_time()").fetchone()[0]


def raw(server) -> RawConnection:
    return RawConnection("127.0.0.1", server.settings.port)


def test_parse_without_terminator_ends_only_that_client(server, bystander):
    started = engine_start(bystander)
    c = raw(server)
    c.send(b"P\x00\x00\x00\x05x")  # the one-byte body has no NUL terminator
    kind, body = c.read_message()
    assert kind == b"E"
    fields = error_fields(body)
    assert (fields["S"], fields["C"]) == ("FATAL", "08P01")
    with pytest.raises(Closed):
        c.read_message()
    c.close()
    assert bystander.execute("select 'still here'").fetchone() == ("still here",)
    assert engine_start(bystander) == started


# ----------------------------------------------------------------- fuzzing --

# Statements the fuzzer's query messages draw from besides random text: they
# move the session through its states (transaction, COPY, LISTEN, errors).
SQL = [
    "select 1", "begin", "commit", "rollback", "select 1/0", "listen fuzz", "notify fuzz, 'x'",
    "unlisten *", "copy (select 1) to stdout", "create temp table if not exists tt (x int)",
    "copy tt from stdin", "prepare p1 as select $1::int", "execute p1(1)", "deallocate all",
    "select pg_advisory_lock(1)", "set work_mem = '8MB'", "reset all", "select repeat('x', 10000)",
]

names = st.sampled_from(["", "s1", "p1", "_pg3_0"]) | st.text(max_size=8)
texts = st.sampled_from(SQL) | st.text(max_size=40)
int16 = st.integers(0, 6)


def _values(draw, n):
    out = b""
    for _ in range(n):
        value = draw(st.none() | st.binary(max_size=8))
        out += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return out


@st.composite
def well_formed(draw, kind):
    """A structurally valid body for a message type (its content may still be nonsense)."""
    if kind in "Qf":
        return cstr(draw(texts))
    if kind == "P":
        n = draw(int16)
        return cstr(draw(names)) + cstr(draw(texts)) + struct.pack("!h", n) + b"".join(
            struct.pack("!i", draw(st.sampled_from([0, 23, 25, 16, 1184, 99999]))) for _ in range(n))
    if kind == "B":
        nfmt, npar, nres = draw(int16), draw(int16), draw(int16)
        fmts = b"".join(struct.pack("!h", draw(st.integers(0, 1))) for _ in range(nfmt))
        res = b"".join(struct.pack("!h", draw(st.integers(0, 1))) for _ in range(nres))
        return (cstr(draw(names)) + cstr(draw(names)) + struct.pack("!h", nfmt) + fmts
                + struct.pack("!h", npar) + _values(draw, npar) + struct.pack("!h", nres) + res)
    if kind in "DC":
        return draw(st.sampled_from([b"S", b"P"])) + cstr(draw(names))
    if kind == "E":
        return cstr(draw(names)) + struct.pack("!i", draw(st.integers(-1, 3)))
    if kind == "F":
        nargs = draw(int16)
        return (struct.pack("!i", draw(st.sampled_from([0, 1242, 2114, 99999])))  # 0, boolin, ...
                + struct.pack("!h", 1) + struct.pack("!h", draw(st.integers(0, 1)))
                + struct.pack("!h", nargs) + _values(draw, nargs) + struct.pack("!h", 0))
    if kind == "d":
        return draw(st.binary(max_size=32))
    return b""  # S, H, c, p


@st.composite
def frontend_message(draw):
    kind = draw(st.sampled_from(list("QPBDECSHFdcfp")) | st.sampled_from(list("@aZz\x00\xff")))
    # Half of them well-formed, so that many cases reach the engine itself.
    how = draw(st.sampled_from(["well-formed"] * 3 + ["truncated", "random", "bad-length"]))
    if how == "random" or kind not in "QPBDECSHFdcfp":
        body = draw(st.binary(max_size=48))
    else:
        body = draw(well_formed(kind))
        if how == "truncated" and body:
            body = body[:draw(st.integers(0, len(body) - 1))]
    raw_kind = kind.encode("latin1")
    if how == "bad-length":
        return raw_kind + struct.pack("!i", draw(st.sampled_from([-1, 0, 3, 2**31 - 1]))) + body
    return message(raw_kind, body)


class Fuzzer:
    """One raw connection reused for as many cases as the server lets it live."""

    def __init__(self, server):
        self.server = server
        self.conn = None
        self.cases = 0
        self.connections = 0
        self.fatal_codes: set[str] = set()

    def run(self, messages: list[bytes]) -> None:
        self.cases += len(messages)
        if self.conn is None:
            self.conn = raw(self.server)
            self.connections += 1
        marker = f"m{self.cases}"
        try:
            # Whatever the messages did, a Sync and a query bring a live
            # connection back to a known state: out of COPY, out of any transaction.
            self.conn.send(b"".join(messages) + SYNC + query("rollback") + query(f"select '{marker}'"))
            self._read_to(marker)
        except Closed:
            self.conn.close()
            self.conn = None

    def _read_to(self, marker: str) -> None:
        seen = False
        while True:
            kind, body = self.conn.read_message()
            if kind == b"G":  # COPY FROM STDIN started by a fuzzed query: end it
                self.conn.send(message(b"c"))
            elif kind == b"E" and error_fields(body).get("S") == "FATAL":
                self.fatal_codes.add(error_fields(body)["C"])
            elif kind == b"D" and marker.encode() in body:
                seen = True
            elif kind == b"Z" and seen:
                return


@pytest.fixture(scope="module")
def fuzzer(server):
    f = Fuzzer(server)
    yield f
    if f.conn:
        f.conn.close()


@settings(max_examples=2500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(frontend_message(), min_size=2, max_size=3))
def _fuzz_case(fuzzer, messages):
    fuzzer.run(messages)


def test_random_and_truncated_messages_never_restart_the_engine(server, bystander, fuzzer):
    started = engine_start(bystander)
    _fuzz_case(fuzzer)
    assert fuzzer.cases >= 5000
    # Malformed messages did end connections, and only with a protocol error.
    assert fuzzer.connections > 1
    assert fuzzer.fatal_codes <= {"08P01", "0A000"}
    assert bystander.execute("select 'bystander answers'").fetchone() == ("bystander answers",)
    assert engine_start(bystander) == started
    with psycopg.connect(server.url, autocommit=True) as fresh:
        assert fresh.execute("select count(*) from generate_series(1, 10)").fetchone() == (10,)


# ----------------------------------------------------- idle in transaction --

def test_idle_transaction_is_rolled_back_and_ended_after_the_timeout(server, bystander):
    bystander.execute("create table if not exists idle_rows (x int)")
    bystander.execute("truncate idle_rows")
    idle = psycopg.connect(server.url)
    idle.execute("insert into idle_rows values (1)")  # opens a transaction, then goes quiet
    answered = []

    def second_client():
        with psycopg.connect(server.url, autocommit=True) as other:
            answered.append(other.execute("select count(*) from idle_rows").fetchone()[0])

    t = threading.Thread(target=second_client)
    t.start()
    t.join(IDLE_TIMEOUT_S + 60)  # a hang guard, not a timing assertion
    assert answered == [0], "the second client was not served after the idle client's timeout"
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout, match="idle-in-transaction timeout"):
        idle.execute("select 1")
    idle.close()
    assert bystander.execute("select count(*) from idle_rows").fetchone() == (0,)


def test_busy_transaction_is_not_ended(server, bystander):
    """Only idleness counts: a transaction that keeps sending outlives the timeout."""
    import time

    with psycopg.connect(server.url) as busy:
        deadline = time.monotonic() + IDLE_TIMEOUT_S * 2
        n = 0
        while time.monotonic() < deadline:
            n += busy.execute("select 1").fetchone()[0]
            time.sleep(0.2)
        busy.commit()
        assert n > 0


# ----------------------------------------------------------------- memory --

def test_large_copy_is_spooled_and_loads_exactly(server, bystander):
    """About 100 MB of COPY data: spooled to a file and read by the engine from there."""
    rows = 400_000
    bystander.execute("drop table if exists big_copy")
    bystander.execute("create table big_copy (n int, label text)")
    pad = "y" * 240
    with psycopg.connect(server.url, autocommit=True) as c, c.cursor() as cur, \
            cur.copy("copy big_copy (n, label) from stdin") as copy:
        for i in range(rows):
            copy.write(f"{i}\t{pad}{i}\n")
    got = bystander.execute(
        "select count(*), sum(n), sum(length(label)), count(distinct label) from big_copy").fetchone()
    digits = sum(len(str(i)) for i in range(rows))
    assert got == (rows, rows * (rows - 1) // 2, rows * len(pad) + digits, rows)
    spool = server.settings.pgdata / "rmp_copy"
    assert list(spool.iterdir()) == []  # the spooled file is removed after the COPY
    bystander.execute("drop table big_copy")


# ------------------------------------------------------------- exposure --

def test_non_loopback_host_is_refused_without_allow_remote(tmp_path):
    import subprocess

    from rmp.embedded import start
    from rmp.errors import EngineError
    from rmp.settings import EMBEDDED_DIR, Settings

    settings = Settings(database_url=None, home=tmp_path, data_dir=None, host="0.0.0.0", port=5790,
                        allow_remote=False)
    with pytest.raises(EngineError, match="not a loopback address"):
        start(settings)
    out = subprocess.run(["node", str(EMBEDDED_DIR / "server.mjs"), "--host", "0.0.0.0", "--port", "5790",
                          "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0" in out.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything
