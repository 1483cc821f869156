"""Score the anomaly detectors on labelled NAB-format series loaded as servers.

Each CSV (timestamp,value) of one or more NAB-format directories (``--data``,
repeatable) becomes a server of organization ``bench-nab`` and goes through
the normal ingest path (``ingest.loader.load_file``). A file whose name names
a known metric (``cpu`` ... ``latency``, see KEYWORDS) and whose values fit
that metric's range goes in as that metric; any other file goes in as the
``generic`` metric type (metrics.metric_samples, unbounded): file names are
the user's, never refused. The continuous aggregates are refreshed, the same
pipeline function as ``rmp anomalies`` runs at 5-minute and hourly
resolution, and the stored anomalies are scored against ``anomaly_windows.json``:

- a window is detected when at least one anomaly (start..end) overlaps it;
- an anomaly overlapping no window is a false positive;
- recall = detected windows / windows, precision = anomalies overlapping a
  window / all anomalies, F1 = their harmonic mean (window level).

This is not NAB's standard-profile score (no sigmoid position weighting, no
per-profile costs); it is the window-level F1 defined above.

Each series is shifted by whole days so its newest point is within the last
day (whole days keep the time-of-day pattern); its windows move with it. The
engine's retention jobs are paused while the benchmark runs (NAB series span
up to 11 months; raw retention is 90 days) and resumed afterwards.

The same scores are computed on a generated fleet (``ingest.generator``,
written through ``write_fleet``, the COPY loader) against its own labels
(cpu spikes of 5-30 minutes, memory level shifts of 6-48 hours). Keys
``generated_<detector>@<res>``. The results file holds a per-file table
(windows, detected, false positives per detector and resolution) and
``anomaly_eval.md`` the same as Markdown.

    python -m bench.anomaly_eval [--data DIR ...]      # prints one JSON line last
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from bench.results import RESULTS_DIR, write_json
from rmp import db
from rmp.catalog import tier

ROOT = Path(__file__).resolve().parent.parent

def _shared_data() -> Path:
    """../shared/data from the main checkout or from a worktree one level deeper."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data()
DEFAULT_DATA = [SHARED_DATA / "nab", SHARED_DATA / "nab-calibration"]
ORG = "bench-nab"
RESOLUTIONS = ("5m", "1h")  # tiers of rmp.catalog
QUICK: dict = {"resolutions": ["1h"], "generated": {"servers": 6}, "speed_series": 20}
# the labelled generated fleet: a Monday start keeps the weekly pattern identical on every run
GENERATED: dict = {"seed": 7, "organizations": 3, "servers": 24, "days": 14, "interval_seconds": 60,
                   "anomalies_per_server": 1.0}

# file-name keyword -> (table, metric). Checked in order; the first match wins.
# Anything else (or values outside the named metric's range) is GENERIC.
KEYWORDS: list[tuple[str, str, str]] = [
    ("cpu", "server_metrics", "cpu_percent"),
    ("disk_write", "metric_samples", "disk_io_writes"),
    ("disk_read", "metric_samples", "disk_io_reads"),
    ("network_in", "metric_samples", "network_rx_bytes"),
    ("network_out", "metric_samples", "network_tx_bytes"),
    ("memory", "server_metrics", "memory_percent"),
    ("request", "metric_samples", "batch_requests_sec"),
    ("latency", "metric_samples", "wait_time_ms"),
]
GENERIC = ("metric_samples", "generic")  # sql/idempotent/metric-types.sql: unbounded, unit unknown
# retention jobs paused during the run (policy_retention and the per-organization action)
RETENTION_JOBS = ("policy_retention", "apply_organization_retention")


class EvalInputError(ValueError):
    """The data directory is not in NAB format; the message names the file."""


def metric_for(path: Path, values: pd.Series | None = None) -> tuple[str, str]:
    """(table, metric) a file goes in as: the metric its name names, else GENERIC.

    A percent metric whose values leave 0-100 (a "cpu" file in other units)
    is GENERIC too: ingest would rightly reject its rows as that metric."""
    name = path.stem.lower()
    for key, table, metric in KEYWORDS:
        if key in name:
            if values is not None and metric.endswith("_percent") and not values.between(0, 100).all():
                return GENERIC
            return table, metric
    return GENERIC


