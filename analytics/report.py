"""`rmp report`: an HTML and a Markdown report with PNG charts for capacity planners.

Sections: fleet overview, organizations nearest their quotas, servers predicted
to exhaust capacity soonest, recent anomalies (each with a chart). Everything
is written into a hidden temporary directory next to the destination and
renamed into place at the end, so readers and cron never see a half-written
report; every run is recorded in analytics.report_runs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from analytics import data, store
from rmp import queries

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNITS = {"cpu_percent": "%", "memory_percent": "%", "disk_percent": "%", "network_bytes_per_sec": "B/s",
         "disk_used_bytes": "B", "memory_used_bytes": "B", "fleet_percent": "%"}


class ReportFailed(Exception):
    """A report run failed; the message is the one log line (recorded in report_runs)."""


@dataclass
class ReportData:
    generated_at: datetime
    window_start: datetime | None
    window_end: datetime | None
    fleet: dict[str, Any] = field(default_factory=dict)
    fleet_hourly: pd.DataFrame | None = None
    quotas: list[dict] = field(default_factory=list)
    quotas_note: str | None = None
    org_forecasts: list[dict] = field(default_factory=list)
    exhaustion: list[dict] = field(default_factory=list)
    anomalies: list[dict] = field(default_factory=list)


def gather(conn: psycopg.Connection, days: float = 7, top: int = 10) -> ReportData:
    """Everything the report shows, read in autocommit statements (no long transaction).

    The queries are the files sql/queries/report_*.sql (an analyst can run them in psql).
    """
    end = data.latest_bucket(conn, "1h")
    start = end - timedelta(days=days) if end else None
    rd = ReportData(generated_at=datetime.now(UTC), window_start=start, window_end=end)
    rd.fleet = queries.run_dicts(conn, "report_fleet_summary", as_of=end or rd.generated_at)[0]
    if start is not None:
        rd.fleet_hourly = pd.DataFrame(queries.run_dicts(conn, "report_fleet_hourly", since=start))
    try:
        rd.quotas = queries.run_dicts(conn, "report_quota_status", top=top)
    except psycopg.errors.UndefinedTable:
        rd.quotas_note = "marts.org_quota_status is not built yet (run `rmp dbt build`)."
    rd.org_forecasts = queries.run_dicts(conn, "report_latest_forecasts", entity_type="organization",
                                         only_crossing=False, top=top)
    rd.exhaustion = queries.run_dicts(conn, "report_latest_forecasts", entity_type="server",
                                      only_crossing=True, top=top)
    for row in rd.exhaustion:
        row["unit_suffix"] = " %" if UNITS.get(row["metric"]) == "%" else ""
    if start is not None:
        rd.anomalies = queries.run_dicts(conn, "report_anomalies", since=start, top=top)
    return rd


def _series_around(conn: psycopg.Connection, server_id: int, metric: str, start: datetime,
                   end: datetime, resolution: str = "1h") -> pd.Series:
    if metric in data.BY_NAME:
        found = data.server_series(conn, data.BY_NAME[metric], resolution, start, end, [server_id])
    else:
        found = data.sample_series(conn, metric, resolution, start, end, [server_id])
    return found.get(server_id, pd.Series(dtype=float))


RESOLUTION_WORDS = {"1m": "1-minute", "5m": "5-minute", "1h": "hourly", "1d": "daily"}
# how much history an anomaly chart shows before/after the event: enough to see the
# daily cycle it broke, short enough that a 10-minute spike stays wider than a pixel
CONTEXT = {"1m": (timedelta(hours=6), timedelta(hours=3)), "5m": (timedelta(days=1), timedelta(hours=12)),
           "1h": (timedelta(days=3), timedelta(days=1)), "1d": (timedelta(days=30), timedelta(days=7))}


def unit_of(metric: str) -> str:
    """Unit of a metric for axis labels: the known ones, else the catalog name's suffix."""
    if metric in UNITS:
        return UNITS[metric]
    for suffix, unit in (("_percent", "%"), ("_bytes", "B"), ("_ms", "ms"), ("_sec", "/s")):
        if metric.endswith(suffix):
            return unit
    return ""


