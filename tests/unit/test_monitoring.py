"""Drift of the champion's online behaviour (recloop.monitoring.drift_report), on hand-built logs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recloop.monitoring.drift_report import (
    MonitoringConfig,
    ctr_drop_test,
    ctr_series,
    drift_report,
    genre_shares,
    served_windows,
)

GENRES = {"a": "Comedy", "b": "Comedy", "c": "Drama", "d": "Drama|Horror"}


def served_log(
    requests: int,
    click_rate: list[float],
    clicked_items: list[str],
    seed: int = 0,
    version: str = "tt-1",
    k: int = 4,
) -> pd.DataFrame:
    """`requests` responses of k items; request r clicks its first item with
    probability click_rate[r * len // requests], on an item from clicked_items."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-11-22", tz="UTC")
    rows = []
    for r in range(requests):
        at = start + pd.Timedelta(seconds=r)
        request_id = f"r{r}"
        for position, item in enumerate("abcd"[:k]):
            rows.append(
                (f"{request_id}:{position}", "u1", item, "impression", rng.normal(), at, request_id)
            )
        phase = r * len(click_rate) // requests
        if rng.random() < click_rate[phase]:
            item = clicked_items[phase]
            rows.append((f"{request_id}:c", "u1", item, "click", None, at, request_id))
    frame = pd.DataFrame(
        rows,
        columns=[
            "event_id",
            "user_id",
            "item_id",
            "event_type",
            "value",
            "event_timestamp",
            "request_id",
        ],
    )
    frame["model_version"] = version
    return frame


def test_ctr_drop_test_matches_a_hand_computed_z_test() -> None:
    drop, p = ctr_drop_test(100, 1000, 50, 1000)
    assert drop == pytest.approx(0.5)
    # pooled 0.075; se = sqrt(0.075 * 0.925 * 2 / 1000) = 0.011779; z = 4.2448
    assert p == pytest.approx(1.0940e-5, rel=1e-3)
    assert ctr_drop_test(50, 1000, 100, 1000)[1] > 0.99  # a rise is not a drop


def test_windows_hold_whole_requests_from_the_start_and_the_end() -> None:
    events = served_log(100, [0.5], ["a"])
    reference, recent = served_windows(events, "tt-1", window=80)
    assert set(reference["request_id"]) == {f"r{r}" for r in range(20)}
    assert set(recent["request_id"]) == {f"r{r}" for r in range(80, 100)}
    assert served_windows(events, "tt-1", window=201) is None
    assert served_windows(events, "tt-other", window=10) is None


def test_same_behaviour_is_not_drift_and_the_verdict_is_reproducible() -> None:
    events = served_log(4000, [0.3], ["a"], seed=1)
    config = MonitoringConfig(window=4000)
    report = drift_report(events, "tt-1", GENRES, config)
    assert report.enough_data and not report.drifted, report.reasons
    again = drift_report(events.sample(frac=1, random_state=3), "tt-1", GENRES, config)
    assert again.window_id == report.window_id and again.reasons == report.reasons


def test_a_ctr_drop_and_a_new_click_genre_mix_are_drift_with_reasons() -> None:
    events = served_log(4000, [0.3, 0.15], ["a", "c"], seed=2)
    report = drift_report(events, "tt-1", GENRES, MonitoringConfig(window=4000))
    assert report.drifted
    assert report.reference.ctr == pytest.approx(0.3 / 4, abs=0.01)  # 4 impressions a request
    assert report.recent.ctr == pytest.approx(0.15 / 4, abs=0.01)
    assert any(r.startswith("CTR fell") for r in report.reasons)
    assert any(r.startswith("clicked-genre mix") for r in report.reasons)
    assert report.click_genre_js > 0.5  # all Comedy -> all Drama


def test_too_few_impressions_give_no_verdict() -> None:
    events = served_log(100, [0.3, 0.0], ["a", "a"])
    report = drift_report(events, "tt-1", GENRES, MonitoringConfig(window=1000))
    assert not report.enough_data and not report.drifted and math.isnan(report.score_psi)


def test_user_feature_drift_is_reported_per_feature() -> None:
    rng = np.random.default_rng(0)
    reference = {"f": rng.normal(0, 1, 2000), "g": rng.normal(0, 1, 2000)}
    current = {"f": rng.normal(0, 1, 2000), "g": rng.normal(3, 1, 2000)}
    events = served_log(100, [0.3], ["a"])
    report = drift_report(events, "tt-1", GENRES, MonitoringConfig(window=1000), reference, current)
    assert [f.feature for f in report.features if f.drifted] == ["g"]
    assert report.reasons and report.reasons[0].startswith("user feature g:")


def test_genre_shares_split_multi_genre_items() -> None:
    shares = genre_shares(pd.Series(["a", "d", "zzz"]), GENRES)
    assert shares == pytest.approx(
        {"Comedy": 1 / 3, "Drama": 1 / 6, "Horror": 1 / 6, "(none)": 1 / 3}
    )


def test_ctr_series_counts_clicks_per_block_of_impressions() -> None:
    events = served_log(10, [1.0, 0.0], ["a", "a"], k=2)
    blocks = ctr_series(events, bucket=10)
    # 5 requests x 2 impressions with one click each, then 5 without clicks.
    assert blocks["ctr"].tolist() == [0.5, 0.0]
    assert blocks["impressions"].tolist() == [10, 10]
