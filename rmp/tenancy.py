"""Tenant grants: which database login sees which organizations.

``grant`` makes a login a member of ``rmp_analyst`` and records the
organization in ``tenancy.tenant_grants``; the row-level security policies
and ``tenant.*`` views (sql/idempotent/tenant-security.sql) then show it that
organization and all its sub-organizations. ``revoke`` removes the grant and,
with the last one gone, the membership. Every change lands in
``tenancy.audit_log`` through the table's trigger.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from rmp.errors import UserError
from rmp.identifiers import check_login

ANALYST_ROLE = "rmp_analyst"
GROUP_ROLES = ("rmp_ingest", "rmp_analyst", "rmp_admin")
MAX_NAME_CHARS = 1000


class TenantError(UserError):
    """An unknown organization or login, or a grant the database refused."""


@dataclass(frozen=True)
class Organization:
    id: int
    slug: str
    name: str


@dataclass(frozen=True)
class GrantRow:
    login: str
    organization: Organization
    visible_organizations: int   # the organization and all its descendants
    granted_by: str


def _check_text(what: str, value: str) -> None:
    # NUL cannot be stored in PostgreSQL text and a megabyte-long name is no name.
    if "\x00" in value:
        raise TenantError(f"{what} contains a NUL byte")
    if len(value) > MAX_NAME_CHARS:
        raise TenantError(f"{what} is {len(value):,} characters long (at most {MAX_NAME_CHARS:,})")


def find_organization(conn: psycopg.Connection, ref: str) -> Organization:
    """An organization by slug, exact name or numeric id."""
    _check_text("organization", ref)
    row = conn.execute(
        "select id, slug, name from tenancy.organizations"
        " where slug = %(ref)s or name = %(ref)s or id::text = %(ref)s"
        " order by (slug = %(ref)s) desc, (name = %(ref)s) desc limit 1",
        {"ref": ref},
    ).fetchone()
    if row is None:
        raise TenantError(f"no organization {ref[:60]!r} (give its slug, name or id)")
    return Organization(*row)


def _require_login(conn: psycopg.Connection, login: str) -> None:
    check_login(login)
    row = conn.execute("select rolsuper from pg_roles where rolname = %s", (login,)).fetchone()
    if row is None:
        raise TenantError(f"no database role {login!r}; create it first (CREATE ROLE {login} LOGIN PASSWORD ...)")
    # A NOLOGIN role is fine: visibility follows current_user, so a pooled or
    # API connection that does SET [LOCAL] ROLE to it sees its organizations.
    if login in GROUP_ROLES:
        raise TenantError(f"role {login!r} is a platform group role; grant organizations to a login or tenant role")
    (is_super,) = row
    if is_super:
        raise TenantError(f"role {login!r} is a superuser and sees every organization; a grant would mean nothing")


def _db_error(exc: psycopg.Error) -> TenantError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return TenantError(first)


def grant(conn: psycopg.Connection, organization: str, login: str) -> tuple[Organization, bool]:
    """Give ``login`` read access to ``organization`` and its sub-organizations.

    Returns the organization and whether the grant is new (granting twice is harmless)."""
    try:
        with conn.transaction():
            _require_login(conn, login)
            org = find_organization(conn, organization)
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(ANALYST_ROLE), sql.Identifier(login)))
            cur = conn.execute(
                "insert into tenancy.tenant_grants (login, organization_id) values (%s, %s)"
                " on conflict do nothing",
                (login, org.id),
            )
            return org, cur.rowcount == 1
    except psycopg.Error as exc:
        raise _db_error(exc) from exc


def revoke(conn: psycopg.Connection, organization: str, login: str) -> tuple[Organization, bool]:
    """Take ``organization`` away from ``login``; returns whether a grant was removed."""
    check_login(login)
    try:
        with conn.transaction():
            org = find_organization(conn, organization)
            removed = conn.execute(
                "delete from tenancy.tenant_grants where login = %s and organization_id = %s", (login, org.id)
            ).rowcount == 1
            left = conn.execute("select count(*) from tenancy.tenant_grants where login = %s", (login,)).fetchone()[0]
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (login,)).fetchone()
            if left == 0 and exists:
                conn.execute(sql.SQL("revoke {} from {}").format(sql.Identifier(ANALYST_ROLE), sql.Identifier(login)))
            return org, removed
    except psycopg.Error as exc:
        raise _db_error(exc) from exc


def list_grants(conn: psycopg.Connection, login: str | None = None) -> list[GrantRow]:
    """Grants (of one login, or all the caller may see), with how many organizations each opens."""
    if login is not None:
        check_login(login)
    rows = conn.execute(
        """
        with recursive reach(login, root_id, id) as (
            select g.login, g.organization_id, g.organization_id from tenancy.tenant_grants g
            where %(login)s::name is null or g.login = %(login)s::name
            union
            select r.login, r.root_id, o.id
            from reach r join tenancy.organizations o on o.parent_id = r.id
        )
        select g.login, o.id, o.slug, o.name,
               (select count(*) from reach r where r.login = g.login and r.root_id = g.organization_id),
               g.granted_by
        from tenancy.tenant_grants g
        join tenancy.organizations o on o.id = g.organization_id
        where %(login)s::name is null or g.login = %(login)s::name
        order by g.login, o.slug
        """,
        {"login": login},
    ).fetchall()
    return [GrantRow(r[0], Organization(r[1], r[2], r[3]), r[4], r[5]) for r in rows]


def visible_organization_ids(conn: psycopg.Connection) -> list[int]:
    """The organizations the role in effect (current_user) sees: what its RLS policies use."""
    return sorted(r[0] for r in conn.execute("select tenancy.visible_organization_ids()"))
