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

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNITS = {"cpu_percent": "%", "memory_percent": "%", "disk_percent": "%", "network_bytes_per_sec": "B/s",
         "disk_used_bytes": "B", "memory_used_bytes": "B"}


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


def _dicts(conn: psycopg.Connection, query: str, params: tuple = ()) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def gather(conn: psycopg.Connection, days: float = 7, top: int = 10) -> ReportData:
    """Everything the report shows, read in autocommit statements (no long transaction)."""
    end = data.latest_bucket(conn, "1h")
    start = end - timedelta(days=days) if end else None
    rd = ReportData(generated_at=datetime.now(UTC), window_start=start, window_end=end)
    rd.fleet = _dicts(conn, """
        select (select count(*) from tenancy.organizations) as organizations,
               (select count(*) from tenancy.servers) as servers,
               (select count(*) from tenancy.servers where status = 'active') as active_servers,
               (select count(*) from metrics.server_last_point
                 where last_metrics_at >= coalesce(%s, now()) - interval '1 day') as servers_reporting,
               (select avg(cpu_percent) from metrics.server_last_point) as cpu_avg_percent,
               (select avg(memory_percent) from metrics.server_last_point) as memory_avg_percent,
               (select avg(disk_percent) from metrics.server_last_point) as disk_avg_percent,
               (select max(disk_percent) from metrics.server_last_point) as disk_max_percent
    """, (end,))[0]
    if start is not None:
        hourly = _dicts(conn, """
            select bucket, avg(cpu_avg_percent) as cpu, avg(memory_avg_percent) as memory,
                   avg(disk_avg_percent) as disk
            from metrics.server_metrics_1h where bucket >= %s group by bucket order by bucket""", (start,))
        rd.fleet_hourly = pd.DataFrame(hourly)
    try:
        rd.quotas = _dicts(conn, """
            select o.name as organization, q.quota_name, q.unit, q.limit_value, q.used_value, q.percent_used,
                   q.is_exceeded
            from marts.org_quota_status q join tenancy.organizations o on o.id = q.organization_id
            where not q.is_unlimited
            order by q.percent_used desc nulls last, o.name, q.quota_name limit %s""", (top,))
    except psycopg.errors.UndefinedTable:
        rd.quotas_note = "marts.org_quota_status is not built yet (run `rmp dbt build`)."
    latest = """
        select distinct on (f.entity_type, f.entity_id, f.metric) f.*
        from analytics.forecasts f where f.entity_type = %s
        order by f.entity_type, f.entity_id, f.metric, f.horizon_start desc"""
    rd.org_forecasts = _dicts(conn, f"""
        select o.name as organization, l.metric, l.model, l.threshold, l.threshold_crossing_at,
               l.crossing_lo_at, l.crossing_hi_at, l.slope_per_day, l.trend, l.status, l.is_above_threshold
        from ({latest}) l join tenancy.organizations o on o.id = l.entity_id
        order by l.threshold_crossing_at nulls last, o.name, l.metric limit %s""", ("organization", top))
    rd.exhaustion = _dicts(conn, f"""
        select s.id as server_id, s.name as server, o.name as organization, l.metric, l.model,
               l.threshold, l.threshold_crossing_at, l.crossing_lo_at, l.crossing_hi_at, l.trend,
               l.slope_per_day, l.mase, l.forecast, l.is_above_threshold
        from ({latest}) l join tenancy.servers s on s.id = l.entity_id
        join tenancy.organizations o on o.id = s.organization_id
        where l.threshold_crossing_at is not null
        order by l.threshold_crossing_at, s.name, l.metric limit %s""", ("server", top))
    for row in rd.exhaustion:
        row["unit_suffix"] = " %" if UNITS.get(row["metric"]) == "%" else ""
    if start is not None:
        rd.anomalies = _dicts(conn, """
            select a.id, a.server_id, s.name as server, a.metric, a.detector, a.started_at, a.ended_at,
                   a.observed, a.expected, a.score, a.direction
            from analytics.anomalies a join tenancy.servers s on s.id = a.server_id
            where a.started_at >= %s and a.detector = 'stl_mad'
            order by a.score desc, a.started_at limit %s""", (start, top))
    return rd


def _series_around(conn: psycopg.Connection, server_id: int, metric: str, start: datetime,
                   end: datetime) -> pd.Series:
    if metric in data.BY_NAME:
        found = data.server_series(conn, data.BY_NAME[metric], "1h", start, end, [server_id])
    else:
        found = data.sample_series(conn, metric, "1h", start, end, [server_id])
    return found.get(server_id, pd.Series(dtype=float))


def render_charts(conn: psycopg.Connection, rd: ReportData, img: Path) -> dict[str, str]:
    """PNG files (Agg backend, no display) named by what they show; returns key -> relative path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    charts: dict[str, str] = {}

    def save(fig, name: str) -> str:
        fig.tight_layout()
        fig.savefig(img / name, dpi=80)
        plt.close(fig)
        return f"img/{name}"

    if rd.fleet_hourly is not None and not rd.fleet_hourly.empty:
        fig, ax = plt.subplots(figsize=(9, 3))
        for col in ("cpu", "memory", "disk"):
            ax.plot(pd.to_datetime(rd.fleet_hourly["bucket"]), rd.fleet_hourly[col].astype(float), label=col)
        ax.set_ylabel("fleet average %")
        ax.legend(loc="upper left")
        charts["fleet"] = save(fig, "fleet_overview.png")

    for i, row in enumerate(rd.exhaustion):
        history = _series_around(conn, row["server_id"], row["metric"], rd.window_start, rd.window_end)
        points = pd.DataFrame(row["forecast"])
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.plot(history.index, history.to_numpy(), label="observed (hourly)")
        if not points.empty:
            at = pd.to_datetime(points["at"])
            ax.plot(at, points["yhat"], label=f"forecast ({row['model']})")
            ax.fill_between(at, points["lo"], points["hi"], alpha=0.25, label="95 % interval")
        ax.axhline(row["threshold"], color="red", linestyle="--", label=f"threshold {row['threshold']:g}")
        ax.set_title(f"{row['server']} {row['metric']}")
        ax.legend(loc="upper left", fontsize=8)
        row["chart"] = charts[f"exhaustion_{i}"] = save(fig, f"exhaustion_{i + 1}_{row['server_id']}.png")

    for i, row in enumerate(rd.anomalies):
        lo, hi = row["started_at"] - timedelta(days=2), row["ended_at"] + timedelta(days=1)
        s = _series_around(conn, row["server_id"], row["metric"], lo, hi)
        fig, ax = plt.subplots(figsize=(9, 2.6))
        ax.plot(s.index, s.to_numpy(), label=row["metric"])
        ax.axvspan(row["started_at"], row["ended_at"] + timedelta(hours=1), color="red", alpha=0.25,
                   label=f"anomaly (score {row['score']:.1f})")
        ax.axhline(row["expected"], color="grey", linestyle=":", label="expected at peak")
        ax.set_title(f"{row['server']} {row['metric']} {row['direction']}")
        ax.legend(loc="upper left", fontsize=8)
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
                 parameters: dict | None = None) -> Path:
    """Write `out_dir/report-<run id>-<UTC time>/` with index.html, report.md and img/*.png.

    Raises ReportFailed (recorded as a failed run, nothing left behind) on any error.
    """
    out_dir = Path(out_dir)
    with data.connect(url) as conn:
        run_id = store.start_run(conn, "report", {"days": days, "top": top, **(parameters or {})})
        tmp: Path | None = None
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out_dir))
            rd = gather(conn, days, top)
            charts = render_charts(conn, rd, tmp / "img")
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
