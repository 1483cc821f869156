"""Row validation before COPY: types, ranges, known entities, zoned timestamps.

A row either becomes a tuple in the staging column order or a ``Rejection``
naming its line, field and reason; one bad row never affects the others.
Entities (servers, sites, metric types) are resolved with one catalog query
per load, cached in ``Resolver``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from ingest.coltypes import ColType, col_type, out_of_range
from ingest.errors import IngestFileError
from ingest.formats import Record, raw_text
from ingest.targets import GENERATED, Column, Target
from rmp import catalog


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    field: str
    reason: str
    raw: str


class BadValue(ValueError):
    """A field failed validation; the message is the quarantine reason."""


# ---------------------------------------------------------------- entities

class Resolver:
    """Servers, sites and metric types by id or name, loaded once per load."""

    def __init__(self, conn: psycopg.Connection, target: Target):
        self.ids: set[int] = set()
        self.by_org_name: dict[tuple[str, str], int] = {}
        self.by_name: dict[str, int | None] = {}   # None: name used in several organizations
        self.metric_ids: set[int] = set()
        self.metric_by_name: dict[str, int] = {}
        # Security-definer functions (sql/idempotent/tenant-security.sql): the
        # rmp_ingest role may resolve names but not read tenancy tables.
        if target.table == "site_usage":
            rows = conn.execute(
                "select id, name, organization_id, organization_slug, organization_name from metrics.ingest_sites()"
            ).fetchall()
        else:
            rows = conn.execute(
                "select id, name, organization_id, organization_slug, organization_name from metrics.ingest_servers()"
            ).fetchall()
        for eid, name, org_id, slug, org_name in rows:
            self.ids.add(eid)
            for key in {str(org_id), slug, org_name} - {None, "None"}:
                self.by_org_name[(key, name)] = eid
            self.by_name[name] = None if name in self.by_name else eid
        # scaling events: the organization of each server, and organizations by id, slug or name
        self.server_org: dict[int, int] = {eid: org_id for eid, _, org_id, _, _ in rows}
        self.org_ids: set[int] = set()
        self.org_by_name: dict[str, int] = {}
        if target.table == "scaling_events":
            for oid, slug, name in conn.execute("select id, slug, name from metrics.ingest_organizations()"):
                self.org_ids.add(oid)
                self.org_by_name[name] = oid
                self.org_by_name[slug] = oid
        if target.table == "metric_samples":
            for mid, name in conn.execute("select id, name from metrics.metric_types"):
                self.metric_ids.add(mid)
                self.metric_by_name[name] = mid

    def entity(self, kind: str, eid: Any, name: Any, org: Any) -> int:
        if (known := _known_id(eid, self.ids, kind)) is not None:
            return known
        if name in (None, ""):
            raise BadValue(f"missing: give {kind}_id or {kind}")
        name = str(name)
        if org not in (None, ""):
            found = self.by_org_name.get((str(org), name))
            if found is None:
                raise BadValue(f"unknown {kind} {name!r} in organization {org!r}")
            return found
        if name not in self.by_name:
            raise BadValue(f"unknown {kind} {name!r}")
        found = self.by_name[name]
        if found is None:
            raise BadValue(f"{kind} name {name!r} exists in several organizations; add an organization column")
        return found

    def organization(self, oid: Any, ref: Any) -> int:
        """An organization by id (organization_id) or by slug, name or id (organization)."""
        if (known := _known_id(oid, self.org_ids, "organization")) is not None:
            return known
        ref = str(ref)
        if ref in self.org_by_name:
            return self.org_by_name[ref]
        if ref.isdigit() and int(ref) in self.org_ids:
            return int(ref)
        raise BadValue(f"unknown organization {ref!r}")

    def metric_type(self, mid: Any, name: Any) -> int:
        if (known := _known_id(mid, self.metric_ids, "metric type")) is not None:
            return known
        if name in (None, ""):
            raise BadValue("missing: give metric_type_id or metric_type")
        if str(name) not in self.metric_by_name:
            raise BadValue(f"unknown metric type {name!r}")
        return self.metric_by_name[str(name)]


def _known_id(raw: Any, known: set[int], what: str) -> int | None:
    """The id a cell gives, or None when it is empty (the row names the entity instead)."""
    if raw in (None, ""):
        return None
    value = parse_int(raw)
    if value not in known:
        raise BadValue(f"unknown {what} id {value}")
    return value


# ---------------------------------------------------------------- scalar parsers

def parse_int(v: Any) -> int:
    if isinstance(v, bool):
        raise BadValue(f"expected an integer, found {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise BadValue(f"expected an integer, found {v!r}")
    s = str(v).strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        raise BadValue(f"expected an integer, found {s!r}") from None
    if math.isfinite(f) and f.is_integer():
        return int(f)
    raise BadValue(f"expected an integer, found {s!r}")


def parse_float(v: Any) -> float:
    if isinstance(v, bool):
        raise BadValue(f"expected a number, found {v!r}")
    if isinstance(v, float | int):
        f = float(v)
    else:
        try:
            f = float(str(v).strip())
        except ValueError:
            raise BadValue(f"expected a number, found {str(v)!r}") from None
    if not math.isfinite(f):
        raise BadValue(f"expected a finite number, found {v!r}")
    return f


def parse_decimal(v: Any) -> Decimal:
    f = parse_float(v)   # rejects bools, NaN and infinities first
    try:
        return Decimal(str(v).strip()) if isinstance(v, str) else Decimal(repr(f))
    except InvalidOperation:
        raise BadValue(f"expected a number, found {v!r}") from None


_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


def parse_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise BadValue(f"expected true/false, found {v!r}")


def make_timestamp_parser(assume_utc: bool) -> Callable[[Any], datetime]:
    def parse_ts(v: Any) -> datetime:
        if isinstance(v, datetime):
            ts = v
        else:
            s = str(v).strip()
            try:
                ts = datetime.fromisoformat(s)
            except ValueError:
                raise BadValue(f"expected an ISO 8601 timestamp, found {s!r}") from None
        if ts.tzinfo is None:
            if not assume_utc:
                raise BadValue("timestamp has no time zone (add one, e.g. +00:00, or pass --assume-utc)")
            ts = ts.replace(tzinfo=UTC)
        return ts
    return parse_ts


def _reject_constant(name: str) -> Any:
    raise BadValue(f"JSON contains {name}, which jsonb cannot store")


def _find_nul(obj: Any) -> bool:
    if isinstance(obj, str):
        return "\x00" in obj
    if isinstance(obj, dict):
        return any(_find_nul(k) or _find_nul(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(map(_find_nul, obj))
    return False


def parse_json(v: Any) -> Jsonb:
    """A JSON object that jsonb can hold: no NaN/Infinity, no \\u0000, valid Unicode."""
    if isinstance(v, dict):
        obj = v
    else:
        try:
            obj = json.loads(v, parse_constant=_reject_constant)
        except BadValue:
            raise
        except (TypeError, ValueError, RecursionError):
            raise BadValue(f"expected a JSON object, found {v!r}") from None
    if not isinstance(obj, dict):
        raise BadValue(f"expected a JSON object, found {v!r}")
    try:
        json.dumps(obj, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except ValueError as exc:   # NaN/Infinity (also from 1e400), lone surrogates
        raise BadValue(f"JSON that jsonb cannot store: {exc}") from None
    except (TypeError, RecursionError):
        raise BadValue(f"expected a JSON object, found {v!r}") from None
    if _find_nul(obj):
        raise BadValue("JSON contains \\u0000, which jsonb cannot store")
    return Jsonb(obj)


def parse_text(v: Any) -> str:
    return str(v)


def _bounded(parse: Callable[[Any], Any], t: ColType) -> Callable[[Any], Any]:
    """``parse``, then refuse what the column's type cannot hold (int4/int8/float4 bounds)."""
    if t.lo is None:
        return parse

    def check(v: Any) -> Any:
        x = parse(v)
        reason = out_of_range(x, t)
        if reason:
            raise BadValue(reason)
        return x
    return check


