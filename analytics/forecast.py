"""Capacity forecasts for one regular time series: pandas Series in, ForecastResult out.

No database here. Candidates are the seed's linear regression, seasonal-naive,
and additive Holt-Winters ETS with daily (and, given three weeks of history,
weekly) seasonality. Each series gets the candidate with the lowest
rolling-origin backtest MASE; see docs/analytics.md for the formulas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from rmp.catalog import NON_NEGATIVE, PERCENT, UNBOUNDED, Bounds  # noqa: F401 - PERCENT re-exported

STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient_data"

# A slope is "stable" unless it is significant and moves the level by at
# least this fraction of its mean per day.
STABLE_P_VALUE = 0.05
STABLE_REL_CHANGE_PER_DAY = 0.001


@dataclass(frozen=True)
class LinearFit:
    slope_per_day: float
    intercept: float
    r_squared: float
    p_value: float
    trend: str  # increasing | decreasing | stable


@dataclass(frozen=True)
class Prediction:
    """Point forecast and central prediction interval, one value per future step."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class ForecastResult:
    status: str
    model: str | None = None
    horizon_start: pd.Timestamp | None = None
    points: pd.DataFrame | None = None  # index: timestamps; columns yhat, lo, hi
    trend: str | None = None
    slope_per_day: float | None = None
    r_squared: float | None = None
    threshold: float | None = None
    threshold_crossing_at: pd.Timestamp | None = None  # observed, in the past, when above_threshold
    above_threshold: bool = False  # already at or over the threshold at the last observation
    crossing_lo_at: pd.Timestamp | None = None  # earliest: the upper band crosses
    crossing_hi_at: pd.Timestamp | None = None  # latest: the lower band crosses
    mase: float | None = None
    backtest: dict[str, float] = field(default_factory=dict)  # MASE of every candidate
    n_points: int = 0


@dataclass(frozen=True)
class ForecastConfig:
    freq: str = "h"
    season: int = 24  # steps per day at `freq`
    horizon_days: int = 14
    crossing_horizon_days: int = 180  # how far to look for a threshold crossing
    level: float = 0.95  # prediction-interval coverage
    backtest_folds: int = 3
    min_seasons: int = 3  # history needed, in days: two to fit, one to test

    @property
    def steps_per_day(self) -> int:
        return int(pd.Timedelta(days=1) / pd.Timedelta(1, unit=self.freq))

    @property
    def min_points(self) -> int:
        return self.min_seasons * self.season


def regularize(series: pd.Series, freq: str = "h") -> pd.Series:
    """Mean per `freq` step on a regular grid; short gaps filled linearly in time."""
    s = series.dropna().astype(float).sort_index()
    if s.empty:
        return s
    s = s.resample(freq).mean()
    return s.interpolate(method="time").dropna()


