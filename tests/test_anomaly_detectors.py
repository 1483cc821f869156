"""Anomaly detectors on hand-built series with known anomalies (no database)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.anomaly import (
    InsufficientHistory,
    baseline_rule,
    esd_detector,
    generalized_esd,
    merge_flags,
    robust_z,
    stl_detector,
)

START = pd.Timestamp("2024-03-01", tz="UTC")


def series(values, freq: str = "5min") -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), index=pd.date_range(START, periods=len(values), freq=freq))


def seasonal_cpu(days: int = 7, seed: int = 2) -> pd.Series:
    rng = np.random.default_rng(seed)
    n = 288 * days
    t = np.arange(n)
    # daily cycle, slow upward trend, noise
    return series(40 + 15 * np.sin(2 * np.pi * t / 288) + 0.002 * t + rng.normal(0, 1.5, n))


def test_baseline_rule_flags_more_than_half_change_against_previous_hour():
    values = [10.0] * 12 + [16.0] + [10.0] * 12  # 16 vs 10 = +60 %
    found = baseline_rule(series(values))
    assert len(found) == 1
    a = found[0]
    assert a.started_at == a.ended_at == START + pd.Timedelta(minutes=5 * 12)
    assert a.observed == 16.0 and a.expected == 10.0
    assert a.score == pytest.approx(0.6)
    assert a.direction == "up"


def test_baseline_rule_ignores_changes_up_to_half():
    assert baseline_rule(series([10.0] * 12 + [15.0] + [10.0] * 12)) == []


def test_baseline_rule_never_divides_by_a_zero_baseline():
    assert baseline_rule(series([0.0] * 12 + [5.0])) == []


def test_merge_flags_joins_close_points_and_keeps_the_peak():
    idx = pd.date_range(START, periods=10, freq="h")
    flagged = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    observed = np.arange(10, dtype=float)
    expected = np.full(10, 5.0)
    score = np.array([0, 3, 4, 0, 9, 0, 0, 0, 2, 0], dtype=float)
    out = merge_flags(idx, flagged, observed, expected, score, max_gap=2)
    assert [(a.started_at, a.ended_at) for a in out] == [(idx[1], idx[4]), (idx[8], idx[8])]
    assert out[0].score == 9.0 and out[0].observed == 4.0 and out[0].direction == "down"
    assert out[1].observed == 8.0 and out[1].direction == "up"


def test_robust_z_uses_the_scaled_mad():
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))  # median 3, MAD 1
    assert z[-1] == pytest.approx(0.6745 * 97)
    assert z[2] == 0.0


def test_steady_seasonal_series_has_no_anomalies():
    assert stl_detector(seasonal_cpu()) == []


def test_injected_spikes_are_found_with_start_end_and_direction():
    s = seasonal_cpu()
    values = s.to_numpy().copy()
    values[1000:1003] += 30  # a 15-minute burst
    values[1500] -= 30  # a single dip
    found = stl_detector(series(values))
    assert [(a.started_at, a.ended_at, a.direction) for a in found] == [
        (s.index[1000], s.index[1002], "up"),
        (s.index[1500], s.index[1500], "down"),
    ]
    burst = found[0]
    assert burst.observed - burst.expected == pytest.approx(30, abs=6)
    assert burst.score > 10


def test_daily_peaks_and_a_trend_are_not_anomalies_for_stl_but_are_for_the_seed_rule():
    # quiet nights at 5 %, busy days at 60 %: a big but perfectly regular swing
    t = np.arange(24 * 10)
    rng = np.random.default_rng(5)
    values = 5 + 55 * ((t % 24 >= 8) & (t % 24 < 20)) + rng.normal(0, 0.5, len(t)) + 0.05 * t
    s = series(values, freq="h")
    assert stl_detector(s) == []
    assert len(baseline_rule(s)) >= 10


def test_sensitivity_is_configurable():
    s = seasonal_cpu()
    values = s.to_numpy().copy()
    values[1200] += 12  # 8 sigma of the noise
    found = stl_detector(series(values), sensitivity=5.0)
    assert [a.started_at for a in found] == [s.index[1200]]
    assert stl_detector(series(values), sensitivity=found[0].score + 0.01) == []


def test_stl_needs_two_days():
    with pytest.raises(InsufficientHistory):
        stl_detector(seasonal_cpu().iloc[:400])


def test_gaps_are_filled_for_the_fit_but_never_flagged():
    s = seasonal_cpu()
    holed = s.drop(s.index[700:760])
    assert stl_detector(holed) == []


def test_flags_less_than_three_hours_apart_are_one_incident():
    s = seasonal_cpu()
    values = s.to_numpy().copy()
    values[1000] += 30
    values[1024] += 30  # 2 hours later: same incident
    values[1500] += 30  # 40 hours later: another one
    found = stl_detector(series(values))
    assert [(a.started_at, a.ended_at) for a in found] == [
        (s.index[1000], s.index[1024]), (s.index[1500], s.index[1500])]


def test_at_most_two_percent_of_a_heavy_tailed_series_is_flagged():
    s = seasonal_cpu()
    values = s.to_numpy().copy()
    rng = np.random.default_rng(9)
    bursts = np.arange(300, len(values), 10)  # 172 bursts, 8.5 % of the 2,016 points, 10 samples apart
    values[bursts] += rng.uniform(15, 40, size=len(bursts))
    # without incident merging each flagged burst is its own anomaly
    found = stl_detector(series(values), incident_gap=pd.Timedelta(0))
    # the 98th percentile of 2,016 scores sits at rank 0.98 * 2015 = 1974.7: 41 scores lie above it
    assert len(found) == 41
    assert all(a.started_at == a.ended_at and a.direction == "up" for a in found)
    assert len(stl_detector(series(values), incident_gap=pd.Timedelta(0), max_fraction=1.0)) > 100


# --- stl_esd: seasonal-hybrid ESD ---


def test_generalized_esd_finds_exactly_the_planted_outliers():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, 500)
    x[[10, 200, 333]] = [9.0, -8.0, 7.5]
    flags = generalized_esd(x, max_fraction=0.02, alpha=0.05)
    assert np.flatnonzero(flags).tolist() == [10, 200, 333]


def test_generalized_esd_finds_nothing_in_gaussian_noise():
    x = np.random.default_rng(8).normal(0, 1, 2000)
    assert not generalized_esd(x, max_fraction=0.02, alpha=0.05).any()


def test_generalized_esd_rosner_example_count():
    # Rosner (1983) / NIST e-Handbook 1.3.5.17.3 data: 54 values, up to 10 outliers, alpha 0.05 -> 3
    # with the original mean/sd statistic; the hybrid median/MAD one, with a smaller spread, takes 4.64 too
    data = [-0.25, 0.68, 0.94, 1.15, 1.20, 1.26, 1.26, 1.34, 1.38, 1.43, 1.49, 1.49, 1.55, 1.56, 1.58, 1.65,
            1.69, 1.70, 1.76, 1.77, 1.81, 1.91, 1.94, 1.96, 1.99, 2.06, 2.09, 2.10, 2.14, 2.15, 2.23, 2.24,
            2.26, 2.35, 2.37, 2.40, 2.47, 2.54, 2.62, 2.64, 2.90, 2.92, 2.92, 2.93, 3.21, 3.26, 3.30, 3.59,
            3.68, 4.30, 4.64, 5.34, 5.42, 6.01]
    flags = generalized_esd(np.array(data), max_fraction=10 / 54, alpha=0.05, hybrid=False)
    assert sorted(np.array(data)[flags].tolist()) == [5.34, 5.42, 6.01]
    flags = generalized_esd(np.array(data), max_fraction=10 / 54, alpha=0.05)
    assert sorted(np.array(data)[flags].tolist()) == [4.64, 5.34, 5.42, 6.01]


def test_esd_detector_keeps_the_two_most_significant_incidents_in_time_order():
    s = seasonal_cpu()
    values = s.to_numpy().copy()
    values[600:636] += 25  # a 3-hour level shift on day 3
    values[1200] += 40  # a tall single spike on day 5
    values[1700] += 14  # a small spike on day 6: third most significant, dropped
    found = esd_detector(series(values))
    assert [(a.started_at, a.ended_at) for a in found] == [
        (s.index[600], s.index[635]), (s.index[1200], s.index[1200])]
    assert [a.direction for a in found] == ["up", "up"]
    assert len(esd_detector(series(values), max_incidents=3)) == 3


def test_esd_detector_flags_nothing_in_the_warm_up_day():
    s = seasonal_cpu()
    values = s.to_numpy().copy()
    values[100] += 40  # inside the first day
    assert esd_detector(series(values)) == []
    assert [a.started_at for a in esd_detector(series(values), warm_up=pd.Timedelta(0))] == [s.index[100]]


def test_esd_detector_on_a_steady_series_finds_nothing():
    assert esd_detector(seasonal_cpu()) == []
