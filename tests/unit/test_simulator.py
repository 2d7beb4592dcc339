"""Simulated users (recloop.simulator): fitted tastes, position bias, seeded drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recloop.simulator import ClickModel, Population

ITEMS = pd.DataFrame(
    {
        "item_id": ["1", "2", "3", "4"],
        "genres": ["Comedy", "Comedy", "Drama", "Drama|Horror"],
    }
)
RATINGS = pd.DataFrame(
    {
        "user_id": ["u", "u", "u", "v", "v", "v"],
        "item_id": ["1", "2", "3", "3", "4", "1"],
        "rating": [5.0, 4.0, 1.0, 5.0, 5.0, 2.0],
    }
)


@pytest.fixture
def population() -> Population:
    return Population.from_movielens(RATINGS, ITEMS)


def test_tastes_follow_what_each_user_rated_highly(population: Population) -> None:
    assert population.genres == ("Comedy", "Drama", "Horror")
    np.testing.assert_allclose(population.preferences.sum(axis=1), 1.0)
    u, v = list(population.user_ids).index("u"), list(population.user_ids).index("v")
    assert population.genres[int(np.argmax(population.preferences[u]))] == "Comedy"
    assert population.genres[int(np.argmax(population.preferences[v]))] == "Drama"
    np.testing.assert_allclose(population.item_genres[3], [0, 0.5, 0.5])
    comedy, drama = population.relevance(u, np.array([0])), population.relevance(u, np.array([2]))
    assert comedy[0] > drama[0]


def test_the_same_item_is_clicked_less_further_down(population: Population) -> None:
    u = list(population.user_ids).index("u")
    probabilities = population.click_probabilities(u, ["1", "1", "1", "unknown"])
    relevance = population.relevance(u, np.array([0]))[0]
    np.testing.assert_allclose(probabilities, [relevance, relevance / 2, relevance / 3, 0.0])


def test_sampled_clicks_match_the_click_model(population: Population) -> None:
    rng = np.random.default_rng(0)
    u = list(population.user_ids).index("v")
    shown = ["3", "4", "1", "2"]
    draws = 20_000
    counts = np.zeros(4)
    for _ in range(draws):
        counts[population.clicks(rng, u, shown)] += 1
    expected = population.click_probabilities(u, shown)
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts / draws - expected) < 4 * sigma)


def test_drift_moves_a_seeded_share_of_users_to_other_genres() -> None:
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in range(400)]
    ratings = pd.DataFrame(
        {
            "user_id": np.repeat(users, 3),
            "item_id": rng.choice(ITEMS["item_id"], 1200),
            "rating": rng.integers(1, 6, 1200).astype(float),
        }
    )
    before = Population.from_movielens(ratings, ITEMS, ClickModel(bias=-1.0))
    after = before.with_drift(share=0.5, seed=3)
    assert after.drifted_users.mean() == pytest.approx(0.5, abs=0.08)
    moved = after.drifted_users
    np.testing.assert_array_equal(after.preferences[~moved], before.preferences[~moved])
    changed = np.any(after.preferences[moved] != before.preferences[moved], axis=1)
    uniform = np.all(np.isclose(before.preferences[moved], 1 / 3), axis=1)
    assert np.all(changed | uniform)
    np.testing.assert_array_equal(before.with_drift(0.5, 3).preferences, after.preferences)
    with pytest.raises(ValueError, match="drift share"):
        before.with_drift(0.0, 3)


def test_the_ideal_list_is_an_upper_bound_on_ctr(population: Population) -> None:
    u = list(population.user_ids).index("u")
    ideal = population.ideal_ctr(u, k=2)
    worst = population.click_probabilities(u, ["3", "4"]).mean()
    assert ideal >= population.click_probabilities(u, ["1", "2"]).mean() - 1e-12 > worst


def test_consumed_items_are_never_clicked_again(population: Population) -> None:
    u = list(population.user_ids).index("u")
    probabilities = population.click_probabilities(u, ["1", "2"], consumed=frozenset({"1"}))
    assert probabilities[0] == 0.0 and probabilities[1] > 0.0
    rng = np.random.default_rng(0)
    assert all(0 not in population.clicks(rng, u, ["1", "2"], frozenset({"1"})) for _ in range(200))
