"""Bearer tokens: each stands for one database role (tenancy.api_tokens, revision 0006).

A token is ``rmp_`` + 43 URL-safe characters (256 random bits). Only its
SHA-256 is stored and sent to the database, so neither the table nor a
statement log holds a usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from rmp.errors import UserError
from rmp.identifiers import check_login
from rmp.tenancy import GROUP_ROLES

TOKEN_PREFIX = "rmp_"
SHOWN_CHARS = 12   # what `token list` shows of a token: "rmp_" + 8


class TokenError(UserError):
    """An unknown role or token, or a role a token may not stand for."""


@dataclass(frozen=True)
class TokenRow:
    id: int
    prefix: str
    role_name: str
    label: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: psycopg.Connection, role: str, label: str | None = None,
           grant_to: str | None = None) -> tuple[int, str]:
    """A new token for ``role``; returns (id, token). The token is not stored and cannot be shown again.

    ``grant_to``: the API's database login, made a member of ``role`` so that
    it may ``SET ROLE`` to it (not needed when the API connects as a superuser)."""
    check_login(role)
    row = conn.execute("select rolsuper from pg_roles where rolname = %s", (role,)).fetchone()
    if row is None:
        raise TokenError(f"no database role {role!r}; create it and grant it organizations first "
                         f"(CREATE ROLE {role} NOLOGIN; rmp tenant grant ORG {role})")
    if row[0]:
        raise TokenError(f"role {role!r} is a superuser: a token for it would bypass row-level security")
    if role in GROUP_ROLES:
        raise TokenError(f"role {role!r} is a platform group role; give a token a tenant role")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        if grant_to is not None:
            check_login(grant_to)
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(role), sql.Identifier(grant_to)))
        token_id = conn.execute(
            "insert into tenancy.api_tokens (token_sha256, prefix, role_name, label) values (%s, %s, %s, %s)"
            " returning id",
            (digest(token), token[:SHOWN_CHARS], role, label),
        ).fetchone()[0]
    return token_id, token


def revoke(conn: psycopg.Connection, ref: str) -> TokenRow:
    """Revoke a token by id, by its shown prefix or by the token itself."""
    if len(ref) > 200 or "\x00" in ref:
        raise TokenError("give a token id, its prefix (rmp_xxxxxxxx) or the token")
    rows = conn.execute(
        "update tenancy.api_tokens set revoked_at = coalesce(revoked_at, now())"
        " where id::text = %(ref)s or prefix = %(ref)s or token_sha256 = %(sha)s"
        " returning id, prefix, role_name, label, created_by, created_at, revoked_at",
        {"ref": ref, "sha": digest(ref)},
    ).fetchall()
    if not rows:
        raise TokenError(f"no token {ref[:20]!r} (give its id or prefix from `rmp api token list`)")
    if len(rows) > 1:
        conn.rollback()
        raise TokenError(f"{ref!r} matches {len(rows)} tokens; give the id")
    conn.commit()
    return TokenRow(*rows[0])


def list_tokens(conn: psycopg.Connection) -> list[TokenRow]:
    return [TokenRow(*r) for r in conn.execute(
        "select id, prefix, role_name, label, created_by, created_at, revoked_at"
        " from tenancy.api_tokens order by id")]


def role_for(conn: psycopg.Connection, token: str) -> str | None:
    """The role a live token stands for (None: unknown or revoked). Reads no metric or tenant row."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    return conn.execute("select tenancy.api_token_role(%s)", (digest(token),)).fetchone()[0]
