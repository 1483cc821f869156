"""The jobs behind `rmp forecast` and `rmp anomalies`: read series, run the
algorithms, store the results. Progress goes to an optional callback so the
CLI can show a bar and tests stay quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd

from analytics import data, store
from analytics.anomaly import (
    DEFAULT_SENSITIVITY,
    DETECTORS,
    STL_MAD,
    WARM_UP,
    InsufficientHistory,
    detect,
)
from analytics.forecast import NON_NEGATIVE, STATUS_OK, Bounds, ForecastConfig, forecast_series
from rmp.errors import UserError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class ForecastSummary:
    run_id: int
    series: int = 0
    ok: int = 0
    insufficient: int = 0
    models: dict[str, int] = field(default_factory=dict)


@dataclass
class AnomalySummary:
    series: int = 0
    skipped_short: int = 0
    anomalies: int = 0
    by_detector: dict[str, int] = field(default_factory=dict)


def _window(conn, resolution: str, days: float, until: datetime | None) -> tuple[datetime, datetime] | None:
    end = until or data.latest_bucket(conn, resolution)
    if end is None:
        return None
    return end - timedelta(days=days), end


def run_forecasts(
    url: str | None = None,
    *,
    metrics: Sequence[str] = tuple(data.SERVER_METRICS),
    history_days: float = 28,
    horizon_days: int = 14,
    until: datetime | None = None,
    organizations: bool = True,
    server_ids: list[int] | None = None,
    thresholds: dict[str, float] | None = None,
    progress: Progress | None = None,
    read_url: str | None = None,
) -> ForecastSummary:
    """Forecast every server metric (hourly aggregate) and organization quota; upsert analytics.forecasts.

    Series are read from ``read_url`` (a read replica) when given; results go to ``url``."""
    chosen = [data.resolve_server_metric(m) for m in metrics]
    cfg = ForecastConfig(horizon_days=horizon_days)
    with data.connect(url) as conn, data.reader(conn, url, read_url) as src:
        run_id = store.start_run(conn, "forecast", {
            "metrics": [m.name for m in chosen], "history_days": history_days,
            "horizon_days": horizon_days, "until": until.isoformat() if until else None,
        })
        summary = ForecastSummary(run_id=run_id)
        window = _window(src, "1h", history_days, until)
        jobs: list[tuple[str, int, str, pd.Series, float | None, Bounds]] = []
        if window is not None:
            since, end = window
            for m in chosen:
                threshold = (thresholds or {}).get(m.name, m.threshold)
                for sid, s in data.server_series(src, m, "1h", since, end, server_ids).items():
                    jobs.append(("server", sid, m.name, s, threshold, m.bounds))
            org_usage = {}
            if organizations and server_ids is None:
                try:
                    org_usage = {q: data.organization_usage(src, q, since, end) for q in data.ORG_QUOTAS}
                except data.MartsMissing as exc:
                    log.warning("%s; organization forecasts skipped", exc)
            for quota, (usage, limits) in org_usage.items():
                for oid, s in usage.items():
                    jobs.append(("organization", oid, quota, s, limits.get(oid), NON_NEGATIVE))
        try:
            for i, (etype, eid, metric, series, threshold, bounds) in enumerate(jobs):
                result = forecast_series(series, cfg, threshold, bounds)
                store.write_forecast(conn, run_id, etype, eid, metric, result,
                                     series.index[-1].to_pydatetime() + timedelta(hours=1))
                summary.series += 1
                if result.status == STATUS_OK:
                    summary.ok += 1
                    summary.models[result.model] = summary.models.get(result.model, 0) + 1
                else:
                    summary.insufficient += 1
                if progress:
                    progress(i + 1, len(jobs))
        except Exception as exc:
            store.finish_run(conn, run_id, "failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
            raise
        store.finish_run(conn, run_id, "ok")
    return summary


def run_anomalies(
    url: str | None = None,
    *,
    metrics: Sequence[str] = ("cpu", "memory", "disk", "network"),
    detectors: Sequence[str] = DETECTORS,
    resolution: str = "1h",
    days: float = 7,
    until: datetime | None = None,
    sensitivity: float = DEFAULT_SENSITIVITY,
    server_ids: list[int] | None = None,
    progress: Progress | None = None,
    read_url: str | None = None,
) -> AnomalySummary:
    """Detect anomalies over the last `days` of each series and replace the stored ones in that window.

    A metric is a server metric (cpu, memory, disk, network; read from the
    continuous aggregate at `resolution`) or a metrics.metric_types name (read
    from metrics.metric_samples, bucketed at `resolution`). Each series is read
    from one warm-up (a day) before the window, so the window's first day is
    judged against history like the rest (stl_esd flags nothing in a series'
    own first day); only anomalies starting inside the window are stored.
    Series are read from ``read_url`` (a read replica) when given; anomalies
    are stored through ``url``.
    """
    for d in detectors:
        if d not in DETECTORS:
            raise UserError(f"unknown detector {d!r}; choose from {', '.join(DETECTORS)}")
    if resolution not in data.AGGREGATES:
        raise UserError(f"unknown resolution {resolution!r}; choose from {', '.join(data.AGGREGATES)}")
    summary = AnomalySummary()
    with data.connect(url) as conn, data.reader(conn, url, read_url) as src:
        window = _window(src, resolution, days, until)
        if window is None:
            return summary
        since, end = window
        context = since - WARM_UP.to_pytimedelta()
        jobs: list[tuple[int, str, pd.Series]] = []
        for name in metrics:
            if name in data.SERVER_METRICS or name in data.BY_NAME:
                m = data.resolve_server_metric(name)
                found = data.server_series(src, m, resolution, context, end, server_ids)
                metric_name = m.name
            else:
                found = data.sample_series(src, name, resolution, context, end, server_ids)
                metric_name = name
            jobs.extend((sid, metric_name, s) for sid, s in found.items())
        total = len(jobs) * len(detectors)
        done = 0
        for sid, metric_name, series in jobs:
            summary.series += 1
            for det in detectors:
                try:
                    found_anomalies = [a for a in detect(series, det, sensitivity)
                                       if a.started_at >= pd.Timestamp(since)]
                except InsufficientHistory:
                    # keep what an earlier run with more history stored
                    summary.skipped_short += det == STL_MAD
                    done += 1
                    continue
                n = store.replace_anomalies(conn, sid, metric_name, det, since, end, found_anomalies,
                                            resolution)
                summary.anomalies += n
                summary.by_detector[det] = summary.by_detector.get(det, 0) + n
                done += 1
                if progress:
                    progress(done, total)
    return summary
