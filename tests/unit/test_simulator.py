"""Simulated users (recloop.simulator): both scenarios, the factorisation behind the
grounded one, position bias, consumption and seeded drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recloop.simulator import (
    SCENARIOS,
    GenreTastes,
    GroundedTastes,
    Population,
    RatingFactors,
    fit_population,
)

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
TOY_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance")


def movielens_like(
    seed: int = 7, n_users: int = 120, n_items: int = 80
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Catalog, observed ratings and held-back ratings drawn from users with genre tastes and
    films of varying quality and popularity: 1-5 stars; a user rates about 40 % of the films,
    more likely the popular ones and the ones of their genres."""
    rng = np.random.default_rng(seed)
    item_genres = np.zeros((n_items, len(TOY_GENRES)))
    names = []
    for i in range(n_items):
        picked = rng.choice(len(TOY_GENRES), size=rng.integers(1, 3), replace=False)
        item_genres[i, picked] = 1.0 / len(picked)
        names.append("|".join(TOY_GENRES[j] for j in sorted(picked)))
    tastes = rng.dirichlet(np.full(len(TOY_GENRES), 0.3), size=n_users)
    quality = rng.normal(0.0, 0.6, n_items)
    liking = tastes @ item_genres.T
    stars = 3.0 + quality + 4.0 * (liking - liking.mean()) + rng.normal(0.0, 0.5, liking.shape)
    stars = np.clip(np.rint(stars), 1, 5)
    popularity = rng.normal(0.0, 1.5, n_items)
    chosen = 1.0 / (1.0 + np.exp(0.4 - popularity - 20.0 * (liking - liking.mean())))
    users, items = np.nonzero(rng.random(stars.shape) < chosen)
    ratings = pd.DataFrame(
        {
            "user_id": [f"u{u:03d}" for u in users],
            "item_id": [f"i{i:03d}" for i in items],
            "rating": stars[users, items],
        }
    )
    held = rng.random(len(ratings)) < 0.15
    catalog = pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(n_items)], "genres": names})
    return (
        catalog,
        ratings.loc[~held].reset_index(drop=True),
        ratings.loc[held].reset_index(drop=True),
    )


CATALOG, OBSERVED, HELD_BACK = movielens_like()


@pytest.fixture(scope="module")
def grounded() -> Population:
    return Population.grounded(OBSERVED, CATALOG, seed=0)


@pytest.fixture
def population() -> Population:
    return Population.genre_taste(RATINGS, ITEMS)


def _rows(population: Population, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return (
        pd.Index(population.user_ids).get_indexer(frame["user_id"]),
        pd.Index(population.item_ids).get_indexer(frame["item_id"]),
    )


def _pair_relevance(population: Population, frame: pd.DataFrame) -> np.ndarray:
    """Relevance of each (user_id, item_id) row of `frame`."""
    users, items = _rows(population, frame)
    return np.array(
        [population.relevance(u, np.array([i]))[0] for u, i in zip(users, items, strict=True)]
    )


def test_the_factorisation_reproduces_held_in_ratings_better_than_the_mean(grounded) -> None:
    users, items = _rows(grounded, OBSERVED)
    stars = OBSERVED["rating"].to_numpy()
    predicted = grounded.factors.predict(users, items)
    rmse = np.sqrt(np.mean((predicted - stars) ** 2))
    baseline = np.sqrt(np.mean((stars.mean() - stars) ** 2))
    assert rmse < 0.8 * baseline, (rmse, baseline)


def test_a_user_likes_what_they_rated_5_more_than_what_they_rated_1(grounded) -> None:
    rated = OBSERVED.assign(relevance=_pair_relevance(grounded, OBSERVED))
    by_user = (
        rated.loc[rated["rating"].isin([1.0, 5.0])]
        .pivot_table(index="user_id", columns="rating", values="relevance", aggfunc="mean")
        .dropna()
    )
    assert len(by_user) > 20
    assert (by_user[5.0] > by_user[1.0]).mean() > 0.95


def test_unseen_films_are_liked_as_the_held_back_ratings_say(grounded) -> None:
    """The point of the grounded scenario: the factors place films a user never rated."""
    relevance = _pair_relevance(grounded, HELD_BACK)
    stars = HELD_BACK["rating"].to_numpy()
    means = [relevance[stars == s].mean() for s in (1.0, 3.0, 5.0)]
    assert means[0] < means[1] < means[2], means
    pairs = zip(*_rows(grounded, HELD_BACK), strict=True)
    satisfaction = np.array([grounded.z_rating(u, np.array([i]))[0] for u, i in pairs])
    assert np.corrcoef(satisfaction, stars)[0, 1] > 0.5


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), from ranks (no ties in continuous scores)."""
    ranks = np.argsort(np.argsort(np.concatenate([positive, negative]))) + 1
    n = len(positive)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(negative)))


def test_the_choice_factorisation_finds_the_films_a_user_rates(grounded) -> None:
    """Which films a user rates is personal: the choice term ranks the films a user rated
    but the population never saw (held back) above the films they never rated, and does
    better than the films' popularity alone."""
    shape = (len(grounded.user_ids), len(grounded.item_ids))
    held, never = np.zeros(shape, dtype=bool), np.ones(shape, dtype=bool)
    held[_rows(grounded, HELD_BACK)] = True
    never[_rows(grounded, HELD_BACK)] = never[_rows(grounded, OBSERVED)] = False
    every_item = np.arange(shape[1])
    z = np.stack([grounded.z_choice(u, every_item) for u in range(shape[0])])
    popularity = np.broadcast_to(grounded.choice_factors.item_bias, shape)
    auc = _auc(z[held], z[never])
    assert auc > 0.8
    assert auc > _auc(popularity[held], popularity[never]) + 0.1


