"""Forecasting algorithms on series whose right answers are known (no database)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analytics.forecast import (
    NON_NEGATIVE,
    PERCENT,
    STATUS_INSUFFICIENT,
    UNBOUNDED,
    ForecastConfig,
    backtest,
    clip,
    conformal_half_width,
    forecast_series,
    leave_one_fold_out_coverage,
    linear_fit,
    mase,
    predict_linear,
    predict_seasonal_median,
    predict_seasonal_naive,
)
from analytics.store import forecast_points_json

START = pd.Timestamp("2024-03-01", tz="UTC")


def hourly(values: np.ndarray) -> pd.Series:
    return pd.Series(values, index=pd.date_range(START, periods=len(values), freq="h"))


def test_linear_fit_of_an_exact_line():
    days = np.arange(24 * 10) / 24
    fit = linear_fit(hourly(20 + 1.5 * days))
    assert fit.slope_per_day == pytest.approx(1.5, abs=1e-9)
    assert fit.intercept == pytest.approx(20.0, abs=1e-9)
    assert fit.r_squared == pytest.approx(1.0)
    assert fit.trend == "increasing"
    assert linear_fit(hourly(80 - 0.5 * days)).trend == "decreasing"


def test_flat_noise_is_stable():
    rng = np.random.default_rng(3)
    fit = linear_fit(hourly(50 + rng.normal(0, 1, 24 * 10)))
    assert fit.trend == "stable"
    assert abs(fit.slope_per_day) < 0.1


def test_mase_arithmetic():
    train = np.array([1.0, 2.0, 3.0, 5.0, 6.0, 7.0])  # season 3: |5-1|,|6-2|,|7-3| -> scale 4
    actual = np.array([8.0, 9.0])
    predicted = np.array([6.0, 11.0])  # errors 2 and 2 -> MAE 2
    assert mase(actual, predicted, train, 3) == pytest.approx(0.5)
    assert mase(actual, actual, np.ones(6), 3) == 0.0
    assert mase(actual, predicted, np.ones(6), 3) == math.inf


def test_seasonal_naive_repeats_the_last_season():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pred = predict_seasonal_naive(y, 5, 3, 0.95)
    assert list(pred.mean) == [4.0, 5.0, 6.0, 4.0, 5.0]
    # seasonal differences are all 3 -> sigma 3; the second season is sqrt(2) wider
    half = pred.hi - pred.mean
    assert half[0] == pytest.approx(1.959964 * 3, rel=1e-5)
    assert half[3] == pytest.approx(1.959964 * 3 * math.sqrt(2), rel=1e-5)


def test_linear_prediction_interval_formula():
    y = np.array([1.0, 3.0, 2.0, 4.0])  # OLS: slope 0.8, intercept 1.3; residual SS 1.8
    pred = predict_linear(y, 1, 24, 0.95)
    assert pred.mean[0] == pytest.approx(1.3 + 0.8 * 4)
    s = math.sqrt(1.8 / 2)
    se = s * math.sqrt(1 + 1 / 4 + (4 - 1.5) ** 2 / 5)
    assert pred.hi[0] - pred.mean[0] == pytest.approx(4.302653 * se, rel=1e-5)


def test_known_linear_disk_trend_gives_time_to_90_within_10_percent():
    rng = np.random.default_rng(7)
    n = 24 * 21
    days = np.arange(n) / 24
    # 40 % rising 1.0 point/day with a small daily cycle: the line reaches 90 % after 50 days
    disk = 40 + 1.0 * days + 0.5 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 0.3, n)
    result = forecast_series(hourly(disk), threshold=90.0)
    assert result.status == "ok"
    true_remaining = START + pd.Timedelta(days=50) - hourly(disk).index[-1]
    predicted_remaining = result.threshold_crossing_at - hourly(disk).index[-1]
    assert abs(predicted_remaining / true_remaining - 1) < 0.10
    assert result.crossing_lo_at <= result.threshold_crossing_at
    assert result.crossing_hi_at is None or result.crossing_hi_at >= result.threshold_crossing_at
    assert result.trend == "increasing"
    assert result.slope_per_day == pytest.approx(1.0, abs=0.02)
    assert len(result.points) == 14 * 24
    assert (result.points["lo"] <= result.points["yhat"]).all()
    assert (result.points["yhat"] <= result.points["hi"]).all()


def test_daily_seasonal_series_is_forecast_better_by_the_seasonal_model():
    rng = np.random.default_rng(11)
    n = 24 * 14
    cpu = 35 + 20 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 2, n)
    result = forecast_series(hourly(cpu))
    assert result.model in ("ets_daily", "seasonal_naive", "seasonal_median", "ets_median")
    assert result.mase < result.backtest["linear"]
    assert result.backtest["linear"] > 3 * result.mase
    # the forecast keeps the daily cycle: peak minus trough near 2 * 20
    day = result.points["yhat"].iloc[:24]
    assert day.max() - day.min() == pytest.approx(40, rel=0.15)


def test_backtest_of_seasonal_naive_on_a_pure_cycle_is_zero():
    y = np.tile(np.arange(24, dtype=float), 5)
    assert backtest(y, "seasonal_naive", 24, 24, 3) == 0.0


def test_short_series_gives_insufficient_data_and_no_numbers():
    result = forecast_series(hourly(np.linspace(10, 20, 40)), threshold=90.0)
    assert result.status == STATUS_INSUFFICIENT
    assert result.n_points == 40
    assert result.points is None
    assert result.model is None and result.slope_per_day is None and result.mase is None
    assert result.threshold_crossing_at is None


def test_already_over_threshold_reports_when_it_went_over_not_a_future_crossing():
    series = hourly(np.linspace(80, 95, 24 * 4))  # 80 + 15 i / 95 reaches 90 at i = 63.3
    result = forecast_series(series, threshold=90.0, bounds=PERCENT)
    assert result.above_threshold is True
    assert result.threshold_crossing_at == series.index[64]
    assert result.crossing_lo_at == result.crossing_hi_at == series.index[64]
    assert result.threshold_crossing_at < result.horizon_start


def test_over_threshold_again_after_a_dip_counts_from_the_last_time_it_went_over():
    values = np.concatenate([np.full(48, 92.0), np.full(12, 85.0), np.full(36, 93.0)])
    series = hourly(values)
    result = forecast_series(series, threshold=90.0, bounds=PERCENT)
    assert result.above_threshold is True
    assert result.threshold_crossing_at == series.index[60]


def test_below_threshold_is_not_flagged():
    result = forecast_series(hourly(np.linspace(50, 60, 24 * 4)), threshold=90.0, bounds=PERCENT)
    assert result.above_threshold is False


def test_percent_forecast_of_a_filling_disk_is_clipped_at_100():
    # 50 % + 5.5 points/day: 90 % at hour 174.5 (first forecast hour over it: 175), 100 % at hour 218.2
    n = 24 * 7
    series = hourly(50 + 5.5 * np.arange(n) / 24)
    raw = forecast_series(series, threshold=90.0)
    result = forecast_series(series, threshold=90.0, bounds=PERCENT)
    assert result.model == raw.model == "linear"
    assert raw.points["yhat"].max() == pytest.approx(50 + 5.5 * (n + 14 * 24 - 1) / 24)  # 126.77: the bug
    assert result.points["yhat"].max() == 100.0
    assert result.points["hi"].max() == 100.0
    assert result.points["lo"].max() <= 100.0
    assert (result.points["yhat"].iloc[219 - n:] == 100.0).all()
    assert result.points["yhat"].iloc[218 - n] == pytest.approx(50 + 5.5 * 218 / 24)  # 99.96, untouched
    assert result.threshold_crossing_at == START + pd.Timedelta(hours=175)
    assert result.above_threshold is False
    stored = forecast_points_json(result)
    assert max(p["hi"] for p in stored) == 100.0 and max(p["yhat"] for p in stored) == 100.0


def test_falling_series_is_clipped_at_zero():
    series = hourly(np.maximum(40 - 4.0 * np.arange(24 * 5) / 24, 0))  # 40 % falling 4 points/day
    result = forecast_series(series, bounds=PERCENT)
    assert result.points["yhat"].min() == 0.0
    assert result.points["lo"].min() == 0.0
    assert (result.points["lo"] >= 0).all()


def test_clip_keeps_values_inside_bounds():
    values = np.array([-5.0, 0.0, 50.0, 100.0, 140.0])
    assert list(clip(values, PERCENT)) == [0.0, 0.0, 50.0, 100.0, 100.0]
    assert list(clip(values, NON_NEGATIVE)) == [0.0, 0.0, 50.0, 100.0, 140.0]
    assert list(clip(values, UNBOUNDED)) == list(values)


def test_minimum_history_is_three_days_of_hours():
    assert ForecastConfig().min_points == 72
    assert forecast_series(hourly(np.linspace(10, 20, 71))).status == STATUS_INSUFFICIENT
    assert forecast_series(hourly(np.linspace(10, 20, 72))).status == "ok"


def test_seasonal_median_takes_each_hour_s_median_over_the_last_seven_days():
    day = np.arange(24, dtype=float)
    days = [day + 10 * k for k in range(8)]  # day k: hour h has value h + 10k
    days[6] = day + 1000  # one odd day: ignored by the median
    y = np.concatenate(days)
    pred = predict_seasonal_median(y, 30, 24, 0.95)
    # last seven days are k = 1..7 with k = 6 replaced by 1000: median of {10,20,30,40,50,70,1000} = 40
    assert pred.mean.tolist() == (day + 40).tolist() + (day[:6] + 40).tolist()


def test_conformal_half_width_is_the_ceil_n_plus_1_quantile():
    errors = np.arange(1, 21, dtype=float)  # |e| = 1..20; ceil(21 * 0.95) = 20th smallest
    assert conformal_half_width(errors, 0.95) == 20.0
    assert conformal_half_width(-errors, 0.80) == 17.0  # ceil(21 * 0.8) = 17


def test_leave_one_fold_out_coverage_counts_each_fold_against_the_others():
    folds = [np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 9.0])]
    # fold 1 and 2: band from the 4 others (ceil(5 * 0.5) = 3rd of |e|: 1,1,2,9 -> 2): both inside;
    # fold 3: band from 1,1,2,2 -> 2: 1 inside, 9 outside => 5 of 6
    assert leave_one_fold_out_coverage(folds, 0.5) == pytest.approx(5 / 6)
    assert leave_one_fold_out_coverage(folds[:1], 0.5) is None


def test_pure_noise_falls_back_to_seasonal_naive_with_low_confidence_or_beats_it():
    rng = np.random.default_rng(3)
    result = forecast_series(hourly(50 + rng.normal(0, 5, 24 * 10)))
    naive = result.backtest["seasonal_naive"]
    assert result.seasonal_naive_mase == naive
    if result.model == "seasonal_naive":
        assert result.low_confidence
    else:
        assert result.mase < naive and not result.low_confidence


def test_no_candidate_better_than_seasonal_naive_chooses_it():
    import analytics.forecast as fc

    # a pure daily cycle: seasonal-naive is exact (MASE 0); the ties go to it, and it is low confidence
    y = np.tile(np.arange(24, dtype=float), 6)
    result = fc.forecast_series(hourly(y))
    assert result.model == "seasonal_naive"
    assert result.mase == 0.0 and result.low_confidence


def test_the_band_is_calibrated_on_backtest_errors_and_widens_by_day():
    rng = np.random.default_rng(21)
    n = 24 * 14
    y = 35 + 20 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 2, n)
    result = forecast_series(hourly(y), ForecastConfig(horizon_days=3))
    assert result.interval_method == "backtest"
    half = (result.points["hi"] - result.points["yhat"]).to_numpy()
    assert half[:24] == pytest.approx(np.full(24, half[0]))
    assert half[24] == pytest.approx(half[0] * math.sqrt(2))
    assert half[48] == pytest.approx(half[0] * math.sqrt(3))
    # noise sigma 2: a 95 % band of a good model is about +-2 sigma wide, within a factor of two
    assert 2.0 < half[0] < 8.0
    assert 0.8 <= result.interval_coverage <= 1.0
