"""Metrics against values worked out by hand (comments show the arithmetic)."""

import math

import numpy as np
import pytest

from recloop.evaluation.metrics import (
    EvaluationInputs,
    average_recommended_popularity,
    catalog_coverage,
    evaluate,
    evaluate_item_segments,
    evaluate_segments,
    exposure_gini,
    gini,
    hit_rate_at_k,
    intra_list_diversity,
    map_at_k,
    ndcg_at_k,
    novelty,
    recall_at_k,
    restrict_relevant,
)

# user 0 hits item 1 at rank 2 of 3 and has two relevant items; user 1 misses;
# user 2 has nothing relevant, so accuracy metrics skip it.
TOP_K = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
RELEVANT = [np.array([1, 3]), np.array([9]), np.array([], dtype=int)]


def test_recall_hit_rate() -> None:
    assert recall_at_k(TOP_K, RELEVANT) == pytest.approx((1 / 2 + 0) / 2)
    assert hit_rate_at_k(TOP_K, RELEVANT) == pytest.approx(0.5)


def test_ndcg() -> None:
    # user 0: DCG = 1/log2(3); IDCG (2 relevant) = 1 + 1/log2(3)
    user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(TOP_K, RELEVANT) == pytest.approx(user0 / 2)


def test_map() -> None:
    # user 0: one hit at rank 2 with precision 1/2, over min(2 relevant, K=3) = 2
    assert map_at_k(TOP_K, RELEVANT) == pytest.approx((0.5 / 2) / 2)


def test_perfect_lists_score_one() -> None:
    top_k = np.array([[4, 2], [1, 0]])
    relevant = [np.array([2, 4]), np.array([1, 0, 7])]
    for metric in (recall_at_k, ndcg_at_k, map_at_k, hit_rate_at_k):
        score = metric(top_k, relevant)
        # user 1 has 3 relevant items but K = 2: recall is 2/3, the rest are 1
        assert score == pytest.approx((1 + 2 / 3) / 2 if metric is recall_at_k else 1.0)


def test_mismatched_users_are_an_error() -> None:
    with pytest.raises(ValueError, match="top_k has 3 users but relevant has 2"):
        recall_at_k(TOP_K, RELEVANT[:2])


def test_coverage_gini_novelty_popularity() -> None:
    assert catalog_coverage(TOP_K, n_items=10) == pytest.approx(0.9)
    assert gini(np.array([1, 1, 1, 1])) == 0.0
    # sorted [0, 0, 0, 4]: sum((2i - n - 1) x_i) / (n sum x) = (3 * 4) / (4 * 4)
    assert gini(np.array([4, 0, 0, 0])) == pytest.approx(0.75)
    assert exposure_gini(np.array([[0, 1], [0, 1]]), n_items=4) == pytest.approx(
        gini(np.array([2, 2, 0, 0]))
    )
    # p = (3+1)/(3+1) = 1 -> 0 bits; p = (0+1)/4 -> 2 bits
    assert novelty(np.array([[0, 1]]), np.array([3, 0]), n_users=3) == pytest.approx(1.0)
    # lists [10, 0] and [4, 0] -> means 5 and 2
    assert average_recommended_popularity(
        np.array([[0, 1], [2, 1]]), np.array([10, 0, 4])
    ) == pytest.approx(3.5)


def test_intra_list_diversity() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    # pairs (0,1) distance 1, (0,2) distance 0 (same direction), (1,2) distance 1
    assert intra_list_diversity(np.array([[0, 1, 2]]), vectors) == pytest.approx(2 / 3)


def test_evaluate_and_segments() -> None:
    inputs = EvaluationInputs(n_items=10, n_users=3, item_popularity=np.arange(10.0))
    scores = evaluate(TOP_K, RELEVANT, inputs)
    assert set(scores) == {
        "recall@3",
        "ndcg@3",
        "map@3",
        "hit_rate@3",
        "coverage",
        "novelty",
        "avg_popularity",
        "exposure_gini",
    }
    segments = evaluate_segments(TOP_K, RELEVANT, inputs, {"first": np.array([True, False, False])})
    assert segments["first"]["recall@3"] == pytest.approx(0.5)
    assert segments["all"] == scores
    # item segment: only item 3 counts as relevant -> user 0 keeps [3], which is not in its list
    cold = restrict_relevant(RELEVANT, allowed=np.array([3]))
    assert [r.tolist() for r in cold] == [[3], [], []]
    assert recall_at_k(TOP_K, cold) == 0.0


def test_item_segments_restrict_relevance_to_the_segment() -> None:
    # popularity: items 0 and 1 are the head (top 20 % of 10 items), 9 is cold
    popularity = np.array([9, 8, 3, 3, 2, 2, 1, 1, 1, 0], dtype=float)
    inputs = EvaluationInputs(n_items=10, n_users=5, item_popularity=popularity)
    top_k = np.array([[0, 9], [2, 1]])
    relevant = [np.array([0, 9]), np.array([1])]
    segments = evaluate_item_segments(top_k, relevant, inputs)
    # cold: only user 0 has a cold relevant item (9), and it is in their list
    assert segments["cold_items"]["recall@2"] == 1.0
    # warm: user 0 {0} found, user 1 {1} found
    assert segments["warm_items"]["recall@2"] == 1.0
    # long tail (items 2..9): only user 0 has one (9), found
    assert segments["long_tail_items"]["hit_rate@2"] == 1.0
    no_cold = evaluate_item_segments(top_k, [np.array([0]), np.array([1])], inputs)
    assert "cold_items" not in no_cold and "long_tail_items" not in no_cold