def _type_parser(col: Column, assume_utc: bool) -> Callable[[Any], Any]:
    t = col_type(col.type)
    if t.kind == "int":
        return _bounded(parse_int, t)
    if t.kind == "float":
        return _bounded(parse_float, t)
    if col.type.startswith("numeric"):
        return parse_decimal
    if t.kind == "ts":
        return make_timestamp_parser(assume_utc)
    if t.kind == "bool":
        return parse_bool
    if t.kind == "json":
        return parse_json
    return parse_text


def _range_check(bounds: catalog.Bounds | None) -> Callable[[Any], None] | None:
    """The column's range rule, from the catalog's bounds (the CHECK constraints say the same)."""
    if bounds is None:
        return None
    lo, hi = bounds
    if bounds == catalog.PERCENT:
        reason = "percent out of range 0-100"
    elif hi is None:
        reason = f"must be >= {lo:g}"
    elif lo is None:
        reason = f"must be <= {hi:g}"
    else:
        reason = f"out of range {lo:g}-{hi:g}"

    def check(v):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise BadValue(f"{reason}: {v}")
    return check


# ---------------------------------------------------------------- rows

class RowValidator:
    def __init__(self, target: Target, table_cols: list[Column], input_fields: list[str],
                 resolver: Resolver, *, assume_utc: bool, path: object, all_optional_fields: bool):
        self.target, self.resolver, self.assume_utc = target, resolver, assume_utc
        by_name = {c.name: c for c in table_cols}
        allowed = (set(by_name) - GENERATED) | set(target.references)
        unknown = [f for f in input_fields if f not in allowed]
        if unknown:
            raise IngestFileError(path, f"unknown column(s) for {target.qualified}: {', '.join(unknown)}")
        # NDJSON: any known field may appear in any object, so stage every column
        wanted = allowed if all_optional_fields else set(input_fields)
        self.accepted = wanted
        ref_cols = set(target.references.values())
        data_cols = [c for c in table_cols if c.name in wanted and c.name not in ref_cols
                     and c.name not in GENERATED]
        self.columns: list[Column] = [by_name[r] for r in dict.fromkeys(target.references.values())] + data_cols
        missing_required = [c.name for c in table_cols if c.not_null and not c.has_default
                            and c.name not in ref_cols and c.name not in {d.name for d in data_cols}]
        if missing_required:
            raise IngestFileError(path, f"missing required column(s) for {target.qualified}: "
                                  f"{', '.join(missing_required)}")
        # A missing value in a NOT NULL column with a default stages as NULL and
        # takes the default on insert (see loader.BatchWriter); without a default it is rejected.
        self.data_columns = data_cols
        self.bounds = catalog.value_bounds(target.table)
        self._data = [(c.name, _type_parser(c, assume_utc), _range_check(self.bounds.get(c.name)),
                       c.not_null and not c.has_default) for c in data_cols]

    def row(self, record: Record) -> tuple | Rejection:
        if record.error is not None:
            return Rejection(record.line, record.error[0], record.error[1], raw_text(record))
        values = record.values
        if not self.accepted.issuperset(values):
            extra = next(k for k in values if k not in self.accepted)
            return Rejection(record.line, str(extra), "unknown field", raw_text(record))
        out: list[Any] = []
        field = "-"
        try:
            t = self.target.table
            if t == "scaling_events":
                server_given = any(values.get(k) not in (None, "") for k in ("server_id", "server"))
                org_given = any(values.get(k) not in (None, "") for k in ("organization_id", "organization"))
                field = "server"
                if not (server_given or org_given):
                    raise BadValue("missing: give server (server_id) or organization (organization_id)")
                server = (self.resolver.entity("server", values.get("server_id"), values.get("server"),
                                               values.get("organization")) if server_given else None)
                field = "organization"
                org = (self.resolver.organization(values.get("organization_id"), values.get("organization"))
                       if org_given else self.resolver.server_org[server])
                if server is not None and self.resolver.server_org[server] != org:
                    raise BadValue(f"server {server} belongs to organization {self.resolver.server_org[server]}, "
                                   f"not {org}")
                out.extend([server, org])
            elif t == "site_usage":
                field = "site"
                out.append(self.resolver.entity("site", values.get("site_id"), values.get("site"),
                                                values.get("organization")))
            else:
                field = "server"
                out.append(self.resolver.entity("server", values.get("server_id"), values.get("server"),
                                                values.get("organization")))
                if t == "metric_samples":
                    field = "metric_type"
                    out.append(self.resolver.metric_type(values.get("metric_type_id"), values.get("metric_type")))
            for name, parse, check, required in self._data:
                field = name
                v = values.get(name)
                if v is None or v == "":
                    if required:
                        raise BadValue("missing value")
                    out.append(None)
                    continue
                v = parse(v)
                if check is not None:
                    check(v)
                out.append(v)
        except BadValue as exc:
            if field == "server" and values.get("server_id") not in (None, ""):
                field = "server_id"
            elif field == "site" and values.get("site_id") not in (None, ""):
                field = "site_id"
            return Rejection(record.line, field, str(exc), raw_text(record))
        return tuple(out)


