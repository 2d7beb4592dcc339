"""The drift sensor's decision (recloop.monitoring.champion_drift.drift_retrain), without Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recloop.monitoring.champion_drift import (
    NUMERIC_USER_FEATURES,
    CurrentDrift,
    drift_retrain,
    training_serving_skew,
)
from recloop.monitoring.drift_report import DriftReport, WindowStats

VERSION = "tt-abc"
DRIFT_START = "2024-03-02T00:00:00+00:00"


def report(reasons: tuple[str, ...], recent_first: str = DRIFT_START) -> DriftReport:
    return DriftReport(
        model_version=VERSION,
        enough_data=True,
        reference=WindowStats(1_000, 200, "2024-03-01T00:00:00+00:00", "2024-03-01T12:00:00+00:00"),
        recent=WindowStats(1_000, 100, recent_first, "2024-03-02T12:00:00+00:00"),
        ctr_relative_drop=0.5,
        ctr_p_value=1e-6,
        score_psi=0.01,
        click_genre_js=0.01,
        features=(),
        reasons=reasons,
        window_id=f"{VERSION}@0123",
    )


def impressions(*stamps: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model_version": VERSION,
            "event_type": "impression",
            "event_timestamp": pd.to_datetime(list(stamps), utc=True),
        }
    )


def test_no_drift_skips_and_remembers_the_window() -> None:
    decision = drift_retrain(CurrentDrift(report(()), impressions(), []), None, 1_000, 10)
    assert not decision.retrain and decision.since is None
    assert "CTR 0.2000 -> 0.1000" in decision.skip_reason
    assert json.loads(decision.cursor) == {"champion": VERSION, "window": f"{VERSION}@0123"}


def test_drift_waits_for_post_drift_impressions_counted_from_its_start() -> None:
    events = impressions("2024-03-01T23:00:00+00:00", "2024-03-02T01:00:00+00:00")
    decision = drift_retrain(CurrentDrift(report(("ctr fell",)), events, []), None, 1_000, 2)
    assert not decision.retrain
    assert decision.since == DRIFT_START
    assert "1 of 2 impressions" in decision.skip_reason
    assert json.loads(decision.cursor)["drift_since"] == DRIFT_START


def test_a_later_tick_of_the_same_episode_keeps_its_start_and_then_retrains() -> None:
    cursor = json.dumps({"champion": VERSION, "window": "old", "drift_since": DRIFT_START})
    later = report(("ctr fell",), recent_first="2024-03-05T00:00:00+00:00")
    events = impressions("2024-03-02T01:00:00+00:00", "2024-03-03T01:00:00+00:00")
    decision = drift_retrain(CurrentDrift(later, events, []), cursor, 1_000, 2)
    assert decision.retrain and decision.skip_reason is None
    assert decision.since == DRIFT_START and decision.reasons == "ctr fell"


def test_a_new_champion_starts_a_new_episode() -> None:
    cursor = json.dumps({"champion": "tt-older", "window": "w", "drift_since": "2020-01-01"})
    decision = drift_retrain(CurrentDrift(report(("ctr fell",)), impressions(), []), cursor, 1, 1)
    assert decision.since == DRIFT_START and not decision.retrain


def test_training_serving_skew_compares_features_and_skips_labels_only_training_sets(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    served = pd.DataFrame({name: rng.normal(5.0, 1.0, 300) for name in NUMERIC_USER_FEATURES})
    featured = tmp_path / "two_tower"
    featured.mkdir()
    trained = {name: rng.normal(0.0, 1.0, 300) for name in NUMERIC_USER_FEATURES}
    pd.DataFrame({**trained, "split": "train"}).to_parquet(featured / "examples.parquet")
    skew = training_serving_skew(str(featured), served)
    assert {d.feature for d in skew} == set(NUMERIC_USER_FEATURES)
    assert all(d.drifted for d in skew)  # five standard deviations apart
    labels_only = tmp_path / "ease"
    labels_only.mkdir()
    pd.DataFrame({"user_id": ["1"], "item_id": ["2"], "split": ["train"]}).to_parquet(
        labels_only / "examples.parquet"
    )
    assert training_serving_skew(str(labels_only), served) == []
    assert training_serving_skew(None, served) == []
