"""Capacity forecasts for one regular time series: pandas Series in, ForecastResult out.

No database here. Candidates are the seed's linear regression, seasonal-naive,
the seasonal median (each hour of the day: the median of that hour over the
last seven days), additive Holt-Winters ETS with daily (and, given three weeks
of history, weekly) seasonality, and the equal-weight combination of daily ETS
and the seasonal median. Each series gets the candidate with the lowest
rolling-origin backtest MASE; when none beats seasonal-naive there, it gets
seasonal-naive (and is marked low confidence). The 95 % band is calibrated on
the chosen model's own backtest errors (split-conformal quantile), widened by
sqrt(1 + whole days ahead); its coverage is measured leave-one-fold-out. See
docs/analytics.md for the formulas and the measured results.
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
    seasonal_naive_mase: float | None = None  # backtest MASE of seasonal-naive, the bar to beat
    interval_coverage: float | None = None  # leave-one-fold-out coverage of the band in the backtest
    interval_method: str | None = None  # "backtest" (calibrated) | "model" (too little history to calibrate)

    @property
    def low_confidence(self) -> bool:
        """No candidate beat seasonal-naive in the backtest: the forecast has no demonstrated skill."""
        return (self.status == STATUS_OK and self.seasonal_naive_mase is not None and self.mase is not None
                and not self.mase < self.seasonal_naive_mase)


@dataclass(frozen=True)
class ForecastConfig:
    freq: str = "h"
    season: int = 24  # steps per day at `freq`
    horizon_days: int = 14
    crossing_horizon_days: int = 180  # how far to look for a threshold crossing
    level: float = 0.95  # prediction-interval coverage
    backtest_folds: int = 4  # one-day folds: 4 chose better than 2 or 3 on the NAB series
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


SEASONAL_MEDIAN_DAYS = 7


def predict_seasonal_median(y: np.ndarray, h: int, season: int, level: float) -> Prediction:
    """Each step of the season: the median of that step over the last 7 seasons (fewer if
    the series is shorter). One odd day (an outage, a spike) no longer becomes tomorrow's
    forecast, as it does for seasonal-naive. Interval: the seasonal-naive one."""
    seasons = max(1, min(SEASONAL_MEDIAN_DAYS, len(y) // season))
    history = y[len(y) - seasons * season:].reshape(seasons, season)
    profile = np.median(history, axis=0)
    steps = np.arange(h)
    mean = profile[steps % season]
    naive = predict_seasonal_naive(y, h, season, level)
    return Prediction(mean, mean - (naive.mean - naive.lo), mean + (naive.hi - naive.mean))


_ETS_CACHE: dict[tuple, Prediction] = {}
_ETS_CACHE_SIZE = 16


def _predict_ets(y: np.ndarray, h: int, period: int, level: float) -> Prediction:
    """Additive ETS; the last few fits are remembered, so ets_median reuses ets_daily's fit."""
    key = (hash(np.ascontiguousarray(y, dtype=float).tobytes()), len(y), h, period, level)
    if key not in _ETS_CACHE:
        if len(_ETS_CACHE) >= _ETS_CACHE_SIZE:
            _ETS_CACHE.pop(next(iter(_ETS_CACHE)))
        _ETS_CACHE[key] = _fit_ets(y, h, period, level)
    return _ETS_CACHE[key]


def _fit_ets(y: np.ndarray, h: int, period: int, level: float) -> Prediction:
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


def predict_ets_median(y: np.ndarray, h: int, season: int, level: float) -> Prediction:
    """Mean of daily ETS and the seasonal median: combining a trend-following and a robust
    seasonal forecast beats either alone more often than choosing between them (M4)."""
    a = predict_ets_daily(y, h, season, level)
    b = predict_seasonal_median(y, h, season, level)
    return Prediction((a.mean + b.mean) / 2, (a.lo + b.lo) / 2, (a.hi + b.hi) / 2)


Predictor = Callable[[np.ndarray, int, int, float], Prediction]

SEASONAL_NAIVE = "seasonal_naive"
# Order = preference on ties (the simplest first).
MODELS: dict[str, Predictor] = {
    SEASONAL_NAIVE: predict_seasonal_naive,
    "linear": predict_linear,
    "seasonal_median": predict_seasonal_median,
    "ets_daily": predict_ets_daily,
    "ets_weekly": predict_ets_weekly,
    "ets_median": predict_ets_median,
}


