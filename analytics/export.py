"""CSV and JSON exports of results and aggregates, chosen from an allow-list.

A user picks a name from rmp.catalog.EXPORTS; only the relation and time column mapped to
it reach SQL (as Identifiers), and filters are parameters. Aggregates are read
through the tenant.* views, so an analyst (rmp_analyst, no access to schema
metrics) exports its own organizations' rows and an admin everything. Files are written
to a temporary name and renamed, so a failed export leaves no partial file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rmp.catalog import EXPORTS
from rmp.errors import UserError

FORMATS = ("csv", "json")


class ExportError(UserError):
    """An export name, format or output the user gave cannot be used."""


def _plain(v: Any) -> Any:
    """A JSON-safe value; floats keep every digit (repr round-trips exactly)."""
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def fetch(conn: psycopg.Connection, name: str, since: datetime | None = None, until: datetime | None = None,
          entity_id: int | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and rows of an allow-listed relation, filtered by time and entity."""
    spec = EXPORTS.get(name)
    if spec is None:
        raise ExportError(f"cannot export {name!r}; choose from {', '.join(EXPORTS)}")
    if entity_id is not None and spec.entity_column is None:
        raise ExportError(f"{name} has no entity column to filter by --id")
    time_col = sql.Identifier(spec.time_column)
    entity = sql.Identifier(spec.entity_column) if spec.entity_column else sql.SQL("null")
    query = sql.SQL(
        "select * from {rel} where (%(since)s::timestamptz is null or {t} >= %(since)s)"
        " and (%(until)s::timestamptz is null or {t} <= %(until)s)"
        " and (%(id)s::bigint is null or {e} = %(id)s) order by {order}"
    ).format(rel=sql.Identifier(spec.schema, spec.relation), t=time_col, e=entity,
             order=sql.SQL(", ").join(sql.Identifier(c) for c in spec.order))
    try:
        with conn.cursor() as cur:
            cur.execute(query, {"since": since, "until": until, "id": entity_id})
            return [d.name for d in cur.description], cur.fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise ExportError(f"{spec.schema}.{spec.relation} does not exist yet"
                          f"{' (run `rmp dbt build`)' if spec.schema == 'marts' else ''}") from exc


def render(columns: list[str], rows: list[tuple], fmt: str) -> str:
    """CSV (header row; jsonb cells as JSON text; null as empty) or a JSON array of objects."""
    if fmt == "json":
        return json.dumps([{c: _plain(v) for c, v in zip(columns, r, strict=True)} for r in rows], indent=1) + "\n"
    if fmt != "csv":
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if v is None else json.dumps(v) if isinstance(v, list | dict)
                    else repr(v) if isinstance(v, float) else _plain(v) for v in r])
    return buf.getvalue()


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(conn: psycopg.Connection, name: str, fmt: str, out: Path | None, **filters: Any) -> tuple[int, str]:
    """Export `name` as `fmt` to `out` (None: return the text). Returns (rows, text)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    columns, rows = fetch(conn, name, **filters)
    text = render(columns, rows, fmt)
    if out is not None:
        write_atomically(out, text)
    return len(rows), text
