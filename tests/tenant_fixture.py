"""The small tenant fixture shared by the security and API tests: organization A
with sub-organization A1, and B, one server each (4 cores, 8000 bytes of memory,
100000 of disk), and the helpers to refresh aggregates and drop test roles."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

ORGANIZATIONS = ("A", "A1", "B")


def organizations_with_servers(conn: psycopg.Connection) -> dict[str, int]:
    """ids["A"], ["A1"] (child of A), ["B"], and ids["server_A"] etc. (server web-a, web-a1, web-b)."""
    q = conn.execute
    ids: dict[str, int] = {}
    for key, parent in (("A", None), ("A1", "A"), ("B", None)):
        ids[key] = q("insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) returning id",
                     (f"Org {key}", f"org-{key.lower()}", ids.get(parent))).fetchone()[0]
        ids[f"server_{key}"] = q(
            "insert into tenancy.servers (organization_id, name, cpu_cores, memory_total_bytes, disk_total_bytes)"
            " values (%s, %s, 4, 8000, 100000) returning id", (ids[key], f"web-{key.lower()}")).fetchone()[0]
    return ids


def refresh_aggregates(conn: psycopg.Connection, views: Iterable[str]) -> None:
    """Refresh each continuous aggregate metrics.<view> over all time."""
    for view in views:
        conn.execute(sql.SQL("call refresh_continuous_aggregate({}, null, null)").format(
            sql.Literal(f"metrics.{view}")))


def create_roles(conn: psycopg.Connection, roles: Iterable[str], *, login: bool) -> None:
    """Create each role afresh (a previous run's is dropped first, with its grants)."""
    drop_roles(conn, roles)
    for role in roles:
        conn.execute(sql.SQL("create role {} {}").format(sql.Identifier(role), sql.SQL("login" if login else "nologin")))


def drop_roles(conn: psycopg.Connection, roles: Iterable[str]) -> None:
    """Drop each role that exists, with what it owns (grants included)."""
    for role in roles:
        if conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
