"""Serving policies: propensities against exact enumeration and sampling, configs, seeding."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import chi2

from recloop.inference.policies import (
    EpsilonGreedy,
    Greedy,
    Policy,
    Softmax,
    policy_from_config,
    request_rng,
)

SCORES = np.array([2.0, 1.5, 1.4, 0.3, 0.0, -1.0])
ITEM_IDS = np.array([f"item-{i}" for i in range(len(SCORES))])


def plackett_luce_by_enumeration(logits: np.ndarray, k: int) -> np.ndarray:
    """(n, k) P(i at p), summing the probability of every ordered k-prefix."""
    weights = np.exp(logits - logits.max())
    marginals = np.zeros((len(logits), k))
    for prefix in itertools.permutations(range(len(logits)), k):
        remaining = np.ones(len(logits), dtype=bool)
        probability = 1.0
        for item in prefix:
            probability *= weights[item] / weights[remaining].sum()
            remaining[item] = False
        marginals[list(prefix), np.arange(k)] += probability
    return marginals


def sample_frequencies(
    policy: Policy, scores: np.ndarray, k: int, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical P(i at p) over `draws` rankings, and the largest |logged - computed| propensity."""
    rng = np.random.default_rng(seed)
    computed = policy.position_probabilities(scores, k)
    counts = np.zeros_like(computed)
    worst_logged_gap = 0.0
    for _ in range(draws):
        ranking = policy.rank(ITEM_IDS[: len(scores)], scores, k, rng)
        positions = np.arange(len(ranking.indices))
        counts[ranking.indices, positions] += 1
        gap = np.abs(ranking.propensities - computed[ranking.indices, positions]).max()
        worst_logged_gap = max(worst_logged_gap, gap)
    return counts / draws, worst_logged_gap


@pytest.mark.parametrize("spread", [0.1, 1.0, 4.0, 30.0])
@pytest.mark.parametrize(("n", "k"), [(7, 4), (8, 3), (6, 6), (5, 1)])
def test_softmax_marginals_match_exact_enumeration(spread: float, n: int, k: int) -> None:
    rng = np.random.default_rng(int(spread * 10) + n)
    scores = rng.normal(size=n) * spread
    for temperature in (0.5, 2.0):
        exact = plackett_luce_by_enumeration(scores / temperature, k)
        computed = Softmax(temperature, top_n=n).position_probabilities(scores, k)
        assert np.abs(computed - exact).max() < 2e-5
        large = exact >= 0.01
        assert (np.abs(computed - exact)[large] / exact[large]).max() < 1e-3


def test_softmax_marginals_with_tied_scores_are_symmetric() -> None:
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    computed = Softmax(1.0, top_n=4).position_probabilities(scores, 2)
    np.testing.assert_allclose(computed, plackett_luce_by_enumeration(scores, 2), atol=2e-5)
    np.testing.assert_allclose(computed[0], computed[1], atol=1e-12)


def test_softmax_marginals_of_fifty_candidates_match_vectorized_sampling() -> None:
    rng = np.random.default_rng(11)
    scores = rng.normal(size=50)
    policy = Softmax(0.5, top_n=50)
    computed = policy.position_probabilities(scores, 10)
    draws = 40_000
    perturbed = scores / 0.5 + rng.gumbel(size=(draws, 50))
    top = np.argsort(-perturbed, axis=1)[:, :10]
    frequency = np.zeros_like(computed)
    np.add.at(frequency, (top, np.broadcast_to(np.arange(10), top.shape)), 1.0 / draws)
    standard_error = np.sqrt(computed * (1 - computed) / draws)
    assert (np.abs(frequency - computed) <= 5 * standard_error + 1e-4).all()


@pytest.mark.parametrize(
    "policy", [Softmax(0.7, top_n=6), Softmax(0.7, top_n=4), EpsilonGreedy(0.3, top_n=5)]
)
def test_sampled_positions_match_position_probabilities_and_logged_propensities(
    policy: Policy,
) -> None:
    draws = 6_000
    frequency, worst_logged_gap = sample_frequencies(policy, SCORES, 3, draws, seed=5)
    computed = policy.position_probabilities(SCORES, 3)
    for position in range(3):
        # the items at one position are a multinomial draw: Pearson's chi-square test
        possible = computed[:, position] > 0
        expected = draws * computed[possible, position]
        observed = draws * frequency[possible, position]
        statistic = ((observed - expected) ** 2 / expected).sum()
        assert chi2.sf(statistic, df=possible.sum() - 1) > 1e-4
    assert (frequency[computed == 0] == 0).all()
    # the propensity logged with each list is the same marginal (rows differ: ~1e-9)
    assert worst_logged_gap < 1e-6


@pytest.mark.parametrize(
    "policy",
    [Greedy(), Softmax(0.5, top_n=20), Softmax(0.01, top_n=50), EpsilonGreedy(0.2, top_n=20)],
)
def test_position_probabilities_fill_each_position_once(policy: Policy) -> None:
    scores = np.random.default_rng(3).normal(size=40)
    probabilities = policy.position_probabilities(scores, 10)
    assert probabilities.shape == (40, 10)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert (probabilities.sum(axis=1) <= 1.0 + 1e-5).all()
    assert (probabilities >= 0).all()


def test_softmax_never_shows_what_is_outside_top_n() -> None:
    policy = Softmax(5.0, top_n=3)
    probabilities = policy.position_probabilities(SCORES, 2)
    assert (probabilities[3:] == 0).all()
    rng = np.random.default_rng(0)
    shown = {int(i) for _ in range(200) for i in policy.rank(ITEM_IDS, SCORES, 2, rng).indices}
    assert shown == {0, 1, 2}


