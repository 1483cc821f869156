"""The parent chain of tenancy.organizations never becomes a cycle, not even
when two transactions each move one organization under the other at once,
and it is at most 64 levels deep."""

from __future__ import annotations

import threading

import psycopg
import pytest

from rmp.db import is_embedded


def _orgs(conn: psycopg.Connection, *slugs: str) -> list[int]:
    return [conn.execute("insert into tenancy.organizations (name, slug) values (%s, %s) returning id",
                         (slug, slug)).fetchone()[0] for slug in slugs]


def _concurrent_swap(url: str, a: int, b: int, isolation: str) -> BaseException | None:
    """T1 puts a under b and holds its transaction open while T2 puts b under a; returns T2's error."""
    outcome: dict[str, BaseException | None] = {}
    with psycopg.connect(url) as t1, psycopg.connect(url) as t2:
        t2.execute(f"set session characteristics as transaction isolation level {isolation}")
        t2.commit()
        t1.execute("update tenancy.organizations set parent_id = %s where id = %s", (b, a))

        def second() -> None:
            try:
                # the snapshot of a repeatable-read transaction is taken here,
                # before T1 commits (the native server runs this at once)
                t2.execute("select count(*) from tenancy.organizations").fetchone()
                t2.execute("update tenancy.organizations set parent_id = %s where id = %s", (a, b))
                t2.commit()
                outcome["error"] = None
            except psycopg.Error as exc:
                t2.rollback()
                outcome["error"] = exc

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=1.0)      # T2 is now waiting on T1's hierarchy lock
        t1.commit()
        thread.join(timeout=60)
        assert not thread.is_alive()
    return outcome["error"]


def _parents(conn: psycopg.Connection, *ids: int) -> list:
    return [conn.execute("select parent_id from tenancy.organizations where id = %s", (i,)).fetchone()[0]
            for i in ids]


def test_two_concurrent_parent_updates_cannot_make_a_cycle(db, migrated_url):
    a, b = _orgs(db, "swap-a", "swap-b")
    error = _concurrent_swap(migrated_url, a, b, "read committed")
    assert isinstance(error, psycopg.errors.CheckViolation)
    assert "would make a cycle" in str(error)
    assert _parents(db, a, b) == [b, None]


def test_concurrent_parent_update_under_repeatable_read_fails_to_serialize(db, migrated_url):
    if is_embedded(db):
        pytest.skip("the embedded engine runs one client transaction at a time: no snapshot can predate T1's commit")
    a, b = _orgs(db, "rr-a", "rr-b")
    error = _concurrent_swap(migrated_url, a, b, "repeatable read")
    assert isinstance(error, psycopg.errors.SerializationFailure)
    assert _parents(db, a, b) == [b, None]


def test_a_cycle_is_refused_at_any_depth(db):
    a, b, c = _orgs(db, "cyc-a", "cyc-b", "cyc-c")
    db.execute("update tenancy.organizations set parent_id = %s where id = %s", (a, b))
    db.execute("update tenancy.organizations set parent_id = %s where id = %s", (b, c))
    with pytest.raises(psycopg.errors.CheckViolation, match="would make a cycle"):
        db.execute("update tenancy.organizations set parent_id = %s where id = %s", (c, a))
    # clearing a parent or changing another column takes no lock and is fine
    db.execute("update tenancy.organizations set name = 'renamed' where id = %s", (c,))
    db.execute("update tenancy.organizations set parent_id = null where id = %s", (c,))
    assert _parents(db, a, b, c) == [None, a, None]


def test_parent_chain_is_at_most_64_levels(db):
    ids = _orgs(db, *(f"depth-{i}" for i in range(66)))
    for parent, child in zip(ids[:63], ids[1:64], strict=True):
        db.execute("update tenancy.organizations set parent_id = %s where id = %s", (parent, child))
    # ids[63] has 63 ancestors; a 65th level is refused
    with pytest.raises(psycopg.errors.CheckViolation, match="64 or more levels"):
        db.execute("update tenancy.organizations set parent_id = %s where id = %s", (ids[63], ids[64]))
    assert db.execute("select count(*) from tenancy.organizations where parent_id is not null").fetchone()[0] == 63
