"""The analyst queries in ``sql/queries/``, runnable in psql and from Python.

The files use psql variables (``:server_id``, ``:'since'``) so an analyst can
run them with ``psql -v server_id=1 -f ...``. ``run()`` turns those into
psycopg named parameters, so values are always passed as parameters, never
formatted into the SQL.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row

from rmp.errors import UserError
from rmp.settings import SQL_DIR

QUERIES_DIR = SQL_DIR / "queries"

# :'name' (psql quotes the value) or :name (inserted as is); not the '::' of a cast.
_PSQL_VARIABLE = re.compile(r"(?<![:\w]):(?:'(\w+)'|([A-Za-z_]\w*))")


class QueryError(UserError):
    """An unknown query name or a missing variable."""


def names() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


def variables(name: str) -> set[str]:
    return {a or b for a, b in _PSQL_VARIABLE.findall(_text(name))}


def _text(name: str) -> str:
    path = QUERIES_DIR / f"{name}.sql"
    # Only the files listed here: a name like '../preinstall/001-tenancy' must not run other SQL.
    if name not in names() or not path.is_file():
        raise QueryError(f"no query {name!r} in {QUERIES_DIR} (have: {', '.join(names())})")
    return path.read_text()


def to_psycopg(text: str) -> str:
    """psql variables -> %(name)s placeholders; a literal % is doubled."""
    escaped = text.replace("%", "%%")
    return _PSQL_VARIABLE.sub(lambda m: f"%({m.group(1) or m.group(2)})s", escaped)


def run(conn: psycopg.Connection, name: str, **params: Any) -> list[tuple]:
    """Rows of query ``name`` with its psql variables bound to ``params``."""
    with _cursor(conn, name, params) as cur:
        return cur.fetchall()


def run_dicts(conn: psycopg.Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """The same rows as ``run``, each a dict keyed by column name."""
    with _cursor(conn, name, params, row_factory=dict_row) as cur:
        return cur.fetchall()


def _cursor(conn: psycopg.Connection, name: str, params: dict[str, Any], **kwargs: Any) -> psycopg.Cursor:
    text = _text(name)
    missing = variables(name) - params.keys()
    if missing:
        raise QueryError(f"query {name} needs {', '.join(sorted(missing))}")
    return conn.cursor(**kwargs).execute(to_psycopg(text), params)