def test_the_logit_is_the_bias_plus_the_weighted_standardised_terms(grounded) -> None:
    every_item, users = np.arange(len(grounded.item_ids)), range(len(grounded.user_ids))
    z_choice = np.stack([grounded.z_choice(u, every_item) for u in users])
    z_rating = np.stack([grounded.z_rating(u, every_item) for u in users])
    for z in (z_choice, z_rating):  # standardised over all pairs
        assert z.mean() == pytest.approx(0.0, abs=1e-9)
        assert z.std() == pytest.approx(1.0, rel=1e-9)
    tastes = GroundedTastes()
    logits = np.stack([grounded.logits(u, every_item) for u in users])
    expected = tastes.bias + tastes.choice_weight * z_choice + tastes.rating_weight * z_rating
    np.testing.assert_allclose(logits, expected, rtol=1e-12)
    assert grounded.taste_std == pytest.approx(np.std(logits - tastes.bias), rel=1e-9)
    # other weights, same seed: the same factorisations, weighted as asked
    rating_only = GroundedTastes(bias=-1.0, choice_weight=0.0, rating_weight=2.0)
    other = Population.grounded(OBSERVED, CATALOG, rating_only, seed=0)
    logits = np.stack([other.logits(u, every_item) for u in users])
    np.testing.assert_allclose(logits, -1.0 + 2.0 * z_rating, rtol=1e-12)
    assert other.taste_std == pytest.approx(2.0, rel=1e-9)


def test_the_factorisation_is_seeded() -> None:
    users, items = _rows(Population.genre_taste(OBSERVED, CATALOG), OBSERVED)
    stars = OBSERVED["rating"].to_numpy()
    shape = (users.max() + 1, len(CATALOG))
    first, again = (RatingFactors.fit(users, items, stars, shape, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first.user_factors, again.user_factors)
    np.testing.assert_array_equal(first.item_bias, again.item_bias)
    other = RatingFactors.fit(users, items, stars, shape, seed=4)
    assert not np.array_equal(first.user_factors, other.user_factors)
    # a different start reaches nearly the same predictions
    np.testing.assert_allclose(first.predict(users, items), other.predict(users, items), atol=0.05)


def test_the_grounded_population_is_seeded(grounded) -> None:
    other = Population.grounded(OBSERVED, CATALOG, seed=1)
    assert not np.array_equal(
        grounded.choice_factors.user_factors, other.choice_factors.user_factors
    )
    every_item = np.arange(len(grounded.item_ids))
    for user in range(0, len(grounded.user_ids), 10):  # a different start, nearly the same tastes
        np.testing.assert_allclose(
            grounded.relevance(user, every_item), other.relevance(user, every_item), atol=1e-3
        )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_drift_changes_relevance_only_for_the_drifted_users(scenario) -> None:
    before = fit_population(scenario, OBSERVED, CATALOG, seed=0)
    after = before.with_drift(share=0.5, seed=3)
    assert after.drifted_users.mean() == pytest.approx(0.5, abs=0.15)
    np.testing.assert_array_equal(before.with_drift(0.5, 3).drifted_users, after.drifted_users)
    every_item = np.arange(len(before.item_ids))
    for user in range(len(before.user_ids)):
        old, new = before.relevance(user, every_item), after.relevance(user, every_item)
        if after.drifted_users[user]:
            assert not np.allclose(old, new), user
        else:
            np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match="drift share"):
        before.with_drift(0.0, 3)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_drifted_users_follow_their_new_genres(scenario) -> None:
    """What a drifted user likes moves towards the deranged genre mix: learnable from
    their new clicks."""
    before = fit_population(scenario, OBSERVED, CATALOG, seed=0)
    after = before.with_drift(share=1.0, seed=5)
    every_item = np.arange(len(before.item_ids))
    gained = [
        np.corrcoef(after.relevance(u, every_item), after.affinity(u, every_item))[0, 1]
        - np.corrcoef(before.relevance(u, every_item), after.affinity(u, every_item))[0, 1]
        for u in range(len(before.user_ids))
    ]
    assert np.mean(gained) > 0.2 and np.mean(np.array(gained) > 0) > 0.9


