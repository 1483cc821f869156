"""Rendering: JSON or CSV by the Accept header, ETag and caching headers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response

JSON = "application/json"
CSV = "text/csv"


def media_type(request: Request) -> str:
    """JSON unless the client prefers CSV; 406 when it accepts neither."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return JSON
    offered: list[tuple[float, str]] = []
    for part in accept.split(","):
        kind, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        offered.append((q, kind.strip().lower()))
    for q, kind in sorted(offered, key=lambda o: -o[0]):
        if q <= 0:
            continue
        if kind in (CSV, "text/*"):
            return CSV
        if kind in (JSON, "application/*", "*/*"):
            return JSON
    raise HTTPException(406, "offered: application/json, text/csv")


def plain(value: Any) -> Any:
    """A database value as JSON has it: timestamps ISO 8601, integral numerics as integers."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def records(columns: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    return [{c: plain(v) for c, v in zip(columns, r, strict=True)} for r in rows]


def render(request: Request, columns: list[str], rows: list[tuple], envelope: dict[str, Any] | None, *,
           key: str = "points", single: bool = False, refreshed_at: datetime | None = None,
           max_age: int | None = None, links: dict[str, str] | None = None,
           points_json: str | None = None) -> Response:
    """The response for ``rows``: JSON (``envelope`` + rows under ``key``, or one object when
    ``single``) or CSV (header + rows), with ETag, Cache-Control and Last-Modified.
    ``points_json``: the rows already rendered as a JSON array (by PostgreSQL)."""
    kind = media_type(request)
    if kind == CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if v is None else plain(v) for v in r])
        body = out.getvalue().encode()
    elif points_json is not None:
        head = json.dumps(envelope or {}, separators=(",", ":"), default=plain)
        body = (head[:-1] + ("," if len(head) > 2 else "") + f'"{key}":' + points_json + "}").encode()
    else:
        data = records(columns, rows)
        payload = data[0] if single else {**(envelope or {}), key: data}
        body = json.dumps(payload, separators=(",", ":"), default=plain).encode()
    etag = '"' + hashlib.sha256(kind.encode() + b"\0" + body).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        # private: a token's answer is for that token's role only
        "Cache-Control": f"private, max-age={max_age}" if max_age is not None else "private, no-cache",
        "Vary": "Accept, Authorization",
    }
    if refreshed_at is not None:
        headers["Last-Modified"] = format_datetime(refreshed_at.astimezone(UTC), usegmt=True)
    if links:
        headers["Link"] = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=f"{kind}; charset=utf-8" if kind == CSV else kind, headers=headers)
