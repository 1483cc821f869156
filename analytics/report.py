"""`rmp report`: an HTML and a Markdown report with PNG charts for capacity planners.

Sections: fleet overview, organizations nearest their quotas (with their
used-bytes forecasts, each measure labelled), servers predicted to exhaust
capacity soonest (with each forecast's backtest MASE, its band's measured
coverage and a low-confidence mark when no model beat seasonal-naive), and
anomaly incidents grouped per server, each linked to its chart. Every value
a user or tenant controls (server and organization names) is escaped: HTML
autoescape on, Markdown special characters backslash-escaped. Everything
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
from analytics.anomaly import PRIMARY
from analytics.scaling_section import gather_scaling
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
    anomalies: list[dict] = field(default_factory=list)  # incidents, ordered by server then start
    scaling: list[dict] = field(default_factory=list)       # analytics/scaling_section.py
    scaling_note: str | None = None
    detector: str = PRIMARY

    @property
    def incidents_by_server(self) -> list[dict]:
        """[{server, organization, incidents: [...]}] in the order the query ranked the servers."""
        groups: dict[int, dict] = {}
        for a in self.anomalies:
            g = groups.setdefault(a["server_id"], {"server_id": a["server_id"], "server": a["server"],
                                                   "organization": a["organization"], "incidents": []})
            g["incidents"].append(a)
        return list(groups.values())


# What each licence quota of marts.org_quota_status counts, and what each forecast measures:
# the quota table counts ALLOCATED capacity (server sizes), the forecasts USED bytes.
QUOTA_MEASURES = {
    "servers": "servers", "applications": "applications", "databases": "databases",
    "deployments_per_month": "deployments this billing period", "cpu_cores": "cpu cores allocated",
    "memory": "memory allocated (sum of server memory sizes)",
    "disk": "disk allocated (sum of server disk sizes)",
}
FORECAST_MEASURES = {
    "disk_used_bytes": "disk used (sum over servers)",
    "memory_used_bytes": "memory used (sum over servers)",
    "cpu_percent": "cpu used", "memory_percent": "memory used", "disk_percent": "disk used",
    "network_bytes_per_sec": "network rx + tx",
}


def gather(conn: psycopg.Connection, days: float = 7, top: int = 10, detector: str = PRIMARY) -> ReportData:
    """Everything the report shows, read in autocommit statements (no long transaction).

    The queries are the files sql/queries/report_*.sql (an analyst can run them in psql).
    """
    end = data.latest_bucket(conn, "1h")
    start = end - timedelta(days=days) if end else None
    rd = ReportData(generated_at=datetime.now(UTC), window_start=start, window_end=end, detector=detector)
    rd.fleet = queries.run_dicts(conn, "report_fleet_summary", as_of=end or rd.generated_at)[0]
    if start is not None:
        rd.fleet_hourly = pd.DataFrame(queries.run_dicts(conn, "report_fleet_hourly", since=start))
    try:
        rd.quotas = queries.run_dicts(conn, "report_quota_status", top=top)
        rd.org_forecasts = queries.run_dicts(conn, "report_org_forecasts", top=top)
    except psycopg.errors.UndefinedTable:
        rd.quotas_note = ("marts.org_quota_status or marts.capacity_forecasts is not built yet (run `rmp dbt"
                          " build`): quotas and the organization forecasts held against them are not shown.")
    for q in rd.quotas:
        q["measure"] = QUOTA_MEASURES.get(q["quota_name"], q["quota_name"])
    for f in rd.org_forecasts:
        f["measure"] = FORECAST_MEASURES.get(f["metric"], f["metric"])
        f["allocated_measure"] = QUOTA_MEASURES.get(f["quota_name"] or "", "")
        f["unit"] = unit_of(f["metric"])
        f["next_hour"] = None if f["first_forecast_value"] is None else float(f["first_forecast_value"])
        f["threshold_text"] = "no limit" if f["threshold"] is None else threshold_text(f["threshold"], f["unit"])
    rd.exhaustion = queries.run_dicts(conn, "report_server_forecasts", top=top)
    for row in rd.exhaustion:
        row["unit"] = unit_of(row["metric"])
        row["unit_suffix"] = " %" if row["unit"] == "%" else ""
        row["measure"] = FORECAST_MEASURES.get(row["metric"], row["metric"])
        row["threshold_text"] = threshold_text(row["threshold"], row["unit"])
    if start is not None:
        rd.anomalies = queries.run_dicts(conn, "report_incidents", since=start, top=top, detector=detector)
        for a in rd.anomalies:
            a["unit"] = unit_of(a["metric"])
    rd.scaling, rd.scaling_note = gather_scaling(conn)
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
            ax.fill_between(at, points["lo"], points["hi"], color="C1", alpha=0.2,
                            label="95 % band" + (f" (measured {100 * row['interval_coverage']:.0f} %)"
                                                 if row.get("interval_coverage") is not None else ""))
        limit = threshold_text(row["threshold"], unit)
        ax.axhline(row["threshold"], color="red", linestyle="--", label=f"threshold {limit}")
        if row.get("is_above_threshold"):
            ax.axvline(row["threshold_crossing_at"], color="red", alpha=0.6, label="went over")
            state = f"already above {limit}"
        else:
            state = f"reaches {limit} {row['threshold_crossing_at']:%Y-%m-%d}"
        if row.get("is_low_confidence"):
            state += " (low confidence)"
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
        ax.axhline(row["expected"], color="grey", linestyle=":", label=f"expected at peak {human(row['expected'], unit)}")
        ax.set_title(f"{row['server']} ({row['organization']}): {row['metric']} [{unit}], {row['direction']}, "
                     f"{RESOLUTION_WORDS[res]} data, {row['detector']}")
        _value_axis(ax, row["metric"])
        _time_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        row["chart"] = charts[f"anomaly_{i}"] = save(fig, f"anomaly_{i + 1}_{row['id']}.png")
        row["anchor"] = f"incident-{row['id']}"
    return charts


def human(value: float | None, unit: str = "", digits: int = 1) -> str:
    """A value in its unit for people: bytes as kB/MB/GB/TB/PB with one decimal (powers of
    1000, as disks are sold and as the charts' axes show them); percent as '93.5 %'."""
    if value is None:
        return ""
    v = float(value)
    if unit in ("B", "B/s"):
        suffix = "/s" if unit == "B/s" else ""
        for prefix, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(v) >= size:
                return f"{v / size:,.{digits}f} {prefix}{suffix}"
        return f"{v:,.0f} B{suffix}"
    if unit == "%":
        return f"{v:,.{digits}f} %"
    return f"{v:,.{digits}f}{(' ' + unit) if unit else ''}"


def threshold_text(value: float, unit: str) -> str:
    """A capacity line: '90 %' (whole percent), '1.5 TB' (bytes with one decimal)."""
    return human(value, unit, 0 if unit == "%" else 1)


def per_day(value: float | None, unit: str = "") -> str:
    """A rate per day in the same units as the value: '+12.3 GB/day', '-0.4 %/day'."""
    if value is None:
        return ""
    return f"{'+' if value >= 0 else '-'}{human(abs(value), unit)}/day"


def coverage(value: float | None) -> str:
    return "not measured" if value is None else f"{100 * float(value):.0f} %"


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def markdown_escape(text: str) -> str:
    """Text that Markdown (and the HTML a Markdown viewer makes of it) shows literally."""
    return text.translate(_MARKDOWN_SPECIAL)


def _filters(env) -> None:
    env.filters["num"] = lambda v, digits=1: "" if v is None else f"{float(v):,.{digits}f}"
    env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M UTC")
    env.filters["human"] = human
    env.filters["per_day"] = per_day
    env.filters["coverage"] = coverage


def _environment(markdown: bool = False):
    """Jinja for the HTML (autoescape on, every template) or the Markdown report (every
    printed value Markdown-escaped unless a template marks it safe, e.g. an image path)."""
    import jinja2
    from markupsafe import Markup

    if markdown:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False, undefined=jinja2.StrictUndefined,
            finalize=lambda v: v if isinstance(v, Markup) else markdown_escape("" if v is None else str(v)))
    else:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                 undefined=jinja2.StrictUndefined)
    _filters(env)
    return env


def write_report(url: str | None, out_dir: Path, *, days: float = 7, top: int = 10,
                 parameters: dict | None = None, read_url: str | None = None, detector: str = PRIMARY) -> Path:
    """Write `out_dir/report-<run id>-<UTC time>/` with index.html, report.md and img/*.png.

    The report's queries go to ``read_url`` (a read replica) when given; its run
    record in analytics.report_runs is written through ``url`` (the primary).
    `detector`: whose anomaly incidents the report lists (default stl_esd).

    Raises ReportFailed (recorded as a failed run, nothing left behind) on any error.
    """
    out_dir = Path(out_dir)
    with data.connect(url) as conn, data.reader(conn, url, read_url) as src:
        run_id = store.start_run(conn, "report", {"days": days, "top": top, **(parameters or {})})
        tmp: Path | None = None
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out_dir))
            rd = gather(src, days, top, detector)
            charts = render_charts(src, rd, tmp / "img")
            context = {"r": rd, "charts": charts, "run_id": run_id}
            (tmp / "index.html").write_text(_environment().get_template("report.html.j2").render(**context))
            (tmp / "report.md").write_text(_environment(markdown=True).get_template("report.md.j2").render(**context))
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
