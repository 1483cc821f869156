"""Backtest the forecaster: MASE of the per-series chosen model vs the linear
baseline vs seasonal-naive, on the NAB series and on generated fleet data.

Each series is put on an hourly grid (what the forecaster reads from
metrics.server_metrics_1h). For each of the last `origins` days: fit on
everything before the origin — the model choice included, by the
forecaster's own inner backtest on that training part only — forecast the
next `horizon` hours, and score MASE (scale: in-sample seasonal-naive MAE,
season 24 h). Every forecast is clipped to the series' bounds (percent
[0, 100], bytes >= 0), as the pipeline stores them. Scores are averaged over origins, then over series.

    python -m bench.forecast_eval [--data DIR]      # prints one JSON line last
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
    Bounds,
    ForecastConfig,
    clip,
    forecast_series,
    mase,
    predict_linear,
    predict_seasonal_naive,
    regularize,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nab"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK: dict = {"origins": 2, "generated_servers": 2}
SEASON = 24


def nab_series(data: Path) -> dict[str, pd.Series]:
    out = {}
    for path in sorted(Path(data).glob("*.csv")):
        df = pd.read_csv(path)
        s = pd.Series(df["value"].to_numpy(dtype=float), index=pd.to_datetime(df["timestamp"], utc=True))
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


def bounds_of(name: str) -> Bounds:
    """What the series can physically be (as the pipeline clips it): cpu/memory/disk percent, else >= 0."""
    return PERCENT if "cpu" in name or name.endswith("_percent") else NON_NEGATIVE


def evaluate(series: pd.Series, origins: int, horizon: int, bounds: Bounds = NON_NEGATIVE) -> dict:
    y = series.to_numpy(dtype=float)
    cfg = ForecastConfig(horizon_days=max(1, horizon // SEASON), crossing_horizon_days=1)
    scores: dict[str, list[float]] = {"chosen": [], "linear": [], "seasonal_naive": []}
    chosen_models: list[str] = []
    for k in range(origins, 0, -1):
        origin = len(y) - k * SEASON
        train, test = y[:origin], y[origin:origin + horizon]
        if origin < cfg.min_points or len(test) < horizon:
            continue
        result = forecast_series(series.iloc[:origin], cfg, bounds=bounds)
        chosen_models.append(result.model)
        scores["chosen"].append(mase(test, result.points["yhat"].to_numpy()[:horizon], train, SEASON))
        linear = clip(predict_linear(train, horizon, SEASON, 0.95).mean, bounds)
        snaive = clip(predict_seasonal_naive(train, horizon, SEASON, 0.95).mean, bounds)
        scores["linear"].append(mase(test, linear, train, SEASON))
        scores["seasonal_naive"].append(mase(test, snaive, train, SEASON))
    return {
        "points": len(y), "origins": len(chosen_models),
        "models_chosen": {m: chosen_models.count(m) for m in sorted(set(chosen_models))},
        **{f"mase_{k}": round(float(np.mean(v)), 4) if v else None for k, v in scores.items()},
    }


def run(data: str | Path = DEFAULT_DATA, origins: int = 5, horizon: int = 24, generated_servers: int = 4,
        generated_days: int = 28, console=None, out_dir: Path = RESULTS_DIR) -> dict:
    say = console.print if console else (lambda *a: print(*a, file=sys.stderr))
    started = time.perf_counter()
    series = {**nab_series(Path(data)), **generated_series(generated_servers, generated_days)}
    rows = {}
    for name, s in series.items():
        rows[name] = evaluate(s, origins, horizon, bounds_of(name))
        r = rows[name]
        say(f"  {name:<58} chosen {r['mase_chosen']!s:>7} linear {r['mase_linear']!s:>7} "
            f"snaive {r['mase_seasonal_naive']!s:>7} {r['models_chosen']}")
    summary: dict = {}
    for group in ("nab", "generated"):
        part = [r for n, r in rows.items() if n.startswith(group + "/") and r["origins"]]
        for k in ("chosen", "linear", "seasonal_naive"):
            summary[f"{group}_mean_mase_{k}"] = round(float(np.mean([r[f"mase_{k}"] for r in part])), 4)
        summary[f"{group}_linear_over_chosen"] = round(
            summary[f"{group}_mean_mase_linear"] / summary[f"{group}_mean_mase_chosen"], 3)
        summary[f"{group}_snaive_over_chosen"] = round(
            summary[f"{group}_mean_mase_seasonal_naive"] / summary[f"{group}_mean_mase_chosen"], 3)
        summary[f"{group}_series"] = len(part)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    report = {"origins": origins, "horizon_hours": horizon, "series": rows, "summary": summary}
    out = Path(out_dir) / "forecast_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of NAB-format CSVs")
    p.add_argument("--origins", type=int, default=5, help="forecast origins (last N days)")
    p.add_argument("--horizon", type=int, default=24, help="hours forecast from each origin")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    report = run(args.data, args.origins, args.horizon, out_dir=args.out_dir)
    print(json.dumps({"benchmark": "forecast_eval", **report["summary"]}))


if __name__ == "__main__":
    main()