def linear_fit(series: pd.Series) -> LinearFit:
    """Least-squares line through the series against time in days."""
    s = series.dropna()
    days = ((s.index - s.index[0]) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    y = s.to_numpy(dtype=float)
    if len(y) < 3 or np.ptp(days) == 0:
        raise ValueError("a line needs at least three points at distinct times")
    res = stats.linregress(days, y)
    r2 = float(res.rvalue**2) if np.isfinite(res.rvalue) else 0.0
    p = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
    level = max(abs(float(np.mean(y))), 1e-12)
    if p >= STABLE_P_VALUE or abs(res.slope) / level < STABLE_REL_CHANGE_PER_DAY:
        trend = "stable"
    else:
        trend = "increasing" if res.slope > 0 else "decreasing"
    return LinearFit(float(res.slope), float(res.intercept), r2, p, trend)


# --- candidate models: (train values, steps ahead, season, level) -> Prediction ---


def predict_linear(y: np.ndarray, h: int, season: int, level: float) -> Prediction:
    """OLS on the step index; interval s*sqrt(1 + 1/n + (x0-xbar)^2/Sxx) * t(n-2)."""
    n = len(y)
    x = np.arange(n, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    s = math.sqrt(float(resid @ resid) / max(n - 2, 1))
    x0 = np.arange(n, n + h, dtype=float)
    xbar = x.mean()
    sxx = float(((x - xbar) ** 2).sum())
    se = s * np.sqrt(1 + 1 / n + (x0 - xbar) ** 2 / sxx)
    q = stats.t.ppf(0.5 + level / 2, max(n - 2, 1))
    mean = intercept + slope * x0
    return Prediction(mean, mean - q * se, mean + q * se)


def predict_seasonal_naive(y: np.ndarray, h: int, season: int, level: float) -> Prediction:
    """Same hour of the last season; sigma from seasonal differences, widened by sqrt(k+1)."""
    steps = np.arange(h)
    mean = y[len(y) - season + steps % season]
    diffs = y[season:] - y[:-season]
    sigma = float(np.sqrt(np.mean(diffs**2))) if len(diffs) else 0.0
    k = steps // season
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * sigma * np.sqrt(k + 1)
    return Prediction(mean, mean - half, mean + half)


def _predict_ets(y: np.ndarray, h: int, period: int, level: float) -> Prediction:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    model = ETSModel(
        pd.Series(y), error="add", trend="add", seasonal="add", seasonal_periods=period,
        initialization_method="heuristic",  # estimating `period` initial states is slow and no better
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; a bad fit loses the backtest anyway
        fit = model.fit(disp=False)
        frame = fit.get_prediction(start=len(y), end=len(y) + h - 1).summary_frame(alpha=1 - level)
    mean = frame["mean"].to_numpy(dtype=float)
    lo = frame["pi_lower"].to_numpy(dtype=float)
    hi = frame["pi_upper"].to_numpy(dtype=float)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("ETS produced non-finite forecasts")
    return Prediction(mean, lo, hi)


def predict_ets_daily(y: np.ndarray, h: int, season: int, level: float) -> Prediction:
    return _predict_ets(y, h, season, level)


def predict_ets_weekly(y: np.ndarray, h: int, season: int, level: float) -> Prediction:
    return _predict_ets(y, h, 7 * season, level)


Predictor = Callable[[np.ndarray, int, int, float], Prediction]

MODELS: dict[str, Predictor] = {
    "linear": predict_linear,
    "seasonal_naive": predict_seasonal_naive,
    "ets_daily": predict_ets_daily,
    "ets_weekly": predict_ets_weekly,
}


def clip(values: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Values held inside what the metric can physically be (a disk is never 140 % full)."""
    lower, upper = bounds
    return np.clip(values, -np.inf if lower is None else lower, np.inf if upper is None else upper)


def min_train(model: str, season: int) -> int:
    """Training points a candidate needs: two full seasons for the seasonal ones."""
    return {"linear": 3, "seasonal_naive": season + 1, "ets_daily": 2 * season,
            "ets_weekly": 3 * 7 * season}[model]


def mase(actual: np.ndarray, predicted: np.ndarray, train: np.ndarray, season: int) -> float:
    """Mean absolute error scaled by the in-sample MAE of seasonal-naive (Hyndman & Koehler 2006)."""
    mae = float(np.mean(np.abs(actual - predicted)))
    scale = float(np.mean(np.abs(train[season:] - train[:-season])))
    if scale == 0.0:
        return 0.0 if mae == 0.0 else math.inf
    return mae / scale


def backtest(y: np.ndarray, model: str, season: int, horizon: int, folds: int,
             bounds: Bounds | None = None) -> float:
    """Mean MASE over `folds` rolling origins, each forecasting the next `horizon` steps
    (clipped to `bounds`, as the stored forecast is)."""
    predictor = MODELS[model]
    scores = []
    for i in range(folds, 0, -1):
        origin = len(y) - i * horizon
        if origin < max(min_train(model, season), season + 1):
            continue
        train, test = y[:origin], y[origin:origin + horizon]
        try:
            pred = predictor(train, len(test), season, 0.95)
        except (ValueError, np.linalg.LinAlgError):
            return math.inf
        scores.append(mase(test, clip(pred.mean, bounds or UNBOUNDED), train, season))
    return float(np.mean(scores)) if scores else math.nan


def _first_crossing(index: pd.DatetimeIndex, values: np.ndarray, threshold: float) -> pd.Timestamp | None:
    hit = np.flatnonzero(values >= threshold)
    return index[hit[0]] if len(hit) else None


def _current_run_start(s: pd.Series, threshold: float) -> pd.Timestamp:
    """When the series last went to or over `threshold` and stayed there up to its last value."""
    below = np.flatnonzero(s.to_numpy(dtype=float) < threshold)
    return s.index[below[-1] + 1] if len(below) else s.index[0]


def forecast_series(
    series: pd.Series, config: ForecastConfig | None = None, threshold: float | None = None,
    bounds: Bounds = UNBOUNDED,
) -> ForecastResult:
    """Fit, choose by backtest, forecast `horizon_days`, and find when `threshold` is crossed.

    ``series`` has a DatetimeIndex; it is put on a regular `config.freq` grid first.
    Too little history gives status ``insufficient_data`` and no numbers. The
    point forecast and its interval are clipped to `bounds` (models know
    nothing of 100 %). A series already at or over `threshold` at its last
    observation gets ``above_threshold`` and, as its crossing, the observed
    time it went over, never a made-up future one.
    """
    cfg = config or ForecastConfig()
    s = regularize(series, cfg.freq)
    if len(s) < cfg.min_points:
        return ForecastResult(status=STATUS_INSUFFICIENT, threshold=threshold, n_points=len(s))
    y = s.to_numpy(dtype=float)
    lin = linear_fit(s)

    candidates = [m for m in MODELS if len(y) - cfg.season >= min_train(m, cfg.season)]
    scores = {m: backtest(y, m, cfg.season, cfg.season, cfg.backtest_folds, bounds) for m in candidates}
    finite = {m: v for m, v in scores.items() if np.isfinite(v)}
    # Ties (e.g. a constant series, every MASE 0) go to the simplest model.
    chosen = min(finite, key=lambda m: (finite[m], list(MODELS).index(m))) if finite else "linear"

    step = pd.Timedelta(1, unit=cfg.freq)
    horizon = cfg.horizon_days * cfg.steps_per_day
    search = max(horizon, cfg.crossing_horizon_days * cfg.steps_per_day)
    try:
        pred = MODELS[chosen](y, search, cfg.season, cfg.level)
    except (ValueError, np.linalg.LinAlgError):
        chosen = "linear"
        pred = predict_linear(y, search, cfg.season, cfg.level)
    start = s.index[-1] + step
    index = pd.date_range(start, periods=search, freq=step)
    mean, lo, hi = clip(pred.mean, bounds), clip(pred.lo, bounds), clip(pred.hi, bounds)
    points = pd.DataFrame({"yhat": mean, "lo": lo, "hi": hi}, index=index)

    crossing = crossing_lo = crossing_hi = None
    above = threshold is not None and bool(y[-1] >= threshold)
    if above:
        crossing = crossing_lo = crossing_hi = _current_run_start(s, threshold)
    elif threshold is not None:
        crossing = _first_crossing(index, mean, threshold)
        crossing_lo = _first_crossing(index, hi, threshold)
        crossing_hi = _first_crossing(index, lo, threshold)

    return ForecastResult(
        status=STATUS_OK,
        model=chosen,
        horizon_start=start,
        points=points.iloc[:horizon],
        trend=lin.trend,
        slope_per_day=lin.slope_per_day,
        r_squared=lin.r_squared,
        threshold=threshold,
        threshold_crossing_at=crossing,
        above_threshold=above,
        crossing_lo_at=crossing_lo,
        crossing_hi_at=crossing_hi,
        mase=scores.get(chosen),
        backtest=scores,
        n_points=len(s),
    )