def _time_axis(ax) -> None:
    """Dates that never overlap: as many ticks as fit, labels only as long as they need to be."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _value_axis(ax, metric: str) -> None:
    from matplotlib.ticker import EngFormatter

    unit = unit_of(metric)
    if unit == "%":
        ax.set_ylim(0, 105)  # the whole range, so 90 % looks like 90 %
        ax.set_ylabel("%")
    elif unit in ("B", "B/s"):
        ax.yaxis.set_major_formatter(EngFormatter(unit=unit))  # 1.2 GB, not 1.2e9
    elif unit:
        ax.set_ylabel(unit)


def anomaly_context(conn: psycopg.Connection, row: dict) -> pd.Series:
    """The series an anomaly chart plots: the metric around the event at the resolution it was found at."""
    before, after = CONTEXT[row["resolution"]]
    return _series_around(conn, row["server_id"], row["metric"], row["started_at"] - before,
                          row["ended_at"] + after, row["resolution"])


def render_charts(conn: psycopg.Connection, rd: ReportData, img: Path) -> dict[str, str]:
    """PNG files (Agg backend, no display) named by what they show; returns key -> relative path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    charts: dict[str, str] = {}

    def save(fig, name: str) -> str:
        fig.tight_layout()
        fig.savefig(img / name, dpi=90)
        plt.close(fig)
        return f"img/{name}"

    if rd.fleet_hourly is not None and not rd.fleet_hourly.empty:
        fig, ax = plt.subplots(figsize=(10, 3.4))
        for col in ("cpu", "memory", "disk"):
            ax.plot(pd.to_datetime(rd.fleet_hourly["bucket"]), rd.fleet_hourly[col].astype(float), label=col)
        ax.set_title(f"Fleet: hourly average over {rd.fleet.get('servers', 0)} servers")
        _value_axis(ax, "fleet_percent")
        _time_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncols=3)
        charts["fleet"] = save(fig, "fleet_overview.png")

    for i, row in enumerate(rd.exhaustion):
        history = _series_around(conn, row["server_id"], row["metric"], rd.window_start, rd.window_end)
        points = pd.DataFrame(row["forecast"])
        unit = unit_of(row["metric"])
        fig, ax = plt.subplots(figsize=(10, 3.4))
        ax.plot(history.index, history.to_numpy(), color="C0", label="observed (hourly mean)")
        if not points.empty:
            at = pd.to_datetime(points["at"])
            ax.plot(at, points["yhat"], color="C1", label=f"forecast ({row['model']})")
            ax.fill_between(at, points["lo"], points["hi"], color="C1", alpha=0.2, label="95 % interval")
        ax.axhline(row["threshold"], color="red", linestyle="--", label=f"threshold {row['threshold']:g} {unit}")
        if row.get("is_above_threshold"):
            ax.axvline(row["threshold_crossing_at"], color="red", alpha=0.6, label="went over")
            state = f"already above {row['threshold']:g} {unit}"
        else:
            state = f"reaches {row['threshold']:g} {unit} {row['threshold_crossing_at']:%Y-%m-%d}"
        ax.set_title(f"{row['server']} ({row['organization']}): {row['metric']} [{unit}], {state}")
        _value_axis(ax, row["metric"])
        _time_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        row["chart"] = charts[f"exhaustion_{i}"] = save(fig, f"exhaustion_{i + 1}_{row['server_id']}.png")

    for i, row in enumerate(rd.anomalies):
        res = row["resolution"]
        step = pd.Timedelta(data.BUCKET_WIDTH[res])
        s = anomaly_context(conn, row)
        unit = unit_of(row["metric"])
        fig, ax = plt.subplots(figsize=(10, 3.2))
        ax.plot(s.index, s.to_numpy(), color="C0", linewidth=1, label=f"{RESOLUTION_WORDS[res]} mean")
        # the anomaly covers its buckets: [first bucket start, last bucket start + one step)
        ax.axvspan(row["started_at"], row["ended_at"] + step, color="red", alpha=0.25,
                   label=f"anomaly, score {row['score']:.1f}")
        inside = s[(s.index >= row["started_at"]) & (s.index <= row["ended_at"])]
        ax.plot(inside.index, inside.to_numpy(), "o", color="red", markersize=3)
        ax.axhline(row["expected"], color="grey", linestyle=":", label=f"expected at peak {row['expected']:.3g}")
        ax.set_title(f"{row['server']} ({row['organization']}): {row['metric']} [{unit}], {row['direction']}, "
                     f"{RESOLUTION_WORDS[res]} data, {row['detector']}")
        _value_axis(ax, row["metric"])
        _time_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        row["chart"] = charts[f"anomaly_{i}"] = save(fig, f"anomaly_{i + 1}_{row['id']}.png")
    return charts


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, digits=1: "" if v is None else f"{float(v):,.{digits}f}"
    env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M UTC")
    return env


def write_report(url: str | None, out_dir: Path, *, days: float = 7, top: int = 10,
                 parameters: dict | None = None, read_url: str | None = None) -> Path:
    """Write `out_dir/report-<run id>-<UTC time>/` with index.html, report.md and img/*.png.

    The report's queries go to ``read_url`` (a read replica) when given; its run
    record in analytics.report_runs is written through ``url`` (the primary).

    Raises ReportFailed (recorded as a failed run, nothing left behind) on any error.
    """
    out_dir = Path(out_dir)
    with data.connect(url) as conn, data.reader(conn, url, read_url) as src:
        run_id = store.start_run(conn, "report", {"days": days, "top": top, **(parameters or {})})
        tmp: Path | None = None
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out_dir))
            rd = gather(src, days, top)
            charts = render_charts(src, rd, tmp / "img")
            env = _environment()
            context = {"r": rd, "charts": charts, "run_id": run_id}
            (tmp / "index.html").write_text(env.get_template("report.html.j2").render(**context))
            (tmp / "report.md").write_text(env.get_template("report.md.j2").render(**context))
            final = out_dir / f"report-{run_id:05d}-{rd.generated_at:%Y%m%dT%H%M%SZ}"
            tmp.rename(final)  # same directory, so atomic: the report appears whole or not at all
            tmp = None
        except Exception as exc:
            message = f"report run {run_id} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            store.finish_run(conn, run_id, "failed", error=message)
            raise ReportFailed(message) from exc
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        store.finish_run(conn, run_id, "ok", output_path=str(final))
    return final
