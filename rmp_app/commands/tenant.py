"""`rmp tenant grant|revoke|list`: which login sees which organizations."""

from __future__ import annotations

import click


def _connect():
    from rmp import db

    return db.connect(db.database_url(), autocommit=True)


@click.group()
def tenant() -> None:
    """Give database logins access to one organization and its sub-organizations.

    A granted login is a member of rmp_analyst and sees, through row-level
    security and the tenant.* views, only the organizations granted to it and
    their descendants (docs/security.md). Needs a superuser connection (or a
    role holding ADMIN OPTION on rmp_analyst).
    """


def _change(action: str, organization: str, login: str):
    """tenancy.grant or tenancy.revoke on a connection of their own: (organization, changed)."""
    from rmp import tenancy

    with _connect() as conn:
        return getattr(tenancy, action)(conn, organization, login)


@tenant.command()
@click.argument("organization")
@click.argument("login")
def grant(organization: str, login: str) -> None:
    """Let LOGIN read ORGANIZATION (slug, name or id) and its sub-organizations."""
    org, new = _change("grant", organization, login)
    state = "granted" if new else "already granted"
    click.echo(f"{login}: {state} organization {org.slug} (id {org.id}) and its sub-organizations")


@tenant.command()
@click.argument("organization")
@click.argument("login")
def revoke(organization: str, login: str) -> None:
    """Take ORGANIZATION away from LOGIN (with its last grant, rmp_analyst membership too)."""
    org, removed = _change("revoke", organization, login)
    click.echo(f"{login}: {'revoked' if removed else 'had no grant on'} organization {org.slug} (id {org.id})")


@tenant.command(name="list")
@click.option("--login", help="Only this login's grants.")
def list_(login: str | None) -> None:
    """Grants: login, organization, and how many organizations (itself + descendants) it opens."""
    from rich.console import Console
    from rich.table import Table

    from rmp import tenancy

    with _connect() as conn:
        rows = tenancy.list_grants(conn, login)
    if not rows:
        click.echo("no tenant grants")
        return
    table = Table("login", "organization", "id", "visible organizations", "granted by")
    for r in rows:
        table.add_row(r.login, r.organization.slug, str(r.organization.id), str(r.visible_organizations), r.granted_by)
    Console(width=120).print(table)
