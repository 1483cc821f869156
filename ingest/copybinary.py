"""PostgreSQL binary COPY data built from whole columns with numpy.

Row by row (psycopg's ``write_row``) costs a Python tuple and a call per row;
here a batch is laid out in one pass per column: when no value is NULL every
row has the same size and the batch is one numpy structured array; otherwise
each field's position is computed from the row sizes and the bytes are
scattered into place. The stream is complete (signature, rows, trailer), so it
is handed to ``Copy.write`` as is.

Format: https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
# microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC)
PG_EPOCH_US = 946_684_800_000_000


@dataclass
class Field:
    """One column of a batch: ``wire`` is the big-endian numpy dtype of a fixed-width
    type (values: a numpy array); None for a variable-width one (values: bytes objects,
    already in the type's binary form). ``nulls`` marks NULLs (their value is ignored)."""

    wire: str | None
    values: np.ndarray | Sequence[bytes]
    nulls: np.ndarray | None = None


def encode(fields: Sequence[Field], n: int) -> bytes:
    """The binary COPY stream of ``n`` rows made of ``fields``."""
    if n == 0:
        return SIGNATURE + TRAILER
    if all(f.wire is not None and (f.nulls is None or not f.nulls.any()) for f in fields):
        return SIGNATURE + _fixed(fields, n) + TRAILER
    return SIGNATURE + _scatter(fields, n) + TRAILER


def _fixed(fields: Sequence[Field], n: int) -> bytes:
    """No NULL and no variable width: every row is the same struct."""
    layout = [("count", ">i2")]
    for i, f in enumerate(fields):
        layout += [(f"l{i}", ">i4"), (f"v{i}", f.wire)]
    rows = np.empty(n, dtype=np.dtype(layout))
    rows["count"] = len(fields)
    for i, f in enumerate(fields):
        rows[f"l{i}"] = np.dtype(f.wire).itemsize
        rows[f"v{i}"] = f.values
    return rows.tobytes()


def _scatter(fields: Sequence[Field], n: int) -> bytes:
    sizes = np.full(n, 2, dtype=np.int64)
    lengths: list[np.ndarray] = []
    for f in fields:
        if f.wire is not None:
            length = np.full(n, np.dtype(f.wire).itemsize, dtype=np.int64)
        else:
            length = np.fromiter(map(len, f.values), dtype=np.int64, count=n)
        if f.nulls is not None:
            length = np.where(f.nulls, -1, length)
        lengths.append(length)
        sizes += 4 + np.maximum(length, 0)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    _put(out, starts, np.full(n, len(fields), dtype=">i2"))
    cursor = starts + 2
    for f, length in zip(fields, lengths, strict=True):
        _put(out, cursor, length.astype(">i4"))
        cursor += 4
        present = length >= 0
        if f.wire is not None:
            data = np.asarray(f.values).astype(f.wire, copy=False)
            if f.nulls is not None:
                _put(out, cursor[present], data[present])
            else:
                _put(out, cursor, data)
        else:
            keep = np.flatnonzero(present)
            blob = np.frombuffer(b"".join(f.values[i] for i in keep), dtype=np.uint8)
            if blob.size:
                lens = length[keep]
                first = np.repeat(cursor[keep] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
                out[first + np.arange(blob.size)] = blob
        cursor += np.maximum(length, 0)
    return out.tobytes()


def _put(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """Write each fixed-width value's bytes at its offset."""
    width = values.dtype.itemsize
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(-1, width)
    out[at[:, None] + np.arange(width)] = raw


def jsonb(text: str) -> bytes:
    """jsonb's binary form: version 1, then the JSON text."""
    return b"\x01" + text.encode("utf-8")