def _read_dir(data: Path) -> tuple[dict[str, pd.Series], dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]]:
    windows_file = data / "anomaly_windows.json"
    if not windows_file.is_file():
        raise EvalInputError(f"{windows_file}: missing (NAB format: file name -> [[start, end], ...])")
    try:
        raw = json.loads(windows_file.read_text())
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{windows_file}:{exc.lineno}: not JSON: {exc.msg}") from None
    series: dict[str, pd.Series] = {}
    windows: dict[str, list] = {}
    for name, spans in raw.items():
        path = data / name
        if not path.is_file():
            raise EvalInputError(f"{windows_file}: names {name}, which is not in {data}")
        df = pd.read_csv(path)
        if list(df.columns[:2]) != ["timestamp", "value"]:
            raise EvalInputError(f"{path}:1: header must be timestamp,value")
        values = pd.to_numeric(df["value"], errors="coerce")
        if values.isna().any():
            line = int(values.isna().to_numpy().argmax()) + 2
            raise EvalInputError(f"{path}:{line}: value: not a number: {df['value'].iloc[line - 2]!r}")
        s = pd.Series(values.to_numpy(dtype=float), index=pd.to_datetime(df["timestamp"], utc=True))
        series[name] = s.sort_index()
        windows[name] = [(pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC")) for a, b in spans]
    return series, windows


def read_inputs(data: Path | list[Path] | tuple[Path, ...]) -> tuple[dict[str, pd.Series], dict[str, list]]:
    """file name -> series and -> labelled windows, over one or more NAB-format directories."""
    dirs = [Path(d) for d in data] if isinstance(data, list | tuple) else [Path(data)]
    series: dict[str, pd.Series] = {}
    windows: dict[str, list] = {}
    for d in dirs:
        s, w = _read_dir(d)
        for name in s:
            if name in series:
                raise EvalInputError(f"{d / name}: a file of the same name is in another --data directory")
        series.update(s)
        windows.update(w)
    return series, windows


def _pause_retention_jobs(conn: psycopg.Connection) -> list[tuple[int, datetime | None]]:
    """Unschedule the retention jobs; returns (job id, its next start) to resume them with."""
    rows = conn.execute(
        "select j.job_id, s.next_start from timescaledb_information.jobs j"
        " left join timescaledb_information.job_stats s using (job_id)"
        " where j.proc_name = any(%s) and j.scheduled", (list(RETENTION_JOBS),)).fetchall()
    for job_id, _ in rows:
        conn.execute("select alter_job(%s, scheduled => false)", (job_id,))
    return rows


def _resume_jobs(conn: psycopg.Connection, jobs: list[tuple[int, datetime | None]]) -> None:
    """Schedule them again at the start they had (not "now": no retention run racing the cleanup)."""
    for job_id, next_start in jobs:
        if next_start is None:
            conn.execute("select alter_job(%s, scheduled => true)", (job_id,))
        else:
            conn.execute("select alter_job(%s, scheduled => true, next_start => %s)", (job_id, next_start))


def score(anomalies: list[tuple[datetime, datetime]], windows: list[tuple[pd.Timestamp, pd.Timestamp]],
          step: timedelta) -> dict:
    """Window-level outcome for one series. An anomaly covers [start, end + step)."""
    def overlaps(a, w) -> bool:
        return a[0] <= w[1] and a[1] + step > w[0]

    detected = [any(overlaps(a, w) for a in anomalies) for w in windows]
    true_pos = sum(1 for a in anomalies if any(overlaps(a, w) for w in windows))
    return {"windows": len(windows), "detected": detected, "anomalies": len(anomalies),
            "true_positives": true_pos, "false_positives": len(anomalies) - true_pos}


def prf(windows: int, detected: int, anomalies: int, true_pos: int) -> dict:
    recall = detected / windows if windows else math.nan
    precision = true_pos / anomalies if anomalies else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def _load(url: str, series: dict[str, pd.Series], shifts: dict[str, timedelta],
          work: Path) -> dict[str, tuple[int, str]]:
    """Create the servers, write ingest-format CSVs and load them; name -> (server_id, metric)."""
    from ingest.loader import load_file

    out: dict[str, tuple[int, str]] = {}
    with db.connect(url, autocommit=True) as conn:
        org = conn.execute(
            "insert into tenancy.organizations (name, slug) values (%s, %s)"
            " on conflict (slug) do update set name = excluded.name returning id", ("Bench NAB", ORG)).fetchone()[0]
        for name in series:
            server = Path(name).stem[:60]
            sid = conn.execute(
                "insert into tenancy.servers (organization_id, name) values (%s, %s)"
                " on conflict (organization_id, name) do update set name = excluded.name returning id",
                (org, server)).fetchone()[0]
            table, metric = metric_for(Path(name), series[name])
            out[name] = (sid, metric)
            path = work / f"{server}.csv"
            with path.open("w", newline="") as f:
                w = csv.writer(f)
                if table == "server_metrics":
                    w.writerow(["organization", "server", "collected_at", metric])
                    w.writerows((ORG, server, (t + shifts[name]).isoformat(), repr(v)) for t, v in series[name].items())
                else:
                    w.writerow(["organization", "server", "metric_type", "collected_at", "value"])
                    w.writerows((ORG, server, metric, (t + shifts[name]).isoformat(), repr(v))
                                for t, v in series[name].items())
            result = load_file(path, url)
            if result.rejected:
                raise EvalInputError(f"{name}: {result.rejected} rows rejected by ingest, e.g. "
                                     f"{result.rejections[0] if result.rejections else '?'}")
    return out


def _tally(rows: list[dict]) -> dict:
    totals = {"windows": 0, "detected": 0, "anomalies": 0, "true_positives": 0}
    for s in rows:
        totals["windows"] += s["windows"]
        totals["detected"] += sum(s["detected"])
        totals["anomalies"] += s["anomalies"]
        totals["true_positives"] += s["true_positives"]
    return {**totals, "false_positives": totals["anomalies"] - totals["true_positives"],
            **prf(totals["windows"], totals["detected"], totals["anomalies"], totals["true_positives"])}


def run_generated(url: str, resolutions, sensitivity: float, say, cleanup: bool = True,
                  **overrides) -> dict:
    """Both detectors on a generated fleet's cpu and memory, scored against its labels."""
    from analytics.anomaly import DETECTORS
    from analytics.pipeline import run_anomalies
    from ingest.fleet_writers import write_fleet
    from ingest.generator import generate_fleet

    params = {**GENERATED, **overrides}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=params["days"])
    start -= timedelta(days=start.weekday())
    fleet = generate_fleet(start=start, **params)
    say(f"generated fleet: {len(fleet.servers)} servers x {params['days']} days, {len(fleet.labels)} labels ...")
    write_fleet(fleet, url, site_usage=False)
    ids = [fleet.server_ids[(s.organization, s.name)] for s in fleet.servers]
    with db.connect(url, autocommit=True) as conn:
        for res in resolutions:
            view = sql.Literal(tier(res).qualified)
            conn.execute(sql.SQL("call refresh_continuous_aggregate({}::regclass, %s, null)").format(view),
                         (start - timedelta(days=1),))
    windows: dict[tuple[int, str], list] = {(sid, m): [] for sid in ids for m in ("cpu_percent", "memory_percent")}
    for lab in fleet.labels:
        windows[(lab.server_id, lab.metric)].append((pd.Timestamp(lab.start), pd.Timestamp(lab.end)))
    out: dict = {"servers": len(ids), "days": params["days"], "labels": len(fleet.labels), "summary": {}}
    for res in resolutions:
        step = pd.Timedelta(res.replace("m", "min"))
        run_anomalies(url, metrics=["cpu", "memory"], detectors=DETECTORS, resolution=res,
                      days=params["days"] + 1, until=fleet.end, sensitivity=sensitivity, server_ids=ids)
        with db.connect(url, autocommit=True) as conn:
            for det in DETECTORS:
                rows = []
                for (sid, metric), wins in windows.items():
                    found = conn.execute(
                        "select started_at, ended_at from analytics.anomalies"
                        " where server_id = %s and metric = %s and detector = %s order by started_at",
                        (sid, metric, det)).fetchall()
                    rows.append(score(found, wins, step))
                out["summary"][f"{det}@{res}"] = _tally(rows)
        say(f"  generated {res}: " + "; ".join(
            f"{d} P {out['summary'][f'{d}@{res}']['precision']:.2f} R {out['summary'][f'{d}@{res}']['recall']:.2f}"
            f" F1 {out['summary'][f'{d}@{res}']['f1']:.2f}" for d in DETECTORS))
    if cleanup:
        with db.connect(url, autocommit=True) as conn:
            conn.execute("delete from tenancy.organizations where slug = any(%s)",
                         ([o.slug for o in fleet.organizations],))
    return out


def speed(series_count: int = 200, days: int = 14, seed: int = 3) -> dict[str, float]:
    """Seconds each detector takes on `series_count` series x `days` days of 5-minute data
    (daily cycle, noise, one spike each), in memory: the detection cost alone. Wall-clock
    seconds under `<detector>`, CPU seconds of this process under `<detector>_cpu` (what a
    machine shared with other work still measures reliably)."""
    from analytics.anomaly import DETECTORS, detect

    rng = np.random.default_rng(seed)
    n = 288 * days
    t = np.arange(n)
    index = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    fleet = []
    for _ in range(series_count):
        v = 40 + 15 * np.sin(2 * np.pi * t / 288 + rng.uniform(0, 6)) + rng.normal(0, 2, n)
        v[rng.integers(288, n)] += 40
        fleet.append(pd.Series(v, index=index))
    out = {}
    for det in DETECTORS:
        started, cpu = time.perf_counter(), time.process_time()
        for s in fleet:
            detect(s, det)
        out[det] = round(time.perf_counter() - started, 2)
        out[f"{det}_cpu"] = round(time.process_time() - cpu, 2)
    return out


def per_file_table(report: dict) -> list[dict]:
    """One row per file, detector and resolution: windows, detected, anomalies, false positives."""
    rows = []
    for name, by_res in report["series"].items():
        for res, by_det in by_res.items():
            for det, s in by_det.items():
                rows.append({"file": name, "metric": report["metrics"][name], "resolution": res, "detector": det,
                             "windows": s["windows"], "detected": sum(s["detected"]), "anomalies": s["anomalies"],
                             "false_positives": s["false_positives"]})
    return rows


def markdown(report: dict) -> str:
    """The summary and the per-file table of the primary detector beside the seed's rule."""
    from analytics.anomaly import BASELINE, PRIMARY

    lines = [f"# anomaly_eval: {', '.join(report['data'])}", "",
             "| detector | resolution | windows | detected | anomalies | false positives | precision | recall | F1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, v in report["summary"].items():
        if isinstance(v, dict) and "f1" in v and not key.startswith("generated_"):
            det, res = key.split("@")
            lines.append(f"| {det} | {res} | {v['windows']} | {v['detected']} | {v['anomalies']} | "
                         f"{v['false_positives']} | {v['precision']:.3f} | {v['recall']:.3f} | **{v['f1']:.3f}** |")
    lines += ["", f"Per file ({PRIMARY}; the seed's {BASELINE} in brackets): detected windows / windows, "
              "false positives.", "",
              "| file | metric | " + " | ".join(f"{r} detected | {r} FP" for r in report["resolutions"]) + " |",
              "|---|---|" + "---:|---:|" * len(report["resolutions"])]
    for name, by_res in report["series"].items():
        cells = []
        for res in report["resolutions"]:
            p, b = by_res[res][PRIMARY], by_res[res][BASELINE]
            cells += [f"{sum(p['detected'])}/{p['windows']} ({sum(b['detected'])})",
                      f"{p['false_positives']} ({b['false_positives']})"]
        lines.append(f"| {name} | {report['metrics'][name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(url: str | None = None, data: str | Path | list = DEFAULT_DATA, console=None, cleanup: bool = True,
        resolutions: list[str] | tuple[str, ...] = RESOLUTIONS, sensitivity: float | None = None,
        out_dir: Path = RESULTS_DIR, generated: dict | None = None, speed_series: int = 200) -> dict:
    """Load, detect, score; returns (and writes to `out_dir`/anomaly_eval.json and .md) the report.

    `data`: one NAB-format directory or a list of them. `generated`: overrides
    of GENERATED for the generated-fleet scores, or ``{"skip": True}`` to score
    only the NAB-format directories. `speed_series`: series in the detection
    timing (0 skips it)."""
    if url is None:
        from bench.engine import bench_engine

        with bench_engine() as eng:
            return run(eng.url, data, console, cleanup, resolutions, sensitivity, out_dir, generated, speed_series)
    from analytics.anomaly import DEFAULT_SENSITIVITY, DETECTORS
    from analytics.data import AGGREGATES
    from analytics.pipeline import run_anomalies

    say = console.print if console else (lambda *a: print(*a, file=sys.stderr))
    sens = DEFAULT_SENSITIVITY if sensitivity is None else sensitivity
    for res in resolutions:
        if res not in AGGREGATES:
            raise EvalInputError(f"unknown resolution {res!r}; choose from {', '.join(RESOLUTIONS)}")
    dirs = [Path(d) for d in data] if isinstance(data, list | tuple) else [Path(data)]
    series, windows = read_inputs(dirs)
    now = pd.Timestamp(datetime.now(UTC))
    shifts = {n: timedelta(days=math.floor((now - s.index[-1]) / pd.Timedelta(days=1))) for n, s in series.items()}
    span_days = max((s.index[-1] - s.index[0]) / pd.Timedelta(days=1) for s in series.values()) + 2
    report: dict = {"data": [str(d) for d in dirs], "resolutions": list(resolutions), "sensitivity": sens,
                    "shift_days": {n: d.days for n, d in shifts.items()}, "metrics": {}, "series": {},
                    "summary": {}}
    with db.connect(url, autocommit=True) as conn:
        paused = _pause_retention_jobs(conn)
    try:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rmp-nab-") as tmp:
            say(f"loading {len(series)} series through the ingest path ...")
            ids = _load(url, series, shifts, Path(tmp))
        report["load_seconds"] = round(time.perf_counter() - started, 1)
        report["metrics"] = {name: metric for name, (_, metric) in ids.items()}
        with db.connect(url, autocommit=True) as conn:
            oldest = min(s.index[0] + shifts[n] for n, s in series.items()) - timedelta(days=1)
            for res in resolutions:
                view = sql.Literal(f"metrics.{AGGREGATES[res]}")  # AGGREGATES: the allow-list
                conn.execute(sql.SQL("call refresh_continuous_aggregate({}::regclass, %s, null)").format(view),
                             (oldest.to_pydatetime(),))
        server_ids = [sid for sid, _ in ids.values()]
        metrics = sorted({m for _, m in ids.values()})
        for res in resolutions:
            step = pd.Timedelta(res.replace("m", "min"))
            t = time.perf_counter()
            run_anomalies(url, metrics=metrics, detectors=DETECTORS, resolution=res, days=span_days,
                          until=now.to_pydatetime(), sensitivity=sens, server_ids=server_ids)
            detect_s = time.perf_counter() - t
            with db.connect(url, autocommit=True) as conn:
                for det in DETECTORS:
                    rows = []
                    for name, (sid, metric) in ids.items():
                        found = conn.execute(
                            "select started_at, ended_at from analytics.anomalies"
                            " where server_id = %s and metric = %s and detector = %s order by started_at",
                            (sid, metric, det)).fetchall()
                        shifted = [(a + shifts[name], b + shifts[name]) for a, b in windows[name]]
                        s = score(found, shifted, step)
                        report["series"].setdefault(name, {}).setdefault(res, {})[det] = s
                        rows.append(s)
                    report["summary"][f"{det}@{res}"] = _tally(rows)
            report["summary"][f"detect_seconds@{res}"] = round(detect_s, 2)
            say(f"  NAB {res}: " + "; ".join(
                f"{d} P {report['summary'][f'{d}@{res}']['precision']:.2f} "
                f"R {report['summary'][f'{d}@{res}']['recall']:.2f} F1 {report['summary'][f'{d}@{res}']['f1']:.2f}"
                for d in DETECTORS))
        if cleanup:
            with db.connect(url, autocommit=True) as conn:
                conn.execute("delete from tenancy.organizations where slug = %s", (ORG,))
        gen = dict(generated or {})
        if not gen.pop("skip", False):
            report["generated"] = run_generated(url, resolutions, sens, say, cleanup, **gen)
            for key, value in report["generated"]["summary"].items():
                report["summary"][f"generated_{key}"] = value
    finally:
        if paused:
            with db.connect(url, autocommit=True) as conn:
                _resume_jobs(conn, paused)
    if speed_series:
        say(f"timing each detector on {speed_series} series x 14 days of 5-minute data ...")
        for det, seconds in speed(speed_series).items():
            report["summary"][f"speed_seconds_{speed_series}x14d_5m_{det}"] = seconds
    report["per_file"] = per_file_table(report)
    write_json(out_dir, "anomaly_eval.json", report, indent=1, markdown=markdown(report))
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, action="append",
                   help="directory of NAB CSVs + anomaly_windows.json (repeatable; default: "
                        f"{' and '.join(str(d) for d in DEFAULT_DATA)})")
    p.add_argument("--resolution", action="append", choices=RESOLUTIONS, help="repeatable; default: both")
    p.add_argument("--sensitivity", type=float, help="robust z threshold of the STL detector")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the results files go (default: %(default)s)")
    p.add_argument("--no-generated", action="store_true", help="skip the generated-fleet scores")
    p.add_argument("--speed-series", type=int, default=200,
                   help="series in the detection timing (14 days of 5-minute data each; 0 skips)")
    args = p.parse_args(argv)
    try:
        report = run(None, args.data or DEFAULT_DATA, resolutions=args.resolution or RESOLUTIONS,
                     sensitivity=args.sensitivity, out_dir=args.out_dir,
                     generated={"skip": True} if args.no_generated else None, speed_series=args.speed_series)
    except EvalInputError as exc:
        print(f"anomaly_eval: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print((Path(args.out_dir) / "anomaly_eval.md").read_text(), file=sys.stderr)
    print(json.dumps({"benchmark": "anomaly_eval", **report["summary"]}))


if __name__ == "__main__":
    main()
