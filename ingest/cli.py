"""`rmp ingest`, `rmp generate`, `rmp collect`."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ingest.errors import IngestFileError
from ingest.targets import TARGETS
from rmp.catalog import COLLECTION_INTERVAL_SECONDS, SAMPLE_INTERVAL_BOUNDS

if TYPE_CHECKING:     # rich is imported only when a progress bar is shown (--quiet runs skip ~50 ms)
    from rich.progress import Progress


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--table", type=click.Choice(sorted(TARGETS)), help="Target table (default: detected from the header).")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson", "parquet"]),
              help="Input format (default: from the file extension).")
@click.option("--assume-utc", is_flag=True, help="Read timestamps without a zone as UTC instead of rejecting them.")
@click.option("--batch-rows", default=10_000, show_default=True, type=click.IntRange(1),
              help="Rows per transaction (a killed load leaves only whole batches).")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(1),
              help="Worker processes: several files at once, and a large plain CSV split into JOBS line ranges. "
                   "On the embedded engine (one session for all clients) the work runs one unit at a time.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, only the summary.")
def ingest(files: tuple[Path, ...], table: str | None, fmt: str | None, assume_utc: bool,
           batch_rows: int, jobs: int, quiet: bool) -> None:
    """Bulk-load metric FILES (CSV, NDJSON, Parquet; .gz too) into their hypertable.

    Rows are checked against the column types read from the database and stream
    through binary COPY in batches; re-loading a file adds nothing (duplicates
    are skipped on (server, collected_at)). Bad rows go to FILE.rejected.csv and
    metrics.rejected_rows with line, field and reason; a row the database itself
    refuses is found by splitting its batch and quarantined the same way.

    \b
    Exit codes: 0 every row loaded (or already present);
                1 some rows rejected (see the quarantine);
                2 the run could not complete: a file could not be loaded or the
                  database failed (the other files are still loaded).
    """
    from rmp import db

    url = db.database_url()
    options = {"table": table, "fmt": fmt, "assume_utc": assume_utc, "batch_rows": batch_rows}
    if jobs > 1:
        from ingest.parallel import serialized

        if serialized(url):
            click.echo("rmp ingest: the embedded engine runs one statement at a time; --jobs runs serially",
                       err=True)
            jobs = 1
    outcomes = _ingest_parallel(files, url, jobs, options, quiet) if jobs > 1 else \
        _ingest_serial(files, url, options, quiet)
    totals = {"rows": 0, "loaded": 0, "duplicates": 0, "rejected": 0}
    failed = 0
    for path, r, error, seconds in outcomes:
        if error is not None:
            failed += 1
            click.echo(f"rmp: error: {error}", err=True)
        if r is None:
            continue
        for k in totals:
            totals[k] += getattr(r, k)
        rate = r.rows / seconds if seconds else 0.0
        click.echo(f"{path}: {r.loaded:,} loaded, {r.duplicates:,} duplicates skipped, {r.rejected:,} rejected "
                   f"into {r.table} ({rate:,.0f} rows/s)")
        if r.rejected:
            for rej in r.rejections[:5]:
                click.echo(f"  {path}:{rej.line}: {rej.field}: {rej.reason}", err=True)
            more = f" (first 5 shown; all in {r.quarantine})" if r.rejected > 5 else f" (in {r.quarantine})"
            click.echo(f"  {r.rejected:,} row(s) rejected{more}", err=True)
    if len(files) > 1:
        click.echo(f"total: {totals['loaded']:,} loaded, {totals['duplicates']:,} duplicates skipped, "
                   f"{totals['rejected']:,} rejected, {failed} file(s) not loaded")
    if failed:
        sys.exit(2)
    if totals["rejected"]:
        sys.exit(1)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Progress | None]:
    """A progress bar on stderr, or None with --quiet."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[rows]:,} rows"), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as progress:
        yield progress


