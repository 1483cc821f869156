"""Validated rows on their way to COPY, in one of two shapes.

``Columns`` (the CSV fast path): one numpy array per column, encoded to
binary COPY in one pass (``ingest.copybinary``). ``Rows`` (everything else):
tuples written with psycopg's ``write_row``. Both remember each row's input
line and raw text, so a batch the database refuses can be split until the
offending rows are found and quarantined with their line (``BatchWriter``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from psycopg import Copy

from ingest.copybinary import Field, encode
from ingest.formats import Record, raw_text


@dataclass
class Rows:
    rows: list[tuple]
    lines: list[int] | None = None      # None: trusted rows (generator, collector) without lines
    raws: list[str | Record] | None = None   # raw text, or the record to render it from when needed

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def locatable(self) -> bool:
        return self.lines is not None

    def take(self, lo: int, hi: int) -> Rows:
        return Rows(self.rows[lo:hi], self.lines and self.lines[lo:hi], self.raws and self.raws[lo:hi])

    def line(self, i: int) -> int:
        return self.lines[i]

    def raw(self, i: int) -> str:
        r = self.raws[i]
        return r if isinstance(r, str) else raw_text(r)

    def write(self, copy: Copy, oids: Sequence[int]) -> None:
        copy.set_types(list(oids))
        for row in self.rows:
            copy.write_row(row)


@dataclass
class Columns:
    fields: list[Field]
    lines: np.ndarray                   # input line of each row
    raw_of: Callable[[int], str]        # raw text of an input line
    _encoded: bytes | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.lines)

    locatable = True

    def take(self, lo: int, hi: int) -> Columns:
        return Columns([Field(f.wire, f.values[lo:hi], None if f.nulls is None else f.nulls[lo:hi])
                        for f in self.fields], self.lines[lo:hi], self.raw_of)

    def line(self, i: int) -> int:
        return int(self.lines[i])

    def raw(self, i: int) -> str:
        return self.raw_of(int(self.lines[i]))

    def encoded(self) -> bytes:
        """The binary COPY stream (computed once; the reader thread does it ahead of time)."""
        if self._encoded is None:
            self._encoded = encode(self.fields, len(self))
        return self._encoded

    def write(self, copy: Copy, oids: Sequence[int]) -> None:
        copy.write(self.encoded())
