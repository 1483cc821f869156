"""Write analytics results: forecasts and anomalies upserted on their natural keys
(docs/schema.md), so a re-run replaces rows instead of duplicating them, and
one row per run in analytics.report_runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from analytics.anomaly import Anomaly
from analytics.forecast import ForecastResult


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _ts(v: pd.Timestamp | None) -> datetime | None:
    return None if v is None else v.to_pydatetime()


def forecast_points_json(result: ForecastResult) -> list[dict]:
    if result.points is None:
        return []
    return [
        {"at": at.isoformat(), "yhat": float(r.yhat), "lo": float(r.lo), "hi": float(r.hi)}
        for at, r in zip(result.points.index, result.points.itertuples(index=False), strict=True)
    ]


def start_run(conn: psycopg.Connection, kind: str, parameters: dict) -> int:
    return conn.execute(
        "insert into analytics.report_runs (kind, status, parameters) values (%s, 'running', %s) returning id",
        (kind, Jsonb(parameters)),
    ).fetchone()[0]


def finish_run(conn: psycopg.Connection, run_id: int, status: str, output_path: str | None = None,
               error: str | None = None) -> None:
    conn.execute(
        "update analytics.report_runs set status = %s, finished_at = now(), output_path = %s, error = %s"
        " where id = %s",
        (status, output_path, error, run_id),
    )


_UPSERT_FORECAST = """
insert into analytics.forecasts (
    run_id, entity_type, entity_id, metric, model, horizon_start, forecast, trend, slope_per_day,
    r_squared, threshold, threshold_crossing_at, crossing_lo_at, crossing_hi_at, mase, status,
    is_above_threshold, seasonal_naive_mase, is_low_confidence, interval_coverage, interval_method)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
on conflict (entity_type, entity_id, metric, horizon_start) do update set
    run_id = excluded.run_id, model = excluded.model, forecast = excluded.forecast,
    trend = excluded.trend, slope_per_day = excluded.slope_per_day, r_squared = excluded.r_squared,
    threshold = excluded.threshold, threshold_crossing_at = excluded.threshold_crossing_at,
    crossing_lo_at = excluded.crossing_lo_at, crossing_hi_at = excluded.crossing_hi_at,
    mase = excluded.mase, status = excluded.status, is_above_threshold = excluded.is_above_threshold,
    seasonal_naive_mase = excluded.seasonal_naive_mase, is_low_confidence = excluded.is_low_confidence,
    interval_coverage = excluded.interval_coverage, interval_method = excluded.interval_method,
    created_at = now()
"""


def write_forecast(conn: psycopg.Connection, run_id: int | None, entity_type: str, entity_id: int,
                   metric: str, result: ForecastResult, last_observed: datetime | None) -> None:
    """Upsert one forecast. An insufficient-data result is keyed on the hour after the
    last observation (there is no forecast horizon) and carries no numbers."""
    horizon_start = _ts(result.horizon_start) or last_observed
    conn.execute(_UPSERT_FORECAST, (
        run_id, entity_type, entity_id, metric, result.model or "none", horizon_start,
        Jsonb(forecast_points_json(result)), result.trend, _num(result.slope_per_day),
        _num(result.r_squared), _num(result.threshold), _ts(result.threshold_crossing_at),
        _ts(result.crossing_lo_at), _ts(result.crossing_hi_at), _num(result.mase), result.status,
        result.above_threshold, _num(result.seasonal_naive_mase), result.low_confidence,
        _num(result.interval_coverage), result.interval_method,
    ))


def replace_anomalies(conn: psycopg.Connection, server_id: int, metric: str, detector: str,
                      window_start: datetime, window_end: datetime, anomalies: Iterable[Anomaly],
                      resolution: str | None = None) -> int:
    """Make the stored anomalies of this series in [window_start, window_end] exactly these,
    found on the `resolution` aggregate (kept so charts plot them at that resolution).

    Delete-then-insert in one transaction: a re-run over the same window with
    more data may move an anomaly's start, which an upsert alone would duplicate.
    """
    rows = [
        (server_id, metric, detector, a.started_at.to_pydatetime(), a.ended_at.to_pydatetime(),
         _num(a.observed), _num(a.expected), _num(a.score), a.direction, resolution)
        for a in anomalies
    ]
    with conn.transaction():
        conn.execute(
            "delete from analytics.anomalies where server_id = %s and metric = %s and detector = %s"
            " and started_at >= %s and started_at <= %s",
            (server_id, metric, detector, window_start, window_end),
        )
        # one execute per row: executemany's pipeline mode waits forever on the embedded
        # engine when there are no rows, and anomalies per series are few
        for row in rows:
            conn.execute(
                "insert into analytics.anomalies (server_id, metric, detector, started_at, ended_at,"
                " observed, expected, score, direction, resolution)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " on conflict (server_id, metric, detector, started_at) do update set"
                " ended_at = excluded.ended_at, observed = excluded.observed, expected = excluded.expected,"
                " score = excluded.score, direction = excluded.direction, resolution = excluded.resolution,"
                " created_at = now()",
                row,
            )
    return len(rows)
