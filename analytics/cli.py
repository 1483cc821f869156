"""`rmp forecast`, `rmp anomalies`, `rmp report`, `rmp export`."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from analytics.anomaly import DEFAULT_SENSITIVITY, DETECTORS
from analytics.data import AGGREGATES, SERVER_METRICS
from analytics.export import FORMATS
from rmp.catalog import EXPORTS
from rmp.settings import get_settings

log = logging.getLogger("rmp.analytics")
HELP = {"help_option_names": ["-h", "--help"]}


def _url() -> str:
    from rmp.db import database_url

    return database_url()


def _read_url() -> str:
    """RMP_READ_DATABASE_URL (a read replica) when set, else the primary."""
    from rmp.db import read_database_url

    return read_database_url()


class _Bar:
    """A rich progress bar on stderr, fed (done, total) by the jobs."""

    def __init__(self, label: str):
        self.progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)


def _utc(value: datetime | None) -> datetime | None:
    """click parses naive times; the platform's times are UTC."""
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


@click.command(context_settings=HELP)
@click.option("--metric", "-m", "metrics", multiple=True, type=click.Choice(list(SERVER_METRICS)),
              help="Server metric to forecast (repeatable; default: all).")
@click.option("--history-days", default=28.0, show_default=True, help="Days of hourly history to fit on.")
@click.option("--horizon-days", default=14, show_default=True, type=click.IntRange(1, 365),
              help="Days of forecast stored per series.")
@click.option("--until", type=click.DateTime(), help="End of the history (UTC); default: newest data.")
@click.option("--server", "server_ids", multiple=True, type=int, help="Only this server id (repeatable).")
@click.option("--no-organizations", is_flag=True, help="Skip the organization quota forecasts.")
def forecast(metrics, history_days, horizon_days, until, server_ids, no_organizations) -> None:
    """Forecast servers' cpu, memory, disk and network and organizations' quota usage.

    Fits the linear baseline, seasonal-naive and Holt-Winters ETS per series on
    the hourly aggregate, keeps the lowest backtest MASE, and upserts
    analytics.forecasts (re-runs replace rows). Thresholds: disk and memory
    90 %, organization usage at its licence limit.
    """
    from analytics.pipeline import run_forecasts

    with _Bar("forecasting") as bar:
        s = run_forecasts(_url(), metrics=metrics or tuple(SERVER_METRICS), history_days=history_days,
                          horizon_days=horizon_days, until=_utc(until), organizations=not no_organizations,
                          server_ids=list(server_ids) or None, progress=bar, read_url=_read_url())
    models = ", ".join(f"{k} {v}" for k, v in sorted(s.models.items())) or "none"
    click.echo(f"run {s.run_id}: {s.series} series, {s.ok} forecast ({models}), "
               f"{s.insufficient} with insufficient data")


@click.command(context_settings=HELP)
@click.option("--metric", "-m", "metrics", multiple=True,
              help="cpu, memory, disk, network or a metrics.metric_types name (repeatable; default: the four).")
@click.option("--detector", "-d", "detectors", multiple=True, type=click.Choice(DETECTORS),
              help="Detector (repeatable; default: both).")
@click.option("--resolution", default="1h", show_default=True, type=click.Choice(list(AGGREGATES)),
              help="Aggregate the detectors read.")
@click.option("--days", default=7.0, show_default=True, help="Window, counted back from the newest data.")
@click.option("--until", type=click.DateTime(), help="End of the window (UTC); default: newest data.")
@click.option("--sensitivity", default=DEFAULT_SENSITIVITY, show_default=True, type=click.FloatRange(min=0.5),
              help="Robust z above which the STL detector flags a point (lower finds more).")
@click.option("--server", "server_ids", multiple=True, type=int, help="Only this server id (repeatable).")
def anomalies(metrics, detectors, resolution, days, until, sensitivity, server_ids) -> None:
    """Detect anomalies and replace the stored ones in the window (re-runs never duplicate)."""
    from analytics.pipeline import run_anomalies

    with _Bar("detecting") as bar:
        s = run_anomalies(_url(), metrics=metrics or ("cpu", "memory", "disk", "network"),
                          detectors=detectors or DETECTORS, resolution=resolution, days=days,
                          until=_utc(until), sensitivity=sensitivity, server_ids=list(server_ids) or None,
                          progress=bar, read_url=_read_url())
    per = ", ".join(f"{k} {v}" for k, v in sorted(s.by_detector.items())) or "none"
    click.echo(f"{s.series} series, {s.anomalies} anomalies ({per}); "
               f"{s.skipped_short} series too short for STL")


@click.command(context_settings=HELP)
@click.option("--out", "--output-dir", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for report-<run>-<time>/ (default: RMP_REPORTS_DIR or ./reports).")
@click.option("--days", default=7.0, show_default=True, help="Window of history and anomalies shown.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 100), help="Rows per section.")
@click.option("--refresh/--no-refresh", default=True, show_default=True,
              help="Run forecasts and anomaly detection first.")
def report(out_dir, days, top, refresh) -> None:
    """Write an HTML and Markdown capacity report with charts; safe to run from cron.

    The report appears complete or not at all (written to a temporary
    directory, then renamed). Every run is recorded in analytics.report_runs.
    On failure: one log line on stderr and exit status 1.
    """
    from analytics.pipeline import run_anomalies, run_forecasts
    from analytics.report import ReportFailed, write_report

    url, read_url = _url(), _read_url()
    target = out_dir or get_settings().reports_dir
    try:
        if refresh:
            with _Bar("forecasting") as bar:
                run_forecasts(url, progress=bar, read_url=read_url)
            with _Bar("detecting anomalies") as bar:
                run_anomalies(url, days=days, progress=bar, read_url=read_url)
        with Console(stderr=True).status("rendering report"):
            path = write_report(url, target, days=days, top=top, parameters={"refresh": refresh},
                                read_url=read_url)
    except ReportFailed as exc:
        log.error("%s", exc)
        sys.exit(1)
    click.echo(f"report written to {path / 'index.html'} and {path / 'report.md'}")


@click.command(context_settings=HELP)
@click.argument("name", type=click.Choice(list(EXPORTS)))
@click.option("--format", "-f", "fmt", default="csv", show_default=True, type=click.Choice(FORMATS),
              help="Output format.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout).")
@click.option("--since", type=click.DateTime(), help="Rows at or after this time (UTC).")
@click.option("--until", type=click.DateTime(), help="Rows at or before this time (UTC).")
@click.option("--id", "entity_id", type=int, help="Only this server / organization / site id.")
def export(name, fmt, out, since, until, entity_id) -> None:
    """Export forecasts, anomalies, report runs or an aggregate as CSV or JSON."""
    from analytics.data import connect
    from analytics.export import export as run_export

    with connect(_read_url()) as conn:     # read-only: the replica when RMP_READ_DATABASE_URL is set
        rows, text = run_export(conn, name, fmt, out, since=_utc(since), until=_utc(until), entity_id=entity_id)
    if out is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"{rows} rows written to {out}", err=True)
