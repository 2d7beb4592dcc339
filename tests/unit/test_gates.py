"""Promotion gates on hand-made metrics, and sanity on a sabotaged (NaN) model."""

import numpy as np
import pandas as pd
import pytest
import torch

from recloop.evaluation import gates
from recloop.models.model_artifact import weight_arrays
from recloop.training.candidate import champion_served_share
from tests.model_fixtures import tiny_bundle

CONFIG = gates.GateConfig(min_lift_over_popularity=0.1, champion_tolerance=0.05)
POPULARITY = {"ndcg@10": 0.20, "coverage": 0.02, "avg_popularity": 300.0}


def test_beats_popularity_needs_the_margin() -> None:
    assert gates.beats_popularity({"ndcg@10": 0.221}, POPULARITY, CONFIG).passed
    failed = gates.beats_popularity({"ndcg@10": 0.219}, POPULARITY, CONFIG)
    assert not failed.passed
    assert abs(failed.threshold - 0.22) < 1e-12


def test_no_regression_within_tolerance_of_the_champion() -> None:
    champion = {"ndcg@10": 0.30}
    assert gates.no_regression({"ndcg@10": 0.286}, champion, CONFIG).passed
    assert not gates.no_regression({"ndcg@10": 0.284}, champion, CONFIG).passed
    assert gates.no_regression({"ndcg@10": 0.0}, None, CONFIG).detail == "no champion yet"


def test_coverage_and_popularity_bias_bounds() -> None:
    ok = {"coverage": 0.2, "avg_popularity": 150.0}
    coverage, bias = gates.coverage_and_bias(ok, POPULARITY, CONFIG)
    assert coverage.passed and bias.passed and bias.value == 0.5
    narrow = {"coverage": 0.01, "avg_popularity": 360.0}
    coverage, bias = gates.coverage_and_bias(narrow, POPULARITY, CONFIG)
    assert not coverage.passed and not bias.passed


def test_sanity_catches_nan_weights_constant_scores_and_a_short_index() -> None:
    bundle = tiny_bundle()
    scores = np.random.default_rng(0).normal(size=(4, 6))
    healthy = gates.sanity(weight_arrays(bundle.model), scores, 6, 6, CONFIG)
    assert gates.verdict(healthy)
    with torch.no_grad():
        bundle.model.item_tower.mlp[0].weight[0, 0] = float("nan")
    weights = weight_arrays(bundle.model)
    results = {r.name: r for r in gates.sanity(weights, np.ones((4, 6)), 5, 6, CONFIG)}
    assert not results["finite_weights"].passed and results["finite_weights"].value == 1
    assert not results["scores_not_constant"].passed
    assert not results["index_covers_catalog"].passed
    assert not gates.verdict(list(results.values()))


def test_no_results_is_not_a_pass() -> None:
    assert not gates.verdict([])


def test_the_champion_comparison_is_skipped_on_its_own_logged_clicks() -> None:
    """Labels that answer the champion's lists favour the champion: above the configured
    share the comparison says so and does not block; below it, it blocks as usual."""
    config = gates.GateConfig()
    candidate, champion = {"ndcg@10": 0.5}, {"ndcg@10": 0.7}
    biased = gates.no_regression(candidate, champion, config, champion_served_share=0.9)
    assert biased.passed and biased.detail.startswith("skipped: 90% of the test labels")
    fair = gates.no_regression(candidate, champion, config, champion_served_share=0.3)
    assert not fair.passed and fair.threshold == pytest.approx(0.7 * 0.98)


def test_champion_served_share_counts_test_labels_of_that_version() -> None:
    examples = pd.DataFrame(
        {
            "split": ["train", "test", "test", "test", "test"],
            "model_version": ["tt-a", "tt-a", "tt-a", None, "tt-b"],
        }
    )
    examples["model_version"] = examples["model_version"].astype("string")
    assert champion_served_share(examples, "tt-a") == 0.5
    assert champion_served_share(examples, None) == 0.0
