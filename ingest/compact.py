"""Rows of ``metrics.server_metrics`` encoded for ``metrics.server_samples``, by column with numpy.

Revision 0012 keeps server_metrics' rows in the compact hypertable server_samples
(``rmp.catalog.Stored``; ``metrics.server_metrics`` is a view over it). COPY into
the view goes through a row trigger, so bulk writers encode here and COPY into
the table. ``encode_columns`` computes exactly what ``rmp.compact.encoded()``
computes in SQL (tests/test_compact_encoding.py checks both on both engines):

* ``hundredths``: ``rint(value * 100)`` (PostgreSQL's ``round(double)`` is rint too);
* ``units``: ``bytes >> shift`` and ``bytes & (unit - 1)`` (floor: a negative value
  keeps a negative count, which the CHECK refuses naming the column);
* ``difference``: ``value - (total - used if 0 <= used <= total else 0)``;
* ``percent_of``: ``rint(value * 100) - (rint(used / total * 10000) if total > 0 and
  0 <= used <= total else 0)``, one IEEE division like the database's.

NULL in gives NULL out; a NULL ``used``/``total`` counts as no derivation (0).
Nothing wraps: a value whose encoding does not fit its column's type raises
``EncodeError`` naming the column (the database would refuse it the same way;
validated loads never get there, their bounds come from the same catalog).
Column names come from the catalog only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ingest.coltypes import col_type
from ingest.copybinary import Field, encode
from ingest.frames import Frame
from rmp import catalog
from rmp import compact as compact_sql

TABLE = compact_sql.TABLE
QUALIFIED = compact_sql.QUALIFIED
KEY = compact_sql.KEY
INTERVAL = catalog.SAMPLE_INTERVALS["server_metrics"].name
_BY_NAME = {c.name: c for c in catalog.SERVER_METRICS}
# storage column -> (server_metrics column it holds, its SQL type)
STORAGE: dict[str, tuple[str, str]] = {n: (c.name, t) for c in catalog.SERVER_METRICS
                                       for n, t in c.storage_columns()}
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_I64 = np.iinfo(np.int64)


class EncodeError(OverflowError):
    """A value that cannot be stored (its encoding is outside its column's type)."""

    def __init__(self, column: str, reason: str):
        super().__init__(f"{column}: {reason}")
        self.column, self.reason = column, reason


# ---------------------------------------------------------------- inputs

def _split(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values, null mask) of a masked array, pandas Series, ndarray or sequence with None."""
    if isinstance(values, np.ma.MaskedArray):
        return np.ma.getdata(values), np.ma.getmaskarray(values)
    if hasattr(values, "isna") and hasattr(values, "to_numpy"):      # pandas, nullable dtypes too
        mask = np.asarray(values.isna(), dtype=bool)
        if mask.any():
            return values.to_numpy(dtype=object, na_value=None), mask
        return values.to_numpy(), mask
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values, np.zeros(len(values), dtype=bool)
    seq = values.tolist() if isinstance(values, np.ndarray) else list(values)
    try:
        numbers = np.array(seq)        # in C: ints, or floats (also ints mixed with floats)
    except (OverflowError, ValueError, TypeError):
        numbers = None
    if numbers is not None and numbers.dtype.kind in "iuf" and numbers.ndim == 1:
        return numbers, np.zeros(len(seq), dtype=bool)
    mask = np.fromiter((v is None for v in seq), dtype=bool, count=len(seq))
    return np.asarray(seq if not mask.any() else [0 if v is None else v for v in seq], dtype=object), mask


def _floats(name: str, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise EncodeError(name, "expected a number") from None
    if not np.isfinite(out[~mask]).all():
        raise EncodeError(name, "expected a finite number")
    return np.where(mask, 0.0, out)


def _ints(name: str, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """int64 values (0 where NULL); whole floats are accepted, anything else raises."""
    if values.dtype == object:
        kept = [v for v, m in zip(values.tolist(), mask.tolist(), strict=True) if not m]
        if any(isinstance(v, float) for v in kept):
            values = np.asarray(values, dtype=np.float64)
        else:
            try:
                values = np.asarray(values, dtype=np.int64)
            except OverflowError:
                raise EncodeError(name, "out of range for bigint") from None
            except (TypeError, ValueError):
                raise EncodeError(name, "expected an integer") from None
    if values.dtype.kind == "f":
        v = np.where(mask, 0.0, values)
        # whole and exact: past 2**53 a double is not one integer (an int mixed with floats
        # in one column was converted to a double; refused rather than rounded)
        if not (np.isfinite(v) & (v == np.floor(v)) & (np.abs(v) <= 2.0**53)).all():
            raise EncodeError(name, "expected a whole number of at most 2**53 among fractions")
        return v.astype(np.int64)
    if values.dtype.kind == "u" and len(values) and values[~mask].max(initial=0) > _I64.max:
        raise EncodeError(name, "out of range for bigint")
    if values.dtype.kind not in "iub":
        raise EncodeError(name, "expected an integer")
    return np.where(mask, 0, values.astype(np.int64))


def _fits(name: str, values: np.ndarray, mask: np.ndarray, sql_type: str) -> np.ndarray:
    t = col_type(sql_type)
    if t.kind == "int":
        live = values[~mask]
        if len(live) and (live.min() < t.lo or live.max() > t.hi):
            raise EncodeError(name, f"out of range for {sql_type}")
    return values


def _rint_int(name: str, x: np.ndarray, mask: np.ndarray, sql_type: str) -> np.ndarray:
    """rint(x) as int64, refused (not wrapped) when it does not fit ``sql_type``."""
    r = np.rint(x)
    t = col_type(sql_type)
    live = r[~mask]
    # float bounds: the type's bounds as doubles (int8's upper one rounds up to 2**63, excluded)
    if len(live) and (live.min() < float(t.lo) or live.max() >= float(t.hi) + (1 if t.hi < 2**53 else 0)):
        raise EncodeError(name, f"out of range for {sql_type}")
    return np.where(mask, 0, r).astype(np.int64)


# ---------------------------------------------------------------- the encoder

def _derivable(used: tuple[np.ndarray, np.ndarray], total: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """0 <= used <= total, both given (``used between 0 and total`` is true)."""
    (u, um), (t, tm) = used, total
    return ~um & ~tm & (u >= 0) & (u <= t)


def encode_columns(columns: Mapping[str, Any], n: int | None = None) -> dict[str, np.ma.MaskedArray]:
    """server_samples' metric columns (int64 or float64 masked arrays, masked = NULL) from
    server_metrics' columns by name. A server_metrics column missing from ``columns`` is
    NULL; other keys (server_id, collected_at, interval_seconds) are not encoded here."""
    if n is None:
        n = len(next(iter(columns.values()))) if columns else 0
    null = np.ones(n, dtype=bool)
    raw = {name: _split(columns[name]) if name in columns else (np.zeros(n, dtype=np.int64), null)
           for name in _BY_NAME}
    for name, (v, m) in raw.items():
        if len(v) != n or len(m) != n:
            raise ValueError(f"{name}: {len(v)} values, expected {n}")
    ints: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def as_int(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ints:
            v, m = raw[name]
            ints[name] = (_ints(name, v, m), m)
        return ints[name]

    out: dict[str, np.ma.MaskedArray] = {}
    for c in catalog.SERVER_METRICS:
        s, (v, mask) = c.stored, raw[c.name]
        cols = c.storage_columns()
        if s.kind == "plain":
            sql_type = cols[0][1]
            if col_type(sql_type).kind == "int":
                data = _fits(c.name, as_int(c.name)[0], mask, sql_type)
            else:
                data = _floats(c.name, v, mask)
            out[cols[0][0]] = np.ma.MaskedArray(data, mask)
        elif s.kind == "hundredths":
            x = _floats(c.name, v, mask) * 100
            out[cols[0][0]] = np.ma.MaskedArray(_rint_int(c.name, x, mask, cols[0][1]), mask)
        elif s.kind == "units":
            b = as_int(c.name)[0]
            out[cols[0][0]] = np.ma.MaskedArray(b >> s.shift, mask)
            out[cols[1][0]] = np.ma.MaskedArray(b & (s.unit - 1), mask)
        else:
            used, total = as_int(s.used), as_int(s.total)
            ok = _derivable(used, total)
            if s.kind == "difference":
                value = as_int(c.name)[0]
                derived = np.where(ok, total[0] - used[0], 0)     # no overflow: 0 <= used <= total
                # value - derived (derived >= 0) underflows only below int64's minimum
                if (~mask & (value < _I64.min + derived)).any():
                    raise EncodeError(c.name, "out of range for bigint")
                out[cols[0][0]] = np.ma.MaskedArray(np.where(mask, 0, value - derived), mask)
            else:
                ok &= total[0] > 0
                share = np.rint(used[0].astype(np.float64) / np.where(ok, total[0], 1).astype(np.float64) * 10000)
                share = np.where(ok, share, 0).astype(np.int64)       # within 0..10000
                hundredths = _rint_int(c.name, _floats(c.name, v, mask) * 100, mask, "integer")
                residual = np.where(mask, 0, hundredths - share)
                out[cols[0][0]] = np.ma.MaskedArray(_fits(c.name, residual, mask, cols[0][1]), mask)
    return out


# ---------------------------------------------------------------- the loader's payload

def timestamps_us(name: str, values: Sequence[Any], mask: np.ndarray) -> np.ndarray:
    """Microseconds since PostgreSQL's epoch of aware datetimes (binary COPY's timestamptz)."""
    out = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if mask[i]:
            continue
        if not isinstance(v, datetime):
            raise EncodeError(name, f"expected a timestamp, found {v!r}")
        if v.tzinfo is None:
            raise EncodeError(name, "timestamp has no time zone")
        out[i] = (v - _PG_EPOCH) // _US
    return out


def physical_columns(given: Sequence[str]) -> list[str]:
    """The columns of server_samples a load of server_metrics' columns ``given`` writes:
    the key, every metric's storage columns (NULL when not given, as a column left out of
    server_metrics was) and interval_seconds when given (else the table's default)."""
    return [*KEY, *STORAGE, *([INTERVAL] if INTERVAL in given else [])]


def constraint_columns() -> dict[str, str]:
    """CHECK constraint of server_samples -> the column of server_metrics a refused row got wrong
    (rmp.compact.create_table_columns names them so)."""
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    out = {c.check_name: c.name for c in catalog.SERVER_METRICS}
    out |= {f"{TABLE}_{catalog.remainder_column(c.stored.stored)}_range": c.name
            for c in catalog.SERVER_METRICS if c.stored.kind == "units"}
    out[interval.check_name] = interval.name
    return out


def source_column(physical: str) -> str:
    """server_metrics' column a column of server_samples holds (memory_used_kib -> memory_used_bytes)."""
    return STORAGE[physical][0] if physical in STORAGE else physical


@dataclass
class Samples:
    """A batch of server_metrics rows (``source``: a ``Rows`` or ``Columns`` payload in the
    order of ``columns``) to COPY into server_samples as ``physical`` columns with ``wires``.
    Lines and raw text are the source's, so refused rows are reported as before."""

    source: Any
    columns: list[str]
    physical: list[str]
    wires: list[str]
    _encoded: bytes | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def locatable(self) -> bool:
        return self.source.locatable

    def take(self, lo: int, hi: int) -> Samples:
        return Samples(self.source.take(lo, hi), self.columns, self.physical, self.wires)

    def line(self, i: int) -> int:
        return self.source.line(i)

    def raw(self, i: int) -> str:
        return self.source.raw(i)

    def _input(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """server_metrics' columns by name as (values, null mask); timestamps in PG microseconds."""
        src = self.source
        n = len(src)
        if isinstance(src, Frame):          # trusted columns (the fleet writer)
            return src.numbers()
        if hasattr(src, "fields"):          # Columns: already numpy, timestamps already converted
            return {name: (np.asarray(f.values), np.zeros(n, bool) if f.nulls is None else f.nulls)
                    for name, f in zip(self.columns, src.fields, strict=True)}
        by_column = list(zip(*src.rows, strict=True)) if n else [() for _ in self.columns]
        out = {}
        for name, values in zip(self.columns, by_column, strict=True):
            data, mask = _split(values)
            if name == "collected_at":
                data = timestamps_us(name, values, mask)
            out[name] = (data, mask)
        return out

    def encoded(self) -> bytes:
        """The binary COPY stream into server_samples (computed once)."""
        if self._encoded is None:
            given = self._input()
            n = len(self)
            stored = encode_columns({k: np.ma.MaskedArray(v, m) for k, (v, m) in given.items()
                                     if k in _BY_NAME}, n)
            fields = []
            for name, wire in zip(self.physical, self.wires, strict=True):
                if name in stored:
                    col = stored[name]
                    data, mask = np.ma.getdata(col), np.ma.getmaskarray(col)
                else:                        # key and interval: as given
                    data, mask = given[name]
                    data = (_ints(name, data, mask) if np.dtype(wire).kind == "i"
                            else _floats(name, data, mask))
                fields.append(Field(wire, data, mask if mask.any() else None))
            self._encoded = encode(fields, n)
        return self._encoded

    def write(self, copy: Any, oids: Sequence[int]) -> None:
        copy.write(self.encoded())
