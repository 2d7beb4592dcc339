"""Drift statistics on hand-computed cases and on samples with a known shift."""

import math

import numpy as np
import pytest

from recloop.monitoring.drift import (
    DriftThresholds,
    feature_drift,
    jensen_shannon,
    psi,
    wasserstein,
)


def test_psi_matches_a_hand_computed_two_bin_case() -> None:
    reference = np.arange(100.0)  # median edge at 49.5: shares 0.5 / 0.5
    current = np.concatenate([np.full(75, 10.0), np.full(25, 90.0)])  # 0.75 / 0.25
    expected = 0.25 * math.log(0.75 / 0.5) + (-0.25) * math.log(0.25 / 0.5)
    assert psi(reference, current, bins=2) == pytest.approx(expected, rel=1e-3)


def test_identical_windows_show_no_drift() -> None:
    values = np.random.default_rng(0).normal(size=5_000)
    assert psi(values, values) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon(values, values) == pytest.approx(0.0, abs=1e-12)


def test_js_when_all_mass_moves_past_the_reference() -> None:
    # ten reference deciles of 0.1; the current window lands entirely in the open top bin,
    # so the mixture is 0.05 in nine bins and 0.55 in the last
    values = np.random.default_rng(0).normal(size=5_000)
    expected = 0.5 * (
        9 * 0.1 * math.log2(0.1 / 0.05) + 0.1 * math.log2(0.1 / 0.55)
    ) + 0.5 * math.log2(1 / 0.55)
    assert jensen_shannon(values, values + 100) == pytest.approx(expected, abs=0.01)


def test_wasserstein_is_the_shift_in_feature_units() -> None:
    values = np.random.default_rng(1).normal(size=2_000)
    assert wasserstein(values, values + 2.0) == pytest.approx(2.0, rel=1e-9)


def test_same_distribution_samples_stay_below_the_threshold_across_seeds() -> None:
    thresholds = DriftThresholds()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        assert psi(rng.normal(size=5_000), rng.normal(size=5_000)) < 0.1 < thresholds.psi


def test_feature_report_flags_only_what_moved_and_says_why() -> None:
    rng = np.random.default_rng(2)
    reference = {"steady": rng.normal(size=3_000), "shifted": rng.normal(size=3_000)}
    going_missing = rng.normal(size=3_000)
    going_missing[:1_000] = np.nan
    current = {
        "steady": rng.normal(size=3_000),
        "shifted": rng.normal(loc=1.0, size=3_000),
        "going_missing": going_missing,
    }
    reference["going_missing"] = rng.normal(size=3_000)
    report = {row.feature: row for row in feature_drift(reference, current)}
    assert not report["steady"].drifted and report["steady"].reasons == ()
    assert report["shifted"].drifted and any("PSI" in r for r in report["shifted"].reasons)
    assert report["going_missing"].drifted
    assert report["going_missing"].reasons == ("missing share 0% -> 33%",)


def test_a_feature_without_values_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'empty'"):
        feature_drift({"empty": [np.nan]}, {"empty": [1.0]})
