"""The hypertables a load can write to, how to recognise them from a header,
and the column types read from the live catalog (so ``sql/`` stays the one
source of truth for types and NOT NULL constraints)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from ingest.errors import IngestFileError, IngestSetupError
from rmp.catalog import SERVER_METRIC_COLUMNS
from rmp.compact import TABLE as COMPACT_TABLE

SCHEMA = "metrics"


@dataclass(frozen=True)
class Target:
    table: str
    conflict: tuple[str, ...]
    # input columns that name an entity and are resolved to an id column
    references: dict[str, str]
    # columns whose presence in a header says "this is the table"
    signature: frozenset[str]

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.table}"


TARGETS: dict[str, Target] = {
    "server_metrics": Target(
        table="server_metrics",
        conflict=("server_id", "collected_at"),
        references={"server": "server_id", "organization": "server_id"},
        signature=frozenset(SERVER_METRIC_COLUMNS),
    ),
    "metric_samples": Target(
        table="metric_samples",
        conflict=("server_id", "metric_type_id", "collected_at"),
        references={"server": "server_id", "organization": "server_id", "metric_type": "metric_type_id"},
        signature=frozenset({"metric_type", "metric_type_id", "value", "labels"}),
    ),
    "site_usage": Target(
        table="site_usage",
        conflict=("site_id", "collected_at"),
        references={"site": "site_id", "organization": "site_id"},
        signature=frozenset({"site", "site_id", "memory_used_mb", "disk_used_mb", "bandwidth_mb",
                             "requests", "active_requests", "response_time_ms", "is_up"}),
    ),
    # Events of a server (its organization is the server's) or of an
    # organization alone (server empty); outcome succeeded|failed|cancelled.
    "scaling_events": Target(
        table="scaling_events",
        conflict=("organization_id", "server_id", "event_type", "executed_at"),
        references={"server": "server_id", "organization": "organization_id"},
        signature=frozenset({"event_type", "trigger_reason", "before_state", "after_state", "outcome",
                             "executed_at", "completed_at", "cost_impact"}),
    ),
}

# Columns the database fills itself; an input never sets them.
GENERATED = {"id"}


def detect_target(columns: Iterable[str], path: object) -> Target:
    """The target whose signature the header matches best; site and metric-type
    columns are decisive because server_metrics shares cpu_percent with site_usage."""
    cols = set(columns)
    if cols & {"site", "site_id"}:
        return TARGETS["site_usage"]
    if cols & {"metric_type", "metric_type_id"}:
        return TARGETS["metric_samples"]
    if cols & {"event_type", "executed_at"}:
        return TARGETS["scaling_events"]
    scores = {name: len(cols & t.signature) for name, t in TARGETS.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        raise IngestFileError(path, "cannot tell the target table from the header; use --table "
                              f"({', '.join(TARGETS)})")
    return TARGETS[best]


def get_target(name: str) -> Target:
    short = name.removeprefix(f"{SCHEMA}.")
    if short not in TARGETS:
        raise IngestSetupError(f"unknown table {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[short]


@dataclass(frozen=True)
class Column:
    name: str
    type: str        # format_type(), e.g. 'double precision', 'timestamp with time zone'
    oid: int         # for COPY binary: the staging table reuses the column's type
    not_null: bool
    default: str | None   # pg_get_expr of the column default (catalog text, not input)

    @property
    def has_default(self) -> bool:
        return self.default is not None


def compact_target(conn: psycopg.Connection, target: Target) -> Target | None:
    """Where rows of ``target`` are written when that is not the relation itself: from revision
    0012 on, ``metrics.server_metrics`` is a view and its rows live in ``metrics.server_samples``
    (rmp/compact.py). None for every other target, and for server_metrics before 0012."""
    if target.table != "server_metrics":
        return None
    if conn.execute("select to_regclass(%s) is null", (f"{SCHEMA}.{COMPACT_TABLE}",)).fetchone()[0]:
        return None
    return Target(table=COMPACT_TABLE, conflict=target.conflict, references=target.references,
                  signature=target.signature)


def table_columns(conn: psycopg.Connection, target: Target) -> list[Column]:
    """Columns of the target hypertable in table order, from pg_attribute. For server_metrics
    as a view (revision 0012 on), NOT NULL is the table's where the view shows a column of it
    as is (the key, interval_seconds): a row without them is still refused as before."""
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int, a.attnotnull,
               case when a.attidentity <> '' then 'identity' else pg_get_expr(d.adbin, d.adrelid) end
        from pg_attribute a
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (target.qualified,),
    ).fetchall()
    if not rows:
        raise IngestSetupError(
            f"table {target.qualified} does not exist; run the migrations first (alembic upgrade head)"
        )
    columns = [Column(*r) for r in rows]
    if (stored := compact_target(conn, target)) is not None:
        table = {c.name: c for c in table_columns(conn, stored)}
        columns = [Column(c.name, c.type, c.oid, table[c.name].not_null, c.default or table[c.name].default)
                   if c.name in table and table[c.name].type == c.type else c for c in columns]
    return columns
