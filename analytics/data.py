"""Read the series analytics works on: servers from the continuous aggregates,
organizations from the dbt marts (marts.org_metrics_hourly, marts.org_resource_usage).

Only names from the allow-lists below ever reach SQL, as psycopg.sql
Identifiers; user input (ids, times, metric type names) is always a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import psycopg
from psycopg import sql

from rmp import db
from rmp.catalog import NON_NEGATIVE, PERCENT, RESOLUTIONS, SCHEMA, Bounds
from rmp.errors import UserError

# resolution -> continuous aggregate, and its bucket width (from the catalog)
AGGREGATES: dict[str, str] = {r: t.name for r, t in RESOLUTIONS.items()}
BUCKET_WIDTH: dict[str, str] = {r: t.bucket_width for r, t in RESOLUTIONS.items()}


@dataclass(frozen=True)
class ServerMetric:
    name: str  # the metric name written to analytics.* tables
    columns: tuple[str, ...]  # aggregate columns summed into the series
    threshold: float | None  # capacity line a forecast looks for (percent), if any
    bounds: Bounds = NON_NEGATIVE  # what the value can physically be; forecasts are clipped to it


SERVER_METRICS: dict[str, ServerMetric] = {
    "cpu": ServerMetric("cpu_percent", ("cpu_avg_percent",), None, PERCENT),
    "memory": ServerMetric("memory_percent", ("memory_avg_percent",), 90.0, PERCENT),
    "disk": ServerMetric("disk_percent", ("disk_avg_percent",), 90.0, PERCENT),
    "network": ServerMetric("network_bytes_per_sec",
                            ("network_rx_avg_bytes_per_sec", "network_tx_avg_bytes_per_sec"), None),
}
BY_NAME = {m.name: m for m in SERVER_METRICS.values()}

# organization quota -> (marts.org_metrics_hourly usage column, marts.org_resource_usage limit column)
ORG_QUOTAS: dict[str, tuple[str, str]] = {
    "disk_used_bytes": ("disk_used_avg_bytes_total", "max_disk_bytes"),
    "memory_used_bytes": ("memory_used_avg_bytes_total", "max_memory_bytes"),
}


class MartsMissing(UserError):
    """The dbt marts organization forecasts read are not built."""


class UnknownMetric(UserError):
    """A metric name that is neither a server metric nor a metric type in the catalog."""


def resolve_server_metric(name: str) -> ServerMetric:
    """``cpu`` or ``cpu_percent`` -> the ServerMetric."""
    metric = SERVER_METRICS.get(name) or BY_NAME.get(name)
    if metric is None:
        raise UnknownMetric(f"unknown metric {name!r}; choose from "
                            f"{', '.join(SERVER_METRICS)} or a metrics.metric_types name")
    return metric


def _frame(conn: psycopg.Connection, query: sql.Composable, params: dict) -> pd.DataFrame:
    with conn.cursor() as cur:
        cur.execute(query, params)
        cols = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)


def latest_bucket(conn: psycopg.Connection, resolution: str = "1h") -> datetime | None:
    """Newest bucket in the aggregate: "the last N days" counts back from the data, not the clock."""
    view = sql.Identifier(SCHEMA, AGGREGATES[resolution])
    return conn.execute(sql.SQL("select max(bucket) from {}").format(view)).fetchone()[0]


def server_series(
    conn: psycopg.Connection,
    metric: ServerMetric,
    resolution: str,
    since: datetime,
    until: datetime | None = None,
    server_ids: list[int] | None = None,
) -> dict[int, pd.Series]:
    """server_id -> series of `metric` per bucket in [since, until] from the aggregate."""
    if resolution not in AGGREGATES:
        raise UserError(f"unknown resolution {resolution!r}; choose from {', '.join(AGGREGATES)}")
    value = sql.SQL(" + ").join(sql.Identifier(c) for c in metric.columns)
    query = sql.SQL(
        "select server_id, bucket, ({value})::double precision as value from {view}"
        " where bucket >= %(since)s and (%(until)s::timestamptz is null or bucket <= %(until)s)"
        " and (%(ids)s::bigint[] is null or server_id = any(%(ids)s))"
        " order by server_id, bucket"
    ).format(value=value, view=sql.Identifier(SCHEMA, AGGREGATES[resolution]))
    df = _frame(conn, query, {"since": since, "until": until, "ids": server_ids})
    return _split(df, "server_id")


def sample_series(
    conn: psycopg.Connection,
    metric_type: str,
    resolution: str,
    since: datetime,
    until: datetime | None = None,
    server_ids: list[int] | None = None,
) -> dict[int, pd.Series]:
    """server_id -> mean of a narrow metric (metrics.metric_samples) per time bucket."""
    known = conn.execute("select id from metrics.metric_types where name = %s", (metric_type,)).fetchone()
    if known is None:
        raise UnknownMetric(f"unknown metric {metric_type!r}: not a server metric "
                            f"({', '.join(SERVER_METRICS)}) nor in metrics.metric_types")
    df = _frame(conn, sql.SQL(
        "select server_id, time_bucket(%(width)s::interval, collected_at) as bucket,"
        " avg(value)::double precision as value from metrics.metric_samples"
        " where metric_type_id = %(type)s and collected_at >= %(since)s"
        " and (%(until)s::timestamptz is null or collected_at <= %(until)s)"
        " and (%(ids)s::bigint[] is null or server_id = any(%(ids)s))"
        " group by 1, 2 order by 1, 2"
    ), {"width": BUCKET_WIDTH[resolution], "type": known[0], "since": since, "until": until,
        "ids": server_ids})
    return _split(df, "server_id")


def organization_usage(
    conn: psycopg.Connection, quota: str, since: datetime, until: datetime | None = None,
) -> tuple[dict[int, pd.Series], dict[int, float | None]]:
    """(organization_id -> hourly usage summed over its servers, organization_id -> licence limit).

    Reads the marts: complete hours of marts.org_metrics_hourly (a partial hour,
    where some servers have not reported yet, would look like a drop) and the
    limits of marts.org_resource_usage. Each organization counts its own
    servers; a parent's licence does not include its sub-organizations here
    (their own licences bound them).
    """
    usage_col, limit_col = ORG_QUOTAS[quota]
    try:
        df = _frame(conn, sql.SQL(
            "select organization_id, hour_start_at as bucket, {usage} as value from marts.org_metrics_hourly"
            " where is_complete and hour_start_at >= %(since)s"
            " and (%(until)s::timestamptz is null or hour_start_at <= %(until)s) order by 1, 2"
        ).format(usage=sql.Identifier(usage_col)), {"since": since, "until": until})
        limits = dict(conn.execute(sql.SQL(
            "select organization_id, {limit}::double precision from marts.org_resource_usage"
        ).format(limit=sql.Identifier(limit_col))).fetchall())
    except psycopg.errors.UndefinedTable as exc:
        raise MartsMissing("organization forecasts read marts.org_metrics_hourly and marts.org_resource_usage,"
                           " which are not built yet: run `rmp dbt build`") from exc
    return _split(df, "organization_id"), limits


def _split(df: pd.DataFrame, key: str) -> dict[int, pd.Series]:
    out: dict[int, pd.Series] = {}
    if df.empty:
        return out
    df["bucket"] = pd.to_datetime(df["bucket"], utc=True)
    for entity, part in df.groupby(key, sort=True):
        out[int(entity)] = pd.Series(part["value"].to_numpy(dtype=float), index=pd.DatetimeIndex(part["bucket"]),
                                     name="value")
    return out


def connect(url: str | None = None) -> psycopg.Connection:
    """An autocommit connection: reads here never hold a transaction open on the shared engine."""
    return db.connect(url, autocommit=True)


@contextmanager
def reader(writer: psycopg.Connection, url: str | None, read_url: str | None) -> Iterator[psycopg.Connection]:
    """The connection to read series from: a read replica when ``read_url`` names
    one (writes stay on ``writer``, the primary), else ``writer`` itself. The
    replica is first caught up with the primary, so reads see what was just written."""
    if read_url is None or read_url == url:
        yield writer
        return
    with connect(db.caught_up_read_url(url, read_url)) as conn:
        yield conn
