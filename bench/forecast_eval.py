"""Backtest the forecaster: MASE and 95 % interval coverage of the per-series
chosen model vs the linear baseline vs seasonal-naive, on NAB-format series
(any file names) and on generated fleet data.

Each series is put on an hourly grid (what the forecaster reads from
the 1-hour tier of metrics.server_metrics). For each of the last `origins` days: fit on
the 28 days before the origin (what ``rmp forecast`` reads by default) — the model choice and the band calibration
included, by the forecaster's own inner backtest on that training part only —
forecast the next `horizon` hours, and score MASE (scale: in-sample
seasonal-naive MAE, season 24 h) and whether each actual value lies inside
the 95 % interval (chosen: the calibrated band the pipeline stores; linear
and seasonal-naive: their own model intervals). Forecasts are clipped to the
series' bounds as the pipeline stores them: percent [0, 100] for a file whose
name says cpu and whose values fit, unbounded for any other NAB file,
>= 0 or percent for generated series. MASE is averaged over origins, then
over series; coverage is pooled over all origins, steps and series.

    python -m bench.forecast_eval [--data DIR ...]      # prints one JSON line last
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analytics.forecast import (
    NON_NEGATIVE,
    PERCENT,
    UNBOUNDED,
    Bounds,
    ForecastConfig,
    clip,
    forecast_series,
    mase,
    predict_linear,
    predict_seasonal_naive,
    regularize,
)
from bench.anomaly_eval import DEFAULT_DATA, EvalInputError, metric_for  # the same NAB files
from bench.results import RESULTS_DIR, write_json

ROOT = Path(__file__).resolve().parent.parent
QUICK: dict = {"origins": 2, "generated_servers": 2}
SEASON = 24
HISTORY_DAYS = 28  # analytics.pipeline.run_forecasts' default history


def nab_series(data: Path | list[Path]) -> dict[str, pd.Series]:
    """nab/<file stem> -> hourly series, for every CSV of one or more NAB-format directories."""
    out = {}
    for d in ([Path(x) for x in data] if isinstance(data, list | tuple) else [Path(data)]):
        if not d.is_dir():
            raise EvalInputError(f"{d}: not a directory")
        for path in sorted(d.glob("*.csv")):
            df = pd.read_csv(path)
            if list(df.columns[:2]) != ["timestamp", "value"]:
                raise EvalInputError(f"{path}:1: header must be timestamp,value")
            s = pd.Series(pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float),
                          index=pd.to_datetime(df["timestamp"], utc=True))
            out[f"nab/{path.stem}"] = regularize(s, "h")
    return out


def generated_series(servers: int, days: int, seed: int = 7) -> dict[str, pd.Series]:
    from ingest.generator import generate_fleet

    fleet = generate_fleet(seed=seed, organizations=2, servers=servers, days=days,
                           start=pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime(), interval_seconds=300)
    out = {}
    for server in fleet.servers:
        df = fleet.server_metrics(server).set_index("collected_at")
        for col in ("cpu_percent", "memory_percent", "disk_percent"):
            out[f"generated/{server.organization}/{server.name}/{col}"] = regularize(df[col], "h")
    return out


def bounds_of(name: str, series: pd.Series | None = None) -> Bounds:
    """What the series can physically be, as the pipeline clips it. Generated: percent
    columns [0, 100], others >= 0. NAB: what anomaly_eval loads it as (a cpu file in
    percent: [0, 100]; anything else is the unbounded generic metric)."""
    if name.startswith("generated/"):
        return PERCENT if name.endswith("_percent") else NON_NEGATIVE
    _, metric = metric_for(Path(name.split("/", 1)[-1] + ".csv"), series)
    return PERCENT if metric.endswith("_percent") else UNBOUNDED


def _inside(actual: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> int:
    return int(np.sum((actual >= lo) & (actual <= hi)))


MODELS_SCORED = ("chosen", "linear", "seasonal_naive")


def evaluate(series: pd.Series, origins: int, horizon: int, bounds: Bounds = NON_NEGATIVE,
             history_days: int = HISTORY_DAYS) -> dict:
    """Score one series from each of the last `origins` days, fitting on the `history_days`
    before each origin (what `rmp forecast` reads by default)."""
    y = series.to_numpy(dtype=float)
    cfg = ForecastConfig(horizon_days=max(1, horizon // SEASON), crossing_horizon_days=1)
    scores: dict[str, list[float]] = {k: [] for k in MODELS_SCORED}
    inside = dict.fromkeys(MODELS_SCORED, 0)
    chosen_models: list[str] = []
    low_confidence = 0
    steps = 0
    for k in range(origins, 0, -1):
        origin = len(y) - k * SEASON
        first = max(0, origin - history_days * SEASON)
        train, test = y[first:origin], y[origin:origin + horizon]
        if len(train) < cfg.min_points or len(test) < horizon:
            continue
        result = forecast_series(series.iloc[first:origin], cfg, bounds=bounds)
        chosen_models.append(result.model)
        low_confidence += result.low_confidence
        pts = result.points.iloc[:horizon]
        scores["chosen"].append(mase(test, pts["yhat"].to_numpy(), train, SEASON))
        inside["chosen"] += _inside(test, pts["lo"].to_numpy(), pts["hi"].to_numpy())
        for name, predictor in (("linear", predict_linear), ("seasonal_naive", predict_seasonal_naive)):
            pred = predictor(train, horizon, SEASON, 0.95)
            scores[name].append(mase(test, clip(pred.mean, bounds), train, SEASON))
            inside[name] += _inside(test, clip(pred.lo, bounds), clip(pred.hi, bounds))
        steps += horizon
    return {
        "points": len(y), "origins": len(chosen_models), "steps": steps, "low_confidence": low_confidence,
        "models_chosen": {m: chosen_models.count(m) for m in sorted(set(chosen_models))},
        **{f"mase_{k}": round(float(np.mean(v)), 4) if v else None for k, v in scores.items()},
        **{f"inside_{k}": v for k, v in inside.items()},
    }


def summarize(rows: dict[str, dict], group: str) -> dict:
    part = [r for n, r in rows.items() if n.startswith(group + "/") and r["origins"]]
    out: dict = {f"{group}_series": len(part)}
    if not part:
        return out
    steps = sum(r["steps"] for r in part)
    for k in MODELS_SCORED:
        out[f"{group}_mean_mase_{k}"] = round(float(np.mean([r[f"mase_{k}"] for r in part])), 4)
        out[f"{group}_coverage95_{k}"] = round(sum(r[f"inside_{k}"] for r in part) / steps, 4)
    out[f"{group}_linear_over_chosen"] = round(out[f"{group}_mean_mase_linear"] / out[f"{group}_mean_mase_chosen"], 3)
    out[f"{group}_snaive_over_chosen"] = round(
        out[f"{group}_mean_mase_seasonal_naive"] / out[f"{group}_mean_mase_chosen"], 3)
    out[f"{group}_chosen_gain_over_snaive"] = round(
        1 - out[f"{group}_mean_mase_chosen"] / out[f"{group}_mean_mase_seasonal_naive"], 4)
    out[f"{group}_series_chosen_loses_to_snaive"] = sum(r["mase_chosen"] > r["mase_seasonal_naive"] for r in part)
    out[f"{group}_low_confidence_forecasts"] = sum(r["low_confidence"] for r in part)
    out[f"{group}_forecasts"] = sum(r["origins"] for r in part)
    return out


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# forecast_eval: {', '.join(report['data'])}", "",
             f"{report['horizon_hours']} h ahead from each of the last {report['origins']} days; "
             "MASE averaged over origins then series; 95 % coverage pooled over every forecast hour.", "",
             "| data | series | model | mean MASE | 95 % coverage |", "|---|---:|---|---:|---:|"]
    for group in ("nab", "generated"):
        if f"{group}_mean_mase_chosen" not in s:
            continue
        for k in MODELS_SCORED:
            lines.append(f"| {group} | {s[f'{group}_series']} | {k} | {s[f'{group}_mean_mase_{k}']:.3f} | "
                         f"{100 * s[f'{group}_coverage95_{k}']:.1f} % |")
    lines += ["", "| series | chosen MASE | linear | seasonal-naive | chosen 95 % coverage | models chosen |",
              "|---|---:|---:|---:|---:|---|"]
    for name, r in report["series"].items():
        if not r["origins"]:
            continue
        lines.append(f"| {name} | {r['mase_chosen']:.3f} | {r['mase_linear']:.3f} | {r['mase_seasonal_naive']:.3f} | "
                     f"{100 * r['inside_chosen'] / r['steps']:.1f} % | "
                     + ", ".join(f"{m} {c}" for m, c in r["models_chosen"].items()) + " |")
    return "\n".join(lines) + "\n"


def run(data: str | Path | list = DEFAULT_DATA, origins: int = 7, horizon: int = 24, generated_servers: int = 4,
        generated_days: int = 28, console=None, out_dir: Path = RESULTS_DIR) -> dict:
    say = console.print if console else (lambda *a: print(*a, file=sys.stderr))
    started = time.perf_counter()
    dirs = [Path(d) for d in data] if isinstance(data, list | tuple) else [Path(data)]
    series = {**nab_series(dirs), **(generated_series(generated_servers, generated_days) if generated_servers else {})}
    rows = {}
    for name, s in series.items():
        rows[name] = evaluate(s, origins, horizon, bounds_of(name, s))
        r = rows[name]
        say(f"  {name:<58} chosen {r['mase_chosen']!s:>7} linear {r['mase_linear']!s:>7} "
            f"snaive {r['mase_seasonal_naive']!s:>7} {r['models_chosen']}")
    summary: dict = {}
    for group in ("nab", "generated"):
        summary.update(summarize(rows, group))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    report = {"data": [str(d) for d in dirs], "origins": origins, "horizon_hours": horizon, "series": rows,
              "summary": summary}
    write_json(out_dir, "forecast_eval.json", report, indent=1, markdown=markdown(report))
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, action="append",
                   help="directory of NAB-format CSVs (repeatable; default: "
                        f"{' and '.join(str(d) for d in DEFAULT_DATA)})")
    p.add_argument("--origins", type=int, default=7, help="forecast origins (last N days)")
    p.add_argument("--horizon", type=int, default=24, help="hours forecast from each origin")
    p.add_argument("--generated-servers", type=int, default=4, help="generated servers scored too (0: none)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the results files go (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        report = run(args.data or DEFAULT_DATA, args.origins, args.horizon, args.generated_servers,
                     out_dir=args.out_dir)
    except EvalInputError as exc:
        print(f"forecast_eval: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print((Path(args.out_dir) / "forecast_eval.md").read_text(), file=sys.stderr)
    print(json.dumps({"benchmark": "forecast_eval", **report["summary"]}))


if __name__ == "__main__":
    main()
