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


def per_user_scores(users: int, hit_rate: float, seed: int) -> np.ndarray:
    """NDCG@10 per user as a model with one relevant item each gets it: 1/log2(rank + 1)
    for a hit at a random rank, 0 for a miss."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(1, 11, size=users)
    return np.where(rng.random(users) < hit_rate, 1 / np.log2(ranks + 1), 0.0)


def test_a_candidate_that_ties_popularity_is_non_inferior_but_not_better() -> None:
    """A third of the users get other lists of the same quality; the rest the same hits
    (two models' scores per user are correlated: some users are easy for both)."""
    popularity = per_user_scores(800, 0.4, seed=1)
    candidate = np.where(np.arange(800) % 3 == 0, per_user_scores(800, 0.4, seed=2), popularity)
    tie = gates.lift_over_popularity(candidate, popularity, gates.GateConfig())
    assert tie.passed and -0.1 <= tie.value < 0.0
    assert "lift" in tie.detail and "800 test users" in tie.detail
    superiority = gates.GateConfig(min_lift_over_popularity=0.05)
    assert not gates.lift_over_popularity(candidate, popularity, superiority).passed


def test_a_clearly_worse_candidate_is_blocked_and_a_clearly_better_one_passes() -> None:
    popularity = per_user_scores(800, 0.4, seed=1)
    worse = gates.lift_over_popularity(per_user_scores(800, 0.25, seed=2), popularity, CONFIG)
    assert not worse.passed and worse.value < -0.2
    better = gates.lift_over_popularity(per_user_scores(800, 0.6, seed=2), popularity, CONFIG)
    assert better.passed and better.value > CONFIG.min_lift_over_popularity


def test_a_test_part_too_small_to_tell_cannot_pass_a_model_by_luck() -> None:
    """On 15 users the same tie has an interval too wide for the non-inferiority bound."""
    popularity = per_user_scores(15, 0.4, seed=3)
    candidate = popularity[np.random.default_rng(4).permutation(15)]
    result = gates.lift_over_popularity(candidate, popularity, gates.GateConfig())
    assert not result.passed and result.value < -0.1


def test_the_lift_bootstrap_is_seeded_and_pairs_users() -> None:
    popularity = per_user_scores(300, 0.4, seed=1)
    candidate = per_user_scores(300, 0.45, seed=2)
    first = gates.lift_over_popularity(candidate, popularity, CONFIG)
    assert first == gates.lift_over_popularity(candidate, popularity, CONFIG)
    # a candidate equal to popularity for every user has no spread at all
    same = gates.lift_over_popularity(popularity, popularity, CONFIG)
    assert same.value == 0.0
    with pytest.raises(ValueError, match="same test users"):
        gates.lift_over_popularity(candidate[:-1], popularity, CONFIG)


def test_any_hit_against_a_popularity_without_hits_is_a_lift() -> None:
    nothing = np.zeros(50)
    assert gates.lift_over_popularity(per_user_scores(50, 0.3, seed=1), nothing, CONFIG).passed
    assert not gates.lift_over_popularity(nothing, nothing, CONFIG).passed


def test_no_regression_within_tolerance_of_the_champion() -> None:
    champion = {"ndcg@10": 0.30}
    assert gates.no_regression({"ndcg@10": 0.286}, champion, CONFIG).passed
    assert not gates.no_regression({"ndcg@10": 0.284}, champion, CONFIG).passed
    first = gates.no_regression({"ndcg@10": 0.0}, None, CONFIG)
    assert (first.passed, first.skipped, first.detail) == (True, True, "skipped: no champion yet")


def test_coverage_is_judged_against_popularitys_on_the_same_users() -> None:
    ok = {"coverage": 0.05, "avg_popularity": 150.0}
    coverage, bias = gates.coverage_and_bias(ok, POPULARITY, CONFIG)
    assert coverage.passed and coverage.value == pytest.approx(2.5) and bias.value == 0.5
    narrow = {"coverage": 0.03, "avg_popularity": 360.0}
    coverage, bias = gates.coverage_and_bias(narrow, POPULARITY, CONFIG)
    assert not coverage.passed and not bias.passed
    assert "1.5x popularity's 2.0%" in coverage.detail
    # a small catalog: popularity's lists already span most of it
    small = {"coverage": 0.75, "ndcg@10": 0.6, "avg_popularity": 1.0}
    broad, _ = gates.coverage_and_bias({**small, "coverage": 0.8}, small, CONFIG)
    assert broad.passed and broad.value < CONFIG.min_coverage_ratio


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
    assert biased.passed and biased.skipped
    assert biased.detail.startswith("skipped: 90% of the test labels")
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
