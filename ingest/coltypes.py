"""What a column's catalog type can hold, and how it travels in binary COPY.

Read from ``format_type()`` of the live table (``ingest.targets.table_columns``),
so a value is judged against the type the database really has: an integer
beyond int4 in an ``integer`` column, ``1e30`` in a ``bigint`` one or
``1e39`` in a ``real`` one is a bad row with a reason, not an overflow in
the middle of a COPY.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColType:
    kind: str                 # int | float | ts | bool | json | text | other
    lo: float | int | None    # inclusive bounds of the type (None: unbounded / not numeric)
    hi: float | int | None
    wire: str | None          # numpy big-endian dtype of the binary COPY field (None: variable width)
    name: str                 # the type as the catalog spells it, for messages


_INT = {
    "smallint": (-(2**15), 2**15 - 1, ">i2"),
    "integer": (-(2**31), 2**31 - 1, ">i4"),
    "bigint": (-(2**63), 2**63 - 1, ">i8"),
}
# the largest finite float4; PostgreSQL refuses anything that would round past it
REAL_MAX = float(np.finfo(np.float32).max)


def col_type(type_name: str) -> ColType:
    if type_name in _INT:
        lo, hi, wire = _INT[type_name]
        return ColType("int", lo, hi, wire, type_name)
    if type_name == "real":
        return ColType("float", -REAL_MAX, REAL_MAX, ">f4", type_name)
    if type_name == "double precision":
        return ColType("float", None, None, ">f8", type_name)
    if type_name == "timestamp with time zone":
        return ColType("ts", None, None, ">i8", type_name)
    if type_name == "boolean":
        return ColType("bool", None, None, "u1", type_name)
    if type_name in ("jsonb", "json"):
        return ColType("json", None, None, None, type_name)
    if type_name == "text" or type_name.startswith("character"):
        return ColType("text", None, None, None, type_name)
    return ColType("other", None, None, None, type_name)


def out_of_range(value: float | int, t: ColType) -> str | None:
    """The rejection reason when ``value`` cannot be stored in ``t``, else None."""
    if t.lo is not None and not (t.lo <= value <= t.hi):
        return f"out of range for {t.name}: {value}"
    return None