def _file_callbacks(progress: Progress, path: Path) -> dict:
    """load_file's on_start/on_batch, drawing one file's bar."""
    task = progress.add_task(path.name, total=None, rows=0, rate="")
    state = {"rows": 0}

    def on_start(source, target):
        progress.update(task, total=source.total, description=f"{path.name} -> {target.qualified}")

    def on_batch(b):
        state["rows"] += b.rows
        elapsed = progress.tasks[0].elapsed or 1e-9
        progress.update(task, completed=b.position, rows=state["rows"],
                        rate=f"{state['rows'] / elapsed:,.0f} rows/s")

    return {"on_start": on_start, "on_batch": on_batch}


def _ingest_serial(files, url: str, options: dict, quiet: bool):
    """(path, result or None, error or None, seconds) per file, loaded one after the other."""
    import time

    import psycopg

    from ingest.loader import load_file

    for path in files:
        started = time.perf_counter()
        with _progress(quiet) as progress:
            callbacks = {} if progress is None else _file_callbacks(progress, path)
            try:
                r = load_file(path, url, **callbacks, **options)
            except IngestFileError as exc:
                yield path, None, str(exc), 0.0
                continue
            except psycopg.Error as exc:   # the run cannot complete this file: say so, go on with the next
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                yield path, None, f"{path}: database error: {first}", 0.0
                continue
        yield path, r, None, time.perf_counter() - started


def _ingest_parallel(files, url: str, jobs: int, options: dict, quiet: bool):
    import time

    from ingest.parallel import load_parallel, plan

    units = plan(files, jobs, options.get("fmt"))
    started = time.perf_counter()
    with _progress(quiet) as progress:
        task = None if progress is None else progress.add_task(
            f"{len(files)} file(s), {len(units)} unit(s), {jobs} workers",
            total=sum(u.total for u in units) or None, rows=0, rate="")
        done_rows: dict[int, int] = {}
        done_bytes: dict[int, int] = {}

        def on_progress(index: int, rows: int, position: int) -> None:
            if progress is None:
                return
            done_rows[index], done_bytes[index] = rows, position
            total_rows = sum(done_rows.values())
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, completed=sum(done_bytes.values()), rows=total_rows,
                            rate=f"{total_rows / elapsed:,.0f} rows/s")

        outcomes = load_parallel(list(files), url, jobs, options, on_progress, units=units)
    seconds = time.perf_counter() - started
    return [(o.path, o.result, o.error, seconds) for o in outcomes]


def _parse_start(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date/time: {value!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@click.command()
@click.option("--seed", default=42, show_default=True, help="Random seed: same seed, same fleet.")
@click.option("--organizations", default=3, show_default=True, type=click.IntRange(1), help="Top-level organizations.")
@click.option("--sub-organizations", default=1, show_default=True, type=click.IntRange(0),
              help="Sub-organizations under each of the first half of the organizations.")
@click.option("--servers", default=10, show_default=True, type=click.IntRange(1), help="Servers in the fleet.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1), help="Days of 30-second samples.")
@click.option("--start", help="First timestamp (ISO, UTC if no zone). Default: midnight UTC DAYS days ago.")
@click.option("--sites-per-server", default=2, show_default=True, type=click.IntRange(0),
              help="Hosted sites per server (site_usage rows every 5 minutes).")
@click.option("--anomalies-per-server", default=0.5, show_default=True, type=click.FloatRange(0),
              help="Mean number of injected anomalies per server.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Write metric files to this directory instead of the database (tenancy still goes to the "
                   "database unless --no-db).")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson", "parquet"]), default="csv", show_default=True,
              help="File format of the metric files written with --out.")
@click.option("--no-db", is_flag=True, help="With --out: do not touch the database at all.")
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False),
              help="Anomaly labels JSON (default: OUT/labels.json or ./fleet-labels.json).")
