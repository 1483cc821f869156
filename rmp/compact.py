"""SQL that moves rows of ``metrics.server_metrics`` in and out of the compact hypertable
``metrics.server_samples``, rendered from the catalog (``rmp.catalog.Stored``).

* ``storage_columns()``: the table's columns and CHECK constraints (named as those of
  server_metrics were, so a bad row's error still names the column it gave);
* ``decoded(alias)``: the select list that gives server_metrics' columns back, exactly;
* ``encoded(alias)``: the expressions that store a server_metrics row held in ``alias``
  (``new`` in a trigger, a table alias in a migration's copy).

The Python writers encode the same way (``ingest.compact``); tests check both against
each other on both engines. Every derivation is integer arithmetic or one IEEE division
and ``round`` (``rint``), the same in PostgreSQL and numpy.

Core layer: the catalog only. Names come from the catalog, never from input.
"""

from __future__ import annotations

from collections.abc import Sequence

from rmp import catalog
from rmp.catalog import MetricColumn

# The metric columns a function renders: the catalog's by default; a revision passes those its
# database has (a column a later revision adds is not there yet).
Columns = Sequence[MetricColumn] | None

TABLE = "server_samples"
QUALIFIED = f"{catalog.SCHEMA}.{TABLE}"
KEY = ("server_id", "collected_at")


def _by_name() -> dict[str, MetricColumn]:
    return {c.name: c for c in catalog.SERVER_METRICS}


def _q(alias: str, column: str) -> str:
    return f"{alias}.{column}" if alias else column


def _bytes(column: str, alias: str) -> str:
    """The value of a byte column of server_metrics, read from storage columns."""
    c = _by_name()[column]
    if c.stored.kind == "units":
        units, rem = _q(alias, c.stored.stored), _q(alias, catalog.remainder_column(c.stored.stored))
        return f"({units} * {c.stored.unit} + {rem})"
    return _q(alias, column)


def _difference(used: str, total: str) -> str:
    """total - used when that is a size (0 <= used <= total), else 0."""
    return f"(case when {used} between 0 and {total} then {total} - {used} else 0 end)"


def _share(used: str, total: str) -> str:
    """used / total in hundredths of a percent (rounded) when 0 <= used <= total and total > 0, else 0."""
    return (f"(case when {total} > 0 and {used} between 0 and {total} "
            f"then round({used}::double precision / {total}::double precision * 10000)::integer else 0 end)")


def _decode(c: MetricColumn, alias: str) -> str:
    s = c.stored
    if s.kind == "plain":
        return _q(alias, c.name)
    if s.kind == "hundredths":
        return f"({_q(alias, c.name + '_x100')}::double precision / 100)"
    if s.kind == "units":
        return _bytes(c.name, alias)
    used, total = _bytes(s.used, alias), _bytes(s.total, alias)
    if s.kind == "difference":
        return f"({_difference(used, total)} + {_q(alias, c.name + '_residual')})"
    return f"(({_share(used, total)} + {_q(alias, c.name + '_residual')})::double precision / 100)"


def _encode(c: MetricColumn, alias: str) -> list[str]:
    s, value = c.stored, f"{alias}.{c.name}"
    if s.kind == "plain":
        return [value]
    if s.kind == "hundredths":
        return [f"round({value} * 100)::{c.storage_columns()[0][1]}"]
    if s.kind == "units":
        # shift and mask: floor semantics, so a negative value keeps a negative unit count
        # (the CHECK names the column) and the remainder stays in [0, unit)
        return [f"({value} >> {s.shift})", f"({value} & {s.unit - 1})::smallint"]
    used, total = f"{alias}.{s.used}", f"{alias}.{s.total}"
    if s.kind == "difference":
        return [f"({value} - {_difference(used, total)})"]
    return [f"(round({value} * 100)::integer - {_share(used, total)})"]


def storage_columns(columns: Columns = None) -> list[tuple[str, str]]:
    """(name, type) of server_samples' metric columns, in table order (after the key)."""
    return [col for c in columns or catalog.SERVER_METRICS for col in c.storage_columns()]


def _check(c: MetricColumn, alias: str) -> str:
    s = c.stored
    lower, upper = c.bounds
    if s.kind == "units":
        return f"{s.stored} >= 0"      # bytes >= 0 exactly when the unit count is (remainder in [0, unit))
    if s.kind == "hundredths":
        column, scale = f"{c.name}_x100", 100
    elif s.kind == "plain":
        column, scale = c.name, 1
    else:
        column, scale = _decode(c, alias), 1
    lo = f"{lower * scale:g}" if scale != 1 else repr(lower)
    if upper is None:
        return f"{column} >= {lo}"
    hi = f"{upper * scale:.0f}" if scale != 1 else repr(upper)
    return f"{column} between {lo} and {hi}"


def column_definitions(c: MetricColumn) -> list[str]:
    """The storage columns of one metric column, with its CHECK (named as server_metrics' was) and
    a remainder's range check: for ``create table`` and ``alter table ... add column``."""
    cols = c.storage_columns()
    out = [f"{cols[0][0]} {cols[0][1]} constraint {c.check_name} check ({_check(c, '')})"]
    for extra, sql_type in cols[1:]:
        out.append(f"{extra} {sql_type} constraint {TABLE}_{extra}_range check ({extra} between 0 and {c.stored.unit - 1})")
    return out


def create_table_columns(columns: Columns = None) -> str:
    """The column list of ``create table metrics.server_samples``: key, metric columns with
    their CHECKs, the seconds the sample covers."""
    lines = ["server_id bigint not null references tenancy.servers (id) on delete cascade",
             "collected_at timestamptz not null"]
    for c in columns or catalog.SERVER_METRICS:
        lines += column_definitions(c)
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    lower, upper = interval.bounds
    lines.append(f"{interval.name} {interval.sql_type} not null default {interval.default} "
                 f"constraint {interval.check_name} check ({interval.name} between {lower} and {upper})")
    return ",\n    ".join(lines)


def decoded(alias: str = "s", columns: Columns = None) -> str:
    """``server_id, collected_at, cpu_percent, ..., interval_seconds`` of server_metrics,
    read from server_samples aliased ``alias``."""
    interval = catalog.SAMPLE_INTERVALS["server_metrics"].name
    parts = [f"{alias}.{k}" for k in KEY]
    parts += [f"{_decode(c, alias)} as {c.name}" for c in columns or catalog.SERVER_METRICS]
    parts.append(f"{alias}.{interval}")
    return ",\n    ".join(parts)


def decoded_column(name: str, alias: str) -> str:
    """One column of server_metrics read from server_samples: a key, interval_seconds or a metric."""
    by_name = _by_name()
    return _decode(by_name[name], alias) if name in by_name else f"{alias}.{name}"


def encoded(alias: str, columns: Columns = None) -> tuple[list[str], list[str]]:
    """(server_samples' columns, the expressions over a server_metrics row ``alias`` that fill them)."""
    interval = catalog.SAMPLE_INTERVALS["server_metrics"].name
    names = [*KEY, *(n for n, _ in storage_columns(columns)), interval]
    values = [f"{alias}.{k}" for k in KEY]
    for c in columns or catalog.SERVER_METRICS:
        values += _encode(c, alias)
    values.append(f"{alias}.{interval}")
    return names, values
