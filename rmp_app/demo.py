"""`rmp demo`: the main job end to end, on the embedded engine or DATABASE_URL.

engine -> migrate -> generate a fleet (files + labels) -> `rmp ingest` path
(COPY, validation, quarantine) -> refresh aggregates -> dbt build ->
forecasts + anomalies -> HTML/Markdown report. Every step is idempotent, so
running the demo twice gives the same database and a new report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rmp import db
from rmp.errors import UserError
from rmp.settings import get_settings

EXAMPLE_QUERIES = [
    ("Organizations nearest their quotas",
     "select organization_id, quota_name, used_value, limit_value, percent_used, is_exceeded\n"
     "  from marts.org_quota_status order by percent_used desc nulls last limit 10;"),
    ("The newest 24 h of one server, from the aggregate tier dashboards read for 24 h",
     "select buckets.bucket, buckets.cpu_avg_percent, buckets.cpu_p95_percent, buckets.memory_avg_percent\n"
     "  from (select max(collected_at) as last_at from metrics.server_metrics) as newest,\n"
     "       tenant.server_buckets(newest.last_at - interval '24 hours', newest.last_at, array[1::bigint]) as buckets\n"
     " order by buckets.bucket;"),
    ("Servers predicted to fill their disk soonest",
     "select entity_id as server_id, threshold_crossing_at, crossing_lo_at, crossing_hi_at, mase\n"
     "  from analytics.forecasts where entity_type = 'server' and metric = 'disk_percent'\n"
     "   and threshold_crossing_at is not null order by threshold_crossing_at limit 5;"),
]


@dataclass
class DemoOptions:
    organizations: int = 3
    servers: int = 50
    days: int = 14
    seed: int = 42
    workdir: Path = field(default_factory=lambda: get_settings().home / "demo")
    reports_dir: Path = field(default_factory=lambda: get_settings().reports_dir)
    forecast_days: int = 14


@dataclass
class DemoResult:
    url: str
    report_html: Path | None = None
    report_markdown: Path | None = None
    labels: Path | None = None
    rows_loaded: int = 0
    rows_rejected: int = 0
    steps: dict[str, float] = field(default_factory=dict)


class DemoError(UserError):
    """A step of the demo failed; the message names the step."""


def _step(console: Console, result: DemoResult, name: str, fn: Callable[[], object]) -> object:
    console.rule(f"[bold]{name}")
    started = time.perf_counter()
    try:
        out = fn()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - turned into one line naming the step
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DemoError(f"{name} failed: {first}") from exc
    result.steps[name] = round(time.perf_counter() - started, 1)
    console.print(f"[green]done[/] in {result.steps[name]} s")
    return out


def refresh_aggregates(url: str, start, end) -> list[int]:
    """Backfill the loaded window, then run every refresh policy's job once.

    The policies only look back a few hours or days (their start_offset stays
    inside raw retention); a bulk load of older data is a backfill, which
    TimescaleDB refreshes with refresh_continuous_aggregate over that window.
    """
    from psycopg import sql

    from rmp.catalog import AGGREGATES  # every continuous aggregate the schema defines

    with db.connect(url, autocommit=True) as conn:
        for aggregate in AGGREGATES:
            conn.execute(
                sql.SQL("call refresh_continuous_aggregate({}, %s, %s)").format(
                    sql.Literal(aggregate.qualified)
                ),
                [start, end],
            )
        jobs = [r[0] for r in conn.execute(
            "select job_id from timescaledb_information.jobs "
            "where proc_name = 'policy_refresh_continuous_aggregate' order by job_id"
        )]
        for job in jobs:
            conn.execute(sql.SQL("call run_job({})").format(sql.Literal(job)))
    return jobs


def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoResult:
    from ingest.fleet_writers import write_fleet_files, write_labels, write_tenancy
    from ingest.generator import generate_fleet
    from ingest.loader import load_file
    from ingest.scaling_events import write_scaling_events
    from rmp.migrations import upgrade
    from transform.dbt_runner import run_dbt

    console = console or Console(stderr=True)
    url = _step(console, DemoResult(url=""), "engine", db.ensure_engine)
    result = DemoResult(url=url)
    console.print(f"database: {db.redact(url)}")

    _step(console, result, "migrate", lambda: upgrade(url))

    def generate():
        opts.workdir.mkdir(parents=True, exist_ok=True)
        fleet = generate_fleet(seed=opts.seed, organizations=opts.organizations, servers=opts.servers,
                               days=opts.days, start=_previous_start(opts))
        _remember(opts, fleet.start)
        with db.connect(url, autocommit=True) as conn:
            write_tenancy(conn, fleet)
        with _progress(console) as progress:
            task = progress.add_task("writing files", total=fleet.server_metric_rows)
            files = write_fleet_files(fleet, opts.workdir, "csv",
                                      on_rows=lambda n: progress.advance(task, n))
        # scaling events that follow the generated load (ingest/scaling_events.py), loaded like the metrics
        files.append(write_scaling_events(fleet, opts.workdir, "csv"))
        result.labels = write_labels(fleet, opts.workdir / "anomaly_labels.json")
        console.print(f"{len(fleet.organizations)} organizations, {len(fleet.servers)} servers, "
                      f"{fleet.server_metric_rows:,} samples; files in {opts.workdir}")
        return fleet, files

    fleet, files = _step(console, result, f"generate {opts.servers} servers x {opts.days} days", generate)

    def ingest():
        for path in files:
            with _progress(console) as progress:
                task = progress.add_task(f"rmp ingest {path.name}", total=None)
                loaded = load_file(path, url, on_batch=lambda b, t=task: progress.advance(t, b.rows))
            result.rows_loaded += loaded.loaded
            result.rows_rejected += loaded.rejected
            console.print(f"{path.name}: {loaded.loaded:,} loaded, {loaded.duplicates:,} duplicates skipped, "
                          f"{loaded.rejected:,} rejected ({loaded.rows_per_second:,.0f} rows/s)")

    _step(console, result, "ingest (COPY)", ingest)
    _step(console, result, "refresh aggregates",
          lambda: refresh_aggregates(url, fleet.start, fleet.end))

    def dbt_build():
        res = run_dbt(["build"], url)
        if res.exit_code != 0:
            raise DemoError(f"dbt build failed (exit {res.exit_code}); run `rmp dbt build` to see why")

    _step(console, result, "dbt build", dbt_build)
    _analytics_steps(console, result, opts, url)
    return result


def _fleet_key(opts: DemoOptions) -> dict:
    return {"seed": opts.seed, "organizations": opts.organizations, "servers": opts.servers, "days": opts.days}


def _previous_start(opts: DemoOptions) -> datetime | None:
    """The start of an earlier demo with the same fleet, so a re-run (even on
    another day) regenerates the very same rows and loads nothing twice."""
    state = opts.workdir / "demo.json"
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("fleet") != _fleet_key(opts):
        return None
    return datetime.fromisoformat(saved["start"])


def _remember(opts: DemoOptions, start: datetime) -> None:
    (opts.workdir / "demo.json").write_text(
        json.dumps({"fleet": _fleet_key(opts), "start": start.isoformat()}, indent=2) + "\n"
    )


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def _analytics_steps(console: Console, result: DemoResult, opts: DemoOptions, url: str) -> None:
    from analytics.pipeline import run_anomalies, run_forecasts
    from analytics.report import write_report

    def with_bar(label: str, fn: Callable) -> object:
        with _progress(console) as progress:
            task = progress.add_task(label, total=None)
            return fn(progress=lambda done, total: progress.update(task, completed=done, total=total))

    def forecasts():
        s = with_bar("series", lambda progress: run_forecasts(
            url, history_days=opts.days, horizon_days=opts.forecast_days, progress=progress))
        models = ", ".join(f"{k} {v}" for k, v in sorted(s.models.items()))
        console.print(f"{s.series} series: {s.ok} forecast ({models}), {s.insufficient} insufficient data")

    def anomalies():
        # 5-minute buckets: a spike of a few minutes is diluted away in an hourly mean.
        s = with_bar("series", lambda progress: run_anomalies(url, days=opts.days, resolution="5m",
                                                              progress=progress))
        per = ", ".join(f"{k} {v}" for k, v in sorted(s.by_detector.items())) or "none"
        console.print(f"{s.series} series, {s.anomalies} anomalies ({per})")

    def report():
        path = write_report(url, opts.reports_dir, days=opts.days)
        result.report_html, result.report_markdown = path / "index.html", path / "report.md"

    _step(console, result, "forecasts", forecasts)
    _step(console, result, "anomalies", anomalies)
    _step(console, result, "report", report)