def clip(values: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Values held inside what the metric can physically be (a disk is never 140 % full)."""
    lower, upper = bounds
    return np.clip(values, -np.inf if lower is None else lower, np.inf if upper is None else upper)


def min_train(model: str, season: int) -> int:
    """Training points a candidate needs: two full seasons for the seasonal ones."""
    return {"linear": 3, SEASONAL_NAIVE: season + 1, "seasonal_median": season, "ets_daily": 2 * season,
            "ets_weekly": 3 * 7 * season, "ets_median": 2 * season}[model]


def mase(actual: np.ndarray, predicted: np.ndarray, train: np.ndarray, season: int) -> float:
    """Mean absolute error scaled by the in-sample MAE of seasonal-naive (Hyndman & Koehler 2006)."""
    mae = float(np.mean(np.abs(actual - predicted)))
    scale = float(np.mean(np.abs(train[season:] - train[:-season])))
    if scale == 0.0:
        return 0.0 if mae == 0.0 else math.inf
    return mae / scale


@dataclass(frozen=True)
class Backtest:
    """One candidate's rolling-origin backtest: MASE per fold and the forecast errors per fold."""

    scores: list[float]
    errors: list[np.ndarray]  # actual - forecast, one array of `horizon` values per fold

    @property
    def mase(self) -> float:
        return float(np.mean(self.scores)) if self.scores else math.nan


def backtest_folds(y: np.ndarray, model: str, season: int, horizon: int, folds: int,
                   bounds: Bounds | None = None) -> Backtest | None:
    """`folds` rolling origins, each forecasting the next `horizon` steps (clipped to
    `bounds`, as the stored forecast is); None when the model fails on a fold."""
    predictor = MODELS[model]
    scores: list[float] = []
    errors: list[np.ndarray] = []
    for i in range(folds, 0, -1):
        origin = len(y) - i * horizon
        if origin < max(min_train(model, season), season + 1):
            continue
        train, test = y[:origin], y[origin:origin + horizon]
        try:
            pred = predictor(train, len(test), season, 0.95)
        except (ValueError, np.linalg.LinAlgError):
            return None
        mean = clip(pred.mean, bounds or UNBOUNDED)
        scores.append(mase(test, mean, train, season))
        errors.append(test - mean)
    return Backtest(scores, errors)


def backtest(y: np.ndarray, model: str, season: int, horizon: int, folds: int,
             bounds: Bounds | None = None) -> float:
    """Mean MASE over `folds` rolling origins (inf when the model fails, nan when too short)."""
    result = backtest_folds(y, model, season, horizon, folds, bounds)
    return math.inf if result is None else result.mase


def conformal_half_width(errors: np.ndarray, level: float) -> float:
    """The ceil((n+1) level)/n empirical quantile of |errors| (split conformal: a new error
    falls within it with probability >= level when errors are exchangeable)."""
    a = np.abs(np.asarray(errors, dtype=float))
    n = len(a)
    rank = min(n, math.ceil((n + 1) * level))
    return float(np.partition(a, rank - 1)[rank - 1])


def leave_one_fold_out_coverage(errors: list[np.ndarray], level: float) -> float | None:
    """Share of each fold's errors inside the band calibrated on the other folds."""
    if len(errors) < 2:
        return None
    inside = total = 0
    for i, fold in enumerate(errors):
        half = conformal_half_width(np.concatenate([e for j, e in enumerate(errors) if j != i]), level)
        inside += int(np.sum(np.abs(fold) <= half))
        total += len(fold)
    return inside / total if total else None


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
    tests = {m: backtest_folds(y, m, cfg.season, cfg.season, cfg.backtest_folds, bounds) for m in candidates}
    scores = {m: (math.inf if t is None else t.mase) for m, t in tests.items()}
    finite = {m: v for m, v in scores.items() if np.isfinite(v)}
    # Ties (e.g. a constant series, every MASE 0) go to the simplest model.
    chosen = min(finite, key=lambda m: (finite[m], list(MODELS).index(m))) if finite else "linear"
    naive_score = finite.get(SEASONAL_NAIVE)
    if naive_score is not None and not finite[chosen] < naive_score:
        chosen = SEASONAL_NAIVE  # nothing beat "same as yesterday"

    step = pd.Timedelta(1, unit=cfg.freq)
    horizon = cfg.horizon_days * cfg.steps_per_day
    search = max(horizon, cfg.crossing_horizon_days * cfg.steps_per_day)
    try:
        pred = MODELS[chosen](y, search, cfg.season, cfg.level)
    except (ValueError, np.linalg.LinAlgError):
        chosen = "linear"
        pred = predict_linear(y, search, cfg.season, cfg.level)
    errors = tests[chosen].errors if tests.get(chosen) is not None else []
    coverage = None
    method = "model"
    if len(errors) >= 2:
        # the model's own interval assumes the model is right; the backtest shows how wrong it
        # is: the band is the conformal quantile of its one-day-ahead errors, wider by
        # sqrt(1 + k) k days ahead (errors of a random walk of daily surprises)
        half = conformal_half_width(np.concatenate(errors), cfg.level)
        days_ahead = np.arange(search) // cfg.season
        width = half * np.sqrt(1 + days_ahead)
        pred = Prediction(pred.mean, pred.mean - width, pred.mean + width)
        coverage = leave_one_fold_out_coverage(errors, cfg.level)
        method = "backtest"
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
        seasonal_naive_mase=naive_score,
        interval_coverage=coverage,
        interval_method=method,
    )