def test_softmax_at_low_temperature_is_greedy() -> None:
    greedy = Greedy().rank(ITEM_IDS, SCORES, 4, np.random.default_rng(0))
    policy = Softmax(1e-3, top_n=6)
    for seed in range(20):
        ranking = policy.rank(ITEM_IDS, SCORES, 4, np.random.default_rng(seed))
        np.testing.assert_array_equal(ranking.item_ids, greedy.item_ids)
        np.testing.assert_allclose(ranking.propensities, 1.0, atol=1e-6)
    np.testing.assert_allclose(
        policy.position_probabilities(SCORES, 4),
        Greedy().position_probabilities(SCORES, 4),
        atol=1e-6,
    )


def test_greedy_ranks_by_score_with_certainty() -> None:
    ranking = Greedy().rank(ITEM_IDS, SCORES[::-1], 3, np.random.default_rng(0))
    np.testing.assert_array_equal(ranking.item_ids, ["item-5", "item-4", "item-3"])
    np.testing.assert_array_equal(ranking.scores, [2.0, 1.5, 1.4])
    np.testing.assert_array_equal(ranking.propensities, [1.0, 1.0, 1.0])


def test_epsilon_greedy_propensities_are_the_closed_form() -> None:
    policy = EpsilonGreedy(0.2, top_n=5)  # pool of 5: explore mass 0.2 / 5 = 0.04 everywhere
    expected = np.zeros((6, 3))
    expected[:5] = 0.04
    expected[[0, 1, 2], [0, 1, 2]] += 0.8
    np.testing.assert_allclose(policy.position_probabilities(SCORES, 3), expected, atol=1e-15)
    rng = np.random.default_rng(1)
    for _ in range(200):
        ranking = policy.rank(ITEM_IDS, SCORES, 3, rng)
        on_greedy = ranking.indices == np.arange(3)
        np.testing.assert_allclose(ranking.propensities, np.where(on_greedy, 0.84, 0.04))


def test_lists_are_shorter_only_when_there_are_fewer_candidates() -> None:
    rng = np.random.default_rng(0)
    for policy in (Greedy(), Softmax(1.0, top_n=10), EpsilonGreedy(0.5, top_n=10)):
        ranking = policy.rank(ITEM_IDS[:2], SCORES[:2], 5, rng)
        assert len(ranking.item_ids) == len(ranking.propensities) == 2
        assert policy.position_probabilities(SCORES[:2], 5).shape == (2, 2)


def test_a_list_longer_than_top_n_is_refused() -> None:
    with pytest.raises(ValueError, match="k=4 exceeds top_n=3"):
        Softmax(1.0, top_n=3).rank(ITEM_IDS, SCORES, 4, np.random.default_rng(0))


def test_mismatched_or_non_finite_candidates_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="item_ids has shape"):
        Softmax(1.0).rank(ITEM_IDS[:3], SCORES, 2, rng)
    with pytest.raises(ValueError, match="finite"):
        Greedy().rank(ITEM_IDS, np.array([1.0, np.nan, 0, 0, 0, 0]), 2, rng)


def test_same_request_id_gives_the_same_list_and_ids_differ() -> None:
    scores = np.random.default_rng(4).normal(size=50)
    items = np.arange(50)
    policy = Softmax(1.0, top_n=50)

    def served(request_id: str) -> np.ndarray:
        return policy.rank(items, scores, 10, request_rng(request_id)).item_ids

    np.testing.assert_array_equal(served("req-1"), served("req-1"))
    distinct = {tuple(served(f"req-{i}")) for i in range(20)}
    assert len(distinct) == 20


def test_request_rng_is_the_same_in_another_process() -> None:
    code = "from recloop.inference.policies import request_rng; print(request_rng('req-7').integers(1 << 62))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert int(other.stdout) == request_rng("req-7").integers(1 << 62)


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "greedy"},
        {"kind": "softmax", "temperature": 0.5, "top_n": 50},
        {"kind": "softmax", "temperature": 2},
        {"kind": "epsilon_greedy", "epsilon": 0.1, "top_n": 20},
    ],
)
def test_config_round_trip(config: dict[str, object]) -> None:
    policy = policy_from_config(config)
    assert policy_from_config(policy.to_config()) == policy
    assert policy.to_config().items() >= config.items()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"temperature": 0.5}, "'kind'"),
        ({"kind": "thompson"}, "'kind'"),
        ({"kind": ["softmax"]}, "'kind'"),
        ({"kind": "softmax"}, "'temperature'"),
        ({"kind": "softmax", "temperature": 0}, "'temperature'"),
        ({"kind": "softmax", "temperature": -1.0}, "'temperature'"),
        ({"kind": "softmax", "temperature": float("nan")}, "'temperature'"),
        ({"kind": "softmax", "temperature": "0.5"}, "'temperature'"),
        ({"kind": "softmax", "temperature": 0.5, "temprature": 1}, "'temprature'"),
        ({"kind": "softmax", "temperature": 0.5, "top_n": 0}, "'top_n'"),
        ({"kind": "softmax", "temperature": 0.5, "top_n": 2.5}, "'top_n'"),
        ({"kind": "softmax", "temperature": 0.5, "top_n": True}, "'top_n'"),
        ({"kind": "epsilon_greedy"}, "'epsilon'"),
        ({"kind": "epsilon_greedy", "epsilon": 1.5}, "'epsilon'"),
        ({"kind": "greedy", "epsilon": 0.1}, "'epsilon'"),
    ],
)
def test_config_errors_name_the_field(config: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        policy_from_config(config)
