"""`rmp api serve` and `rmp api token create|revoke|list`: the metrics HTTP API (docs/api.md)."""

from __future__ import annotations

import ipaddress
import os

import click

from rmp.errors import UserError


class ApiError(UserError):
    """A listen address the API refuses."""


def _admin_connection():
    from rmp import db

    return db.connect(db.database_url())


@click.group()
def api() -> None:
    """Serve metrics over HTTP; manage the bearer tokens that authorize it.

    A token stands for one database role; each request runs under SET LOCAL
    ROLE to it, so the role's organization grants (`rmp tenant grant`) decide
    what the token sees.
    """


@api.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port to listen on.")
@click.option("--rate-limit", default=lambda: int(os.environ.get("RMP_API_RATE_LIMIT", "600")),
              show_default="600 or RMP_API_RATE_LIMIT", type=click.IntRange(1, 1_000_000),
              help="Requests per minute per token; more get 429 with Retry-After.")
@click.option("--allow-remote", is_flag=True,
              help="Listen on a non-loopback address (put TLS in front: tokens travel in headers).")
@click.option("--database-url", envvar="RMP_API_DATABASE_URL", default=None,
              help="Login the API connects as (default RMP_API_DATABASE_URL, else the read URL). "
                   "It must be able to SET ROLE to each token's role.")
def serve(host: str, port: int, rate_limit: int, allow_remote: bool, database_url: str | None) -> None:
    """Serve the API (OpenAPI docs at /docs) until interrupted."""
    import uvicorn

    from api.app import ApiSettings, create_app
    from rmp import db

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise ApiError(f"{host} is not a loopback address; pass --allow-remote to listen there")
    url = database_url or db.read_database_url()
    app = create_app(ApiSettings(url, rate_limit))
    click.echo(f"rmp api: http://{host}:{port}/docs ({rate_limit} requests/minute per token)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


@api.group()
def token() -> None:
    """Create, revoke and list bearer tokens (needs an admin connection: DATABASE_URL)."""


@token.command("create")
@click.argument("role")
@click.option("--label", default=None, help="A note shown by `token list`.")
@click.option("--grant-to", default=None, metavar="LOGIN",
              help="Make the API's login LOGIN a member of ROLE so it may SET ROLE to it.")
def create(role: str, label: str | None, grant_to: str | None) -> None:
    """Print a new token for database role ROLE (shown once; only its hash is stored)."""
    from api import tokens

    with _admin_connection() as conn:
        token_id, token_text = tokens.create(conn, role, label, grant_to)
    click.echo(f"token {token_id} for role {role} (keep it: it is not stored):", err=True)
    click.echo(token_text)


@token.command("revoke")
@click.argument("token_ref", metavar="ID|PREFIX|TOKEN")
def revoke(token_ref: str) -> None:
    """Revoke a token at once (its next request gets 401)."""
    from api import tokens

    with _admin_connection() as conn:
        row = tokens.revoke(conn, token_ref)
    click.echo(f"token {row.id} ({row.prefix}…, role {row.role_name}) revoked")


@token.command("list")
def list_() -> None:
    """Tokens with their role, prefix and state (never the token)."""
    from rich.console import Console
    from rich.table import Table

    from api import tokens

    with _admin_connection() as conn:
        rows = tokens.list_tokens(conn)
    table = Table("id", "prefix", "role", "label", "created", "state")
    for r in rows:
        table.add_row(str(r.id), r.prefix + "…", r.role_name, r.label or "", f"{r.created_at:%Y-%m-%d %H:%M}",
                      f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "live")
    Console().print(table)
