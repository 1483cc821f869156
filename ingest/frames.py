"""Trusted rows by column: the fleet writer's generated series on their way to COPY.

A ``Frame`` holds one numpy array per column (timestamps as ``datetime64`` in UTC,
NULLs as masked entries), so generated data reaches binary COPY without a Python
tuple per row. It has no input lines: a batch the database refuses raises, as
trusted ``Rows`` do (``loader.BatchWriter``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.copybinary import PG_EPOCH_US, Field, encode


@dataclass
class Frame:
    arrays: Mapping[str, np.ndarray]    # column name -> values, in the writer's column order
    wires: Sequence[str] | None = None   # binary COPY types of the columns, set by the writer
    _encoded: bytes | None = field(default=None, repr=False)

    locatable = False

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def take(self, lo: int, hi: int) -> Frame:
        return Frame({k: v[lo:hi] for k, v in self.arrays.items()}, self.wires)

    def line(self, i: int) -> int:
        raise TypeError("trusted rows have no input lines")

    raw = line

    def numbers(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(values, null mask) by column; timestamps as microseconds since PostgreSQL's epoch."""
        out = {}
        for name, col in self.arrays.items():
            values, mask = np.ma.getdata(col), np.ma.getmaskarray(col)
            if values.dtype.kind == "M":
                values = values.astype("datetime64[us]").astype(np.int64) - PG_EPOCH_US
            out[name] = (values, mask)
        return out

    def encoded(self) -> bytes:
        if self._encoded is None:
            if self.wires is None:
                raise ValueError("the writer sets the COPY types first")
            fields = [Field(wire, values, mask if mask.any() else None)
                      for wire, (values, mask) in zip(self.wires, self.numbers().values(), strict=True)]
            self._encoded = encode(fields, len(self))
        return self._encoded

    def write(self, copy: Any, oids: Sequence[int]) -> None:
        copy.write(self.encoded())


def frame_columns(frame: Any, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """A pandas DataFrame's ``columns`` as numpy arrays for a ``Frame``: tz-aware timestamps
    as UTC datetime64, nullable columns as masked arrays."""
    out = {}
    for name in columns:
        s = frame[name]
        if getattr(s.dtype, "tz", None) is not None:
            out[name] = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
        elif s.isna().any():
            mask = s.isna().to_numpy()
            out[name] = np.ma.MaskedArray(s.to_numpy(dtype=object, na_value=0).astype(
                np.float64 if s.dtype.kind == "f" else np.int64), mask)
        else:
            out[name] = s.to_numpy()
    return out