# ---------------------------------------------------------------- column-wise (CSV fast path)

def _kind(col: Column) -> str:
    t = col.type
    if t in ("smallint", "integer", "bigint"):
        return "int"
    if t in ("real", "double precision"):
        return "float"
    if t == "timestamp with time zone":
        return "ts"
    return "other"


class ColumnValidator:
    """Validates a whole CSV batch column by column (numpy conversions, one list
    comprehension per column) instead of row by row. It only decides which rows
    are clean; every row it doubts goes through ``RowValidator.row``, which stays
    the single authority for what is rejected and why."""

    def __init__(self, rows: RowValidator, fields: list[str]):
        self.rv = rows
        self.index = {f: i for i, f in enumerate(fields)}
        self.fields = fields
        self.plan = [(name, _kind(c), col_type(c.type), check, required, parse)
                     for (name, parse, check, required), c in zip(rows._data, rows.data_columns, strict=True)]
        r = rows.resolver
        self.ids = np.fromiter(r.ids, dtype=np.int64) if r.ids else np.empty(0, np.int64)

    @staticmethod
    def _numbers(col: tuple[str, ...], dtype, parse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, empty, unparsable) for a column of strings."""
        arr = np.array(col, dtype=object)
        empty = arr == ""
        if empty.any():
            arr[empty] = "0"
        try:
            return arr.astype(dtype), empty, np.zeros(len(col), bool)
        except (ValueError, TypeError, OverflowError):
            pass
        values = np.zeros(len(col), dtype=dtype)
        bad = np.zeros(len(col), bool)
        for i, v in enumerate(col):
            if v == "":
                continue
            try:
                values[i] = parse(v)
            except (BadValue, OverflowError):
                bad[i] = True
        return values, empty, bad

    def validate(self, lines: list[int], rows: list[list[str]], raws: list[str]) -> tuple[list[tuple], list[Rejection]]:
        good, rejected, _, _ = self.validate_located(lines, rows, raws)
        return good, rejected

    def validate_located(self, lines: list[int], rows: list[list[str]], raws: list[str]):
        """(good rows, rejections, line of each good row, raw text of each good row)."""
        n = len(rows)
        if n == 0:
            return [], [], [], []
        cols = list(zip(*rows, strict=True))
        bad = np.zeros(n, dtype=bool)
        out: list[np.ndarray] = [self._entities(cols, bad)]
        if self.rv.target.table == "metric_samples":
            out.append(self._metric_types(cols, bad))
        for name, kind, ctype, check, required, parse in self.plan:
            col = cols[self.index[name]]
            if kind in ("int", "float"):
                values, empty, unparsable = self._numbers(col, np.int64 if kind == "int" else np.float64, parse)
                bad |= unparsable
                if kind == "float":
                    bad |= ~np.isfinite(values)
                if ctype.lo is not None:     # what the catalog type holds (int2/int4, float4)
                    bad |= (values < ctype.lo) | (values > ctype.hi)
                if check is not None:
                    lo, hi = self.rv.bounds[name]
                    if lo is not None:
                        bad |= values < lo
                    if hi is not None:
                        bad |= values > hi
                obj = values.astype(object)
            else:
                empty = np.array(col, dtype=object) == ""
                obj = np.empty(n, dtype=object)
                for i, v in enumerate(col):
                    if v == "":
                        continue
                    try:
                        obj[i] = parse(v)
                    except BadValue:
                        bad[i] = True
            if required:
                bad |= empty
            obj[empty] = None
            out.append(obj)
        good_idx = np.flatnonzero(~bad)
        good = list(zip(*(c[good_idx].tolist() for c in out), strict=True))
        good_lines = [lines[i] for i in good_idx.tolist()]
        good_raws = [raws[i] for i in good_idx.tolist()]
        rejected: list[Rejection] = []
        for i in np.flatnonzero(bad).tolist():
            res = self.rv.row(Record(lines[i], dict(zip(self.fields, rows[i], strict=True)), raws[i]))
            if isinstance(res, Rejection):
                rejected.append(res)
            else:
                good.append(res)
                good_lines.append(lines[i])
                good_raws.append(raws[i])
        return good, rejected, good_lines, good_raws

    def _entities(self, cols: list[tuple[str, ...]], bad: np.ndarray) -> np.ndarray:
        r = self.rv.resolver
        n = len(bad)
        kind = "site" if self.rv.target.table == "site_usage" else "server"
        if f"{kind}_id" in self.index:
            col = cols[self.index[f"{kind}_id"]]
            ids, empty, unparsable = self._numbers(col, np.int64, parse_int)
            bad |= empty | unparsable | ~np.isin(ids, self.ids)
            return ids.astype(object)
        names = cols[self.index[kind]] if kind in self.index else ("",) * n
        if "organization" in self.index:
            orgs = cols[self.index["organization"]]
            found = [r.by_org_name.get((o, v)) if o else r.by_name.get(v) for o, v in zip(orgs, names, strict=True)]
        else:
            found = [r.by_name.get(v) for v in names]
        obj = np.array(found, dtype=object)
        bad |= np.fromiter((x is None for x in found), dtype=bool, count=n)
        return obj

    def _metric_types(self, cols: list[tuple[str, ...]], bad: np.ndarray) -> np.ndarray:
        r = self.rv.resolver
        n = len(bad)
        if "metric_type_id" in self.index:
            ids, empty, unparsable = self._numbers(cols[self.index["metric_type_id"]], np.int64, parse_int)
            known = np.fromiter(r.metric_ids, dtype=np.int64) if r.metric_ids else np.empty(0, np.int64)
            bad |= empty | unparsable | ~np.isin(ids, known)
            return ids.astype(object)
        names = cols[self.index["metric_type"]] if "metric_type" in self.index else ("",) * n
        found = [r.metric_by_name.get(v) for v in names]
        bad |= np.fromiter((x is None for x in found), dtype=bool, count=n)
        return np.array(found, dtype=object)
