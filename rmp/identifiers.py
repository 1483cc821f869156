"""Allow-lists for names a user gives that end up in SQL as identifiers.

Values always travel as parameters; names cannot, so a name coming from a
user (a login, a table, a column, an interval) is checked here against what
the platform knows and only then composed with ``psycopg.sql.Identifier``.
PostgreSQL silently truncates identifiers to 63 bytes, so a longer name could
address a different object: it is refused, not cut.
"""

from __future__ import annotations

import re

from rmp.errors import UserError

MAX_IDENTIFIER_BYTES = 63

# Relations a user may name (exports, reports), by schema.
TABLES: dict[str, frozenset[str]] = {
    "metrics": frozenset({
        "server_metrics", "metric_samples", "site_usage", "scaling_events", "metric_types", "rejected_rows",
        "server_metrics_1m", "server_metrics_5m", "server_metrics_1h", "server_metrics_1d",
        "site_usage_daily", "server_last_point",
    }),
    "tenant": frozenset({
        "server_metrics", "metric_samples", "site_usage", "scaling_events", "metric_types",
        "server_metrics_1m", "server_metrics_5m", "server_metrics_1h", "server_metrics_1d",
        "site_usage_daily", "server_last_point",
    }),
    "marts": frozenset({
        "org_metrics_hourly", "org_quota_status", "org_resource_usage", "org_usage_rollup",
        "server_capacity", "server_comparison", "server_current", "site_usage_daily",
    }),
    "analytics": frozenset({"forecasts", "anomalies", "report_runs"}),
}

INTERVAL_UNITS = ("second", "minute", "hour", "day", "week", "month", "year")
_INTERVAL = re.compile(rf"^([1-9][0-9]{{0,5}})\s?({'|'.join(INTERVAL_UNITS)})s?$")
_LOGIN = re.compile(r"^[a-z_][a-z0-9_.@-]*$")


class IdentifierError(UserError):
    """A name that is not on the allow-list."""


def _printable(value: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return repr(shown)


def check_table(name: str, *, default_schema: str = "marts") -> tuple[str, str]:
    """``schema.table`` or ``table`` -> (schema, table), both on the allow-list."""
    schema, _, table = name.rpartition(".")
    schema = schema or default_schema
    if schema not in TABLES or table not in TABLES[schema]:
        known = ", ".join(f"{s}.{t}" for s in sorted(TABLES) for t in sorted(TABLES[s]))
        raise IdentifierError(f"unknown table {_printable(name)}; choose one of {known}")
    return schema, table


def check_column(name: str, allowed: set[str] | frozenset[str]) -> str:
    """A column name that is one of ``allowed`` (e.g. the columns read from the catalog)."""
    if name not in allowed:
        raise IdentifierError(f"unknown column {_printable(name)}; choose one of {', '.join(sorted(allowed))}")
    return name


def check_interval(text: str) -> str:
    """'5 minutes', '1 hour', '90 days' ... -> normalised interval text; anything else is refused."""
    m = _INTERVAL.match(text.strip().lower())
    if not m:
        raise IdentifierError(f"not an interval: {_printable(text)} (expected e.g. '5 minutes', '1 hour', '90 days')")
    n, unit = m.groups()
    return f"{n} {unit}{'' if n == '1' else 's'}"


def check_login(name: str) -> str:
    """A role name a user types: lowercase, no quoting needed, at most 63 bytes."""
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(f"login name {_printable(name)} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    if not _LOGIN.match(name):
        raise IdentifierError(
            f"login name {_printable(name)}: use lowercase letters, digits and _ . @ - (starting with a letter or _)")
    return name
