"""Arrow columns as numpy arrays, read from the Arrow buffers.

pyarrow's ``to_numpy()`` and anything that builds a pyarrow scalar
(``fill_null(0)``, ``pa.scalar``) import pandas, whether or not the data
needs it: a third of a second of every ``rmp ingest`` run spent on a
library the load never uses. The fixed-width columns the CSV fast path
produces (int64, float64, timestamps cast to int64, booleans) are plain
buffers, so they are viewed here directly: values, and the validity bitmap
as a null mask.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_DTYPES = {pa.int64(): np.int64, pa.float64(): np.float64, pa.int32(): np.int32}


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _bits(buf: pa.Buffer, offset: int, n: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little", count=offset + n)[offset:].astype(bool)


def null_mask(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where the value is null."""
    arr = _array(col)
    n = len(arr)
    if arr.null_count == 0:
        return np.zeros(n, dtype=bool)
    if arr.type == pa.null():
        return np.ones(n, dtype=bool)
    return ~_bits(arr.buffers()[0], arr.offset, n)


def values(col: pa.Array | pa.ChunkedArray, fill: float | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls replaced by ``fill``, null mask) of an int/float/timestamp/bool column.

    Timestamps come as their int64 count of the column's unit; booleans as bool."""
    arr = _array(col)
    n = len(arr)
    nulls = null_mask(arr)
    if pa.types.is_boolean(arr.type):
        out = _bits(arr.buffers()[1], arr.offset, n) if n else np.zeros(0, dtype=bool)
    else:
        # a timestamp's buffer is its int64 count of units (a cast would import pyarrow.compute)
        dtype = np.int64 if pa.types.is_timestamp(arr.type) else _DTYPES.get(arr.type)
        if dtype is None:
            raise TypeError(f"no numpy view for Arrow type {arr.type}")
        out = np.frombuffer(arr.buffers()[1], dtype=dtype, count=arr.offset + n)[arr.offset:]
    if nulls.any():
        out = out.copy()
        out[nulls] = fill
    return out, nulls