def test_grounded_drift_keeps_how_much_the_drifted_users_like(grounded) -> None:
    """The drifted users' logits keep the bias and the spread of the taste over all pairs."""
    after = grounded.with_drift(share=0.5, seed=3)
    moved = np.flatnonzero(after.drifted_users)
    every_item = np.arange(len(grounded.item_ids))
    bias, spread = GroundedTastes().bias, grounded.taste_std
    z = np.stack([(after.logits(u, every_item) - bias) / spread for u in moved])
    assert z.mean() == pytest.approx(0.0, abs=1e-9)
    assert z.std() == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match="drift_mix"):
        GroundedTastes(drift_mix=0.0)


def test_genre_tastes_follow_what_each_user_rated_highly(population: Population) -> None:
    assert population.scenario == "genre_taste"
    assert population.genres == ("Comedy", "Drama", "Horror")
    np.testing.assert_allclose(population.preferences.sum(axis=1), 1.0)
    u, v = list(population.user_ids).index("u"), list(population.user_ids).index("v")
    assert population.genres[int(np.argmax(population.preferences[u]))] == "Comedy"
    assert population.genres[int(np.argmax(population.preferences[v]))] == "Drama"
    np.testing.assert_allclose(population.item_genres[3], [0, 0.5, 0.5])
    comedy, drama = population.relevance(u, np.array([0])), population.relevance(u, np.array([2]))
    assert comedy[0] > drama[0]


def test_genre_taste_drift_permutes_the_preferences() -> None:
    before = Population.genre_taste(OBSERVED, CATALOG, GenreTastes(bias=-1.0))
    after = before.with_drift(share=0.5, seed=3)
    moved = after.drifted_users
    np.testing.assert_array_equal(after.preferences[~moved], before.preferences[~moved])
    np.testing.assert_allclose(
        np.sort(after.preferences[moved], axis=1), np.sort(before.preferences[moved], axis=1)
    )
    assert np.all(np.any(after.preferences[moved] != before.preferences[moved], axis=1))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_both_scenarios_answer_the_same_interface(scenario) -> None:
    population = fit_population(scenario, OBSERVED, CATALOG, seed=0)
    assert isinstance(population, Population) and population.scenario == scenario
    user, every_item = 0, np.arange(len(population.item_ids))
    relevance = population.relevance(user, every_item)
    assert relevance.shape == every_item.shape and np.all((relevance > 0) & (relevance < 1))
    shown = list(population.item_ids[np.argsort(relevance)[::-1][:5]])
    probabilities = population.click_probabilities(user, shown)
    assert probabilities.shape == (5,) and np.all(np.diff(probabilities) < 0)
    clicks = population.clicks(np.random.default_rng(0), user, shown)
    assert set(clicks) <= set(range(5))
    assert type(population.with_drift(0.5, 1)) is type(population)
    assert population.ideal_ctr(user, k=5) == pytest.approx(probabilities.mean())


def test_an_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'cold'"):
        fit_population("cold", OBSERVED, CATALOG)  # type: ignore[arg-type]


def test_the_same_item_is_clicked_less_further_down(population: Population) -> None:
    u = list(population.user_ids).index("u")
    probabilities = population.click_probabilities(u, ["1", "1", "1", "unknown"])
    relevance = population.relevance(u, np.array([0]))[0]
    np.testing.assert_allclose(probabilities, [relevance, relevance / 2, relevance / 3, 0.0])


def test_sampled_clicks_match_the_click_model(grounded: Population) -> None:
    """Sampling is the same code in both scenarios (Population.clicks)."""
    population = grounded
    rng = np.random.default_rng(0)
    shown = list(population.item_ids[:4])
    draws = 20_000
    counts = np.zeros(4)
    for _ in range(draws):
        counts[population.clicks(rng, 1, shown)] += 1
    expected = population.click_probabilities(1, shown)
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts / draws - expected) < 4 * sigma)


def test_the_ideal_list_is_an_upper_bound_on_ctr(population: Population) -> None:
    u = list(population.user_ids).index("u")
    ideal = population.ideal_ctr(u, k=2)
    worst = population.click_probabilities(u, ["3", "4"]).mean()
    assert ideal >= population.click_probabilities(u, ["1", "2"]).mean() - 1e-12 > worst
    # what the user consumed is out of reach: the ideal list is the best of the rest
    rest = population.ideal_ctr(u, k=2, consumed=frozenset({"1"}))
    assert rest == pytest.approx(population.click_probabilities(u, ["2", "4"]).mean())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_consumed_items_are_never_clicked_again(scenario) -> None:
    population = fit_population(scenario, RATINGS, ITEMS, seed=0)
    u = list(population.user_ids).index("u")
    probabilities = population.click_probabilities(u, ["1", "2"], consumed=frozenset({"1"}))
    assert probabilities[0] == 0.0 and probabilities[1] > 0.0
    rng = np.random.default_rng(0)
    assert all(0 not in population.clicks(rng, u, ["1", "2"], frozenset({"1"})) for _ in range(200))