def generate(seed: int, organizations: int, sub_organizations: int, servers: int, days: int, start: str | None,
             sites_per_server: int, anomalies_per_server: float, out: Path | None, fmt: str, no_db: bool,
             labels: Path | None) -> None:
    """Generate a reproducible synthetic fleet with 30-second metrics, labelled anomalies and
    scaling events that follow the load (scaling_events.csv / .ndjson with --out)."""
    import tempfile

    from ingest import fleet_writers as w
    from ingest import generator as g
    from ingest.loader import load_file
    from ingest.scaling_events import write_scaling_events
    from rmp import db

    if no_db and out is None:
        raise click.UsageError("--no-db needs --out")
    fleet = g.generate_fleet(seed, organizations, servers, days, _parse_start(start),
                             sub_organizations=sub_organizations, sites_per_server=sites_per_server,
                             anomalies_per_server=anomalies_per_server)
    total = fleet.server_metric_rows + len(fleet.sites) * days * 86400 // fleet.site_interval_seconds
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as progress:
        task = progress.add_task("metrics", total=total)

        def on_rows(n: int) -> None:
            progress.advance(task, n)

        if out is None:
            summary = w.write_fleet(fleet, db.database_url(), on_rows=on_rows)
            # scaling events that follow the load, through the ingest path (reloads add nothing)
            with tempfile.TemporaryDirectory() as tmp:
                events = load_file(write_scaling_events(fleet, tmp), db.database_url())
            where = (f"{summary.server_metrics:,} server_metrics + {summary.site_usage:,} site_usage rows "
                     f"({summary.duplicates:,} already present) + {events.loaded:,} scaling events")
        else:
            if not no_db:
                with db.connect(db.database_url(), autocommit=True) as conn:
                    w.write_tenancy(conn, fleet)
            paths = w.write_fleet_files(fleet, out, fmt, on_rows=on_rows)
            paths.append(write_scaling_events(fleet, out, "ndjson" if fmt == "ndjson" else "csv"))
            where = ", ".join(str(p) for p in paths)
    labels_path = w.write_labels(fleet, labels or ((out / "labels.json") if out else Path("fleet-labels.json")))
    n_orgs = len(fleet.organizations)
    click.echo(f"fleet seed {seed}: {n_orgs} organizations, {len(fleet.servers)} servers, {len(fleet.sites)} sites, "
               f"{fleet.start:%Y-%m-%d} .. {fleet.end:%Y-%m-%d}; wrote {where}; "
               f"{len(fleet.labels)} anomalies in {labels_path}")


_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@click.command()
@click.option("--interval", default=float(COLLECTION_INTERVAL_SECONDS), show_default=True,
              type=click.FloatRange(*SAMPLE_INTERVAL_BOUNDS),
              help="Seconds between samples. Each row stores the seconds it really covers "
                   "(interval_seconds), so byte rates are true at any interval.")
@click.option("--count", type=click.IntRange(1), help="Stop after this many samples (default: until Ctrl-C).")
@click.option("--organization", default="local", show_default=True,
              help="Organization slug this host belongs to (created if missing).")
@click.option("--name", help="Server name (default: the host name).")
@click.option("--buffer", "buffer_size", default=2880, show_default=True, type=click.IntRange(1),
              help="Samples kept while the database is unreachable (oldest dropped beyond).")
def collect(interval: float, count: int | None, organization: str, name: str | None, buffer_size: int) -> None:
    """Sample this host (psutil) into metrics.server_metrics every INTERVAL seconds. Ctrl-C stops cleanly."""
    from ingest.collector import Collector, register_host
    from rmp import db

    if not _SLUG.match(organization):
        raise click.BadParameter("use lowercase letters, digits and dashes", param_hint="--organization")
    url = db.database_url()
    with db.connect(url, autocommit=True) as conn:
        server_id = register_host(conn, organization, name)
    collector = Collector(url, server_id, interval=interval, buffer_size=buffer_size)
    click.echo(f"collecting into server {server_id} every {interval:g} s" + (f", {count} samples" if count else
                                                                            "; Ctrl-C to stop"), err=True)

    def on_sample(stats) -> None:
        click.echo(f"\rsampled {stats.sampled}, written {stats.written}, buffered {len(collector.buffer)}",
                   err=True, nl=False)

    stats = collector.run(count, on_sample=on_sample)
    click.echo("", err=True)
    click.echo(f"{stats.written} sample(s) written, {len(collector.buffer)} still buffered, {stats.dropped} dropped")
    if collector.buffer:
        sys.exit(1)
