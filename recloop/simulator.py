"""Simulated users for the closed loop and the experiment demo: hidden tastes, position
bias and a click model, in two scenarios.

The probability that user u clicks item i shown at position p (0-based) is the
position-based model, in both scenarios

    P(click) = examination(p) * relevance(u, i)
    examination(p) = 1 / (p + 1) ** position_decay
    relevance(u, i) = sigmoid(logit(u, i))

A user never clicks an item twice, nor one they rated: what they consumed is gone.

Both scenarios know each user's genre taste: preference_u is the genre mix of the movies
u rated 4 or more (smoothed, sums to 1), genres_i spreads 1 over the item's genres, and
affinity(u, i) = (preference_u . genres_i) / max(preference_u), in [0, 1]. Drift moves a
seeded share of the users' preferences along a fixed derangement of the genre axes
(a cyclic shift), which is what "tastes changed" looks like to a recommender.

`grounded` (the default): the hidden tastes are MovieLens itself, as two things a user
does (RecSim's choice and satisfaction): which films they choose to watch, and how much
they like what they watched. Two biased matrix factorisations are fitted by the same
seeded alternating least squares, on all of MovieLens, including the period the served
models never train on:

    satisfaction: rating(u, i) ~ mean + b_u + b_i + p_u . q_i
        over every rating (rank 32, L2 = 15 on every factor and bias)
    choice: rated(u, i) ~ mean' + b'_u + b'_i + p'_u . q'_i
        over every user x item pair, 1 if u rated i and 0 if not (rank 32, L2 = 12)

    logit(u, i) = bias + choice_weight * z_choice(u, i) + rating_weight * z_rating(u, i)
    z_rating(u, i) = (b_i + p_u . q_i - m_r) / s_r
    z_choice(u, i) = (b'_i + p'_u . q'_i - m_c) / s_c

with m and s the mean and standard deviation over all user x item pairs. Items a user
never rated get the factorisations' predictions: users like the films they never saw
that people with their history chose and rated highly. b_u and b'_u are left out (how a
user uses the stars, how much they rate: the same for all their films); b'_i is kept:
popular films are chosen more. A drifted user mixes a genre term into the whole taste,
t(u, i) = choice_weight * z_choice + rating_weight * z_rating (mean 0, deviation s_t):

    logit'(u, i) = bias + s_t * (mix(u, i) - m_d) / s_d
    mix(u, i) = (1 - drift_mix) * t(u, i) / s_t + drift_mix * affinity(u, i) / s_g

with affinity on the deranged preference, s_g the deviation of affinity over all pairs
before drift, and m_d, s_d the mean and deviation of mix over the drifted users' pairs:
drift changes which films they like, not the mean and spread of their logits. (Their
best possible list still loses about 12 % of its clicks: the choice term has a long
upper tail that the bounded genre term has not.)

`genre_taste` (the harder scenario: a list that is the same for everyone is nearly
optimal in it, and nothing in the ratings teaches a model these tastes):

    logit(u, i) = bias + affinity_weight * affinity(u, i) + quality_weight * quality(i)

with quality(i) the standardised mean rating of i shrunk towards the overall mean by 20
ratings. Drift permutes the preference itself.

Defaults (MovieLens-100K): the grounded weights are data too. Both factorisations were
fitted on 90 % of the user x item pairs, and on the other 10 % (their ratings left out
of both) a logistic regression of "rated 4 or more" (vs rated below 4 or not rated) on
z_choice and z_rating gave 1.03 and 0.46 (intercept -4.33; z_choice alone: 1.14).
Choice rank and L2 maximise the AUC of "rated" on those held-out pairs (0.949; item
popularity alone: 0.832). Only the grounded `bias` is calibrated, on the overall click
level: the best possible top-10 list (rated items left out) earns about 0.20 clicks per
impression. genre_taste keeps the values it had before the grounded scenario existed.
Everything is seeded; the service never sees these hidden quantities.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Self, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

Scenario = Literal["grounded", "genre_taste"]
SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)

POSITIVE_RATING = 4.0
PREFERENCE_SMOOTHING = 0.5
QUALITY_PRIOR_RATINGS = 20
# Chosen on a random 10 % of MovieLens-100K held out: RMSE 0.912 (the mean: 1.13).
FACTOR_RANK = 32
FACTOR_L2 = 15.0
# The choice factorisation (every user x item pair: rated or not), chosen by the AUC of
# "rated" on a random 10 % of pairs held out, over ranks 8-64 and L2 1-100: 0.949 (item
# popularity alone: 0.832); rank 48 does no better, L2 10 or 16 a little worse.
CHOICE_RANK = 32
CHOICE_L2 = 12.0
FACTOR_ITERATIONS = 15
FACTOR_INIT_SCALE = 0.1
DENSE_ABOVE = 0.25  # ALS solves with a dense observed-pairs matrix above this density


@dataclass(frozen=True)
class ClickModel:
    """Position bias: the chance that a user looks at position p at all."""

    position_decay: float = 1.0

    def examination(self, positions: np.ndarray) -> np.ndarray:
        return 1.0 / (positions + 1.0) ** self.position_decay


@dataclass(frozen=True)
class GroundedTastes:
    """From predicted choice and rating to relevance in the grounded scenario."""

    bias: float = -3.2  # calibrated: ideal top-10 CTR about 0.20 on MovieLens-100K
    # The logistic regression of "rated 4 or more" (vs unrated or rated below 4) on
    # z_choice and z_rating, over a random 10 % of MovieLens-100K pairs left out of both
    # factorisations: 1.03 and 0.46 (intercept -4.33; another split: 1.03, 0.47).
    choice_weight: float = 1.0
    rating_weight: float = 0.45
    drift_mix: float = 0.5  # a drifted user's weight on the new genre term, (0, 1]

    def __post_init__(self) -> None:
        if not 0 < self.drift_mix <= 1:
            raise ValueError(f"drift_mix must be in (0, 1], got {self.drift_mix}")


@dataclass(frozen=True)
class GenreTastes:
    """From genre affinity and item quality to relevance in the genre_taste scenario."""

    bias: float = -2.5
    affinity_weight: float = 4.0
    quality_weight: float = 1.0


@dataclass(frozen=True)
class RatingFactors:
    """A biased matrix factorisation of explicit ratings: mean + b_u + b_i + p_u . q_i."""

    mean: float
    user_bias: np.ndarray  # (n_users,)
    item_bias: np.ndarray  # (n_items,)
    user_factors: np.ndarray  # (n_users, rank)
    item_factors: np.ndarray  # (n_items, rank)

    @classmethod
    def fit(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        shape: tuple[int, int],
        rank: int = FACTOR_RANK,
        l2: float = FACTOR_L2,
        iterations: int = FACTOR_ITERATIONS,
        seed: int = 0,
    ) -> RatingFactors:
        """Alternating least squares on (user row, item row, rating) triples, one per pair.
        The L2 penalty is the same for every row, so a film with a handful of ratings keeps
        a small bias instead of topping everyone's list; rows with no rating predict the
        mean plus the other side's bias."""
        n_users, n_items = shape
        rng = np.random.default_rng(seed)
        mean = float(np.mean(ratings))
        residual = np.asarray(ratings, dtype=float) - mean
        user_factors = rng.normal(0.0, FACTOR_INIT_SCALE, (n_users, rank))
        item_factors = rng.normal(0.0, FACTOR_INIT_SCALE, (n_items, rank))
        user_bias, item_bias = np.zeros(n_users), np.zeros(n_items)
        # small products and solves: BLAS threads cost more than they bring (1.6-25x on 2 cores)
        with threadpool_limits(1, "blas"):
            for _ in range(iterations):
                user_factors, user_bias = _ridge_rows(
                    users, items, residual - item_bias[items], item_factors, n_users, l2
                )
                item_factors, item_bias = _ridge_rows(
                    items, users, residual - user_bias[users], user_factors, n_items, l2
                )
        return cls(mean, user_bias, item_bias, user_factors, item_factors)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of the (user row, item row) pairs."""
        interaction = np.sum(self.user_factors[users] * self.item_factors[items], axis=1)
        return self.mean + self.user_bias[users] + self.item_bias[items] + interaction

    def taste(self, user: int, items: np.ndarray) -> np.ndarray:
        """b_i + p_u . q_i: what the prediction says about the user's liking, without their
        rating scale (the mean and b_u are the same for all their items)."""
        return self.item_bias[items] + self.item_factors[items] @ self.user_factors[user]


def _ridge_rows(
    rows: np.ndarray,
    columns: np.ndarray,
    targets: np.ndarray,
    fixed: np.ndarray,
    n_rows: int,
    l2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One half-step of ALS: per row, a ridge regression of its targets on the fixed
    side's factors plus an intercept (the row's bias), all rows solved at once. A row with
    no target gets zeros."""
    rank = fixed.shape[1]
    design = np.hstack([fixed, np.ones((len(fixed), 1))])
    shape = (n_rows, len(fixed))
    observed = sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=shape)
    if observed.nnz > DENSE_ABOVE * n_rows * len(fixed):
        observed = observed.toarray()  # the choice matrix: 4x faster than sparse
    weighted = sp.csr_matrix((targets, (rows, columns)), shape=shape)
    outer = (design[:, :, None] * design[:, None, :]).reshape(len(fixed), -1)
    gram = (observed @ outer).reshape(n_rows, rank + 1, rank + 1) + l2 * np.eye(rank + 1)
    solution = np.linalg.solve(gram, (weighted @ design)[:, :, None])[:, :, 0]
    return solution[:, :rank], solution[:, rank]


def _pair_moments(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of offset_i + x_u . y_i over every (u, i) pair, from the
    second moments of both sides, without forming the users x items matrix."""
    x_mean = x.mean(axis=0)
    mean = offset.mean() + x_mean @ y.mean(axis=0)
    second = (
        np.mean(offset**2)
        + 2.0 * x_mean @ (y.T @ offset) / len(y)
        + np.sum((x.T @ x / len(x)) * (y.T @ y / len(y)))
    )
    return float(mean), float(np.sqrt(second - mean**2))


def _weighted_taste(
    tastes: GroundedTastes,
    choice: RatingFactors,
    choice_moments: tuple[float, float],
    rating: RatingFactors,
    rating_moments: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t(u, i) = choice_weight * z_choice + rating_weight * z_rating as one biased dot
    product, offset_i + x_u . y_i: (x, y, offset), for `_pair_moments`."""
    w_choice = tastes.choice_weight / choice_moments[1]
    w_rating = tastes.rating_weight / rating_moments[1]
    return (
        np.hstack([w_choice * choice.user_factors, w_rating * rating.user_factors]),
        np.hstack([choice.item_factors, rating.item_factors]),
        w_choice * (choice.item_bias - choice_moments[0])
        + w_rating * (rating.item_bias - rating_moments[0]),
    )


def _shared_fields(
    ratings: pd.DataFrame, items: pd.DataFrame
) -> tuple[dict[str, Any], pd.DataFrame]:
    """What both scenarios share (ids, genres, genre preferences), and the ratings of
    catalog items with their `user_row` and `item_row` in it."""
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    genre_lists = items["genres"].fillna("").map(lambda g: [x for x in str(g).split("|") if x])
    genres = tuple(sorted({g for gs in genre_lists for g in gs}))
    column = {genre: j for j, genre in enumerate(genres)}
    item_genres = np.zeros((len(items), len(genres)))
    for i, gs in enumerate(genre_lists):
        for genre in gs:
            item_genres[i, column[genre]] = 1.0 / len(gs)
    item_row = pd.Index(items["item_id"])
    known = ratings.loc[ratings["item_id"].isin(item_row)]
    user_ids = np.sort(known["user_id"].unique())
    known = known.assign(
        user_row=pd.Index(user_ids).get_indexer(known["user_id"]),
        item_row=item_row.get_indexer(known["item_id"]),
    )
    liked = known.loc[known["rating"] >= POSITIVE_RATING]
    preferences = np.full((len(user_ids), len(genres)), PREFERENCE_SMOOTHING / len(genres))
    np.add.at(preferences, liked["user_row"].to_numpy(), item_genres[liked["item_row"].to_numpy()])
    preferences /= preferences.sum(axis=1, keepdims=True)
    fields = {
        "user_ids": user_ids.astype(str),
        "item_ids": items["item_id"].to_numpy().astype(str),
        "genres": genres,
        "preferences": preferences,
        "item_genres": item_genres,
        "drifted_users": np.zeros(len(user_ids), dtype=bool),
    }
    return fields, known


@dataclass(frozen=True, kw_only=True)
class Population(ABC):
    """Hidden tastes of every simulated user over every catalog item. One interface, one
    constructor per scenario: `Population.grounded`, `Population.genre_taste`."""

    scenario: ClassVar[Scenario]
    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str
    genres: tuple[str, ...]
    preferences: np.ndarray  # (n_users, n_genres), rows sum to 1; deranged for drifted users
    item_genres: np.ndarray  # (n_items, n_genres), rows sum to 1 (0 for no genre)
    drifted_users: np.ndarray  # (n_users,) bool
    click_model: ClickModel = ClickModel()

    @staticmethod
    def grounded(
        ratings: pd.DataFrame,
        items: pd.DataFrame,
        tastes: GroundedTastes = GroundedTastes(),
        click_model: ClickModel = ClickModel(),
        seed: int = 0,
    ) -> GroundedPopulation:
        """Tastes from two factorisations over the catalog `items` (item_id, genres): of
        every rating in `ratings` (user_id, item_id, rating), and of which films each user
        rated at all (every user x item pair)."""
        fields, known = _shared_fields(ratings, items)
        users, rows = known["user_row"].to_numpy(), known["item_row"].to_numpy()
        shape = (len(fields["user_ids"]), len(fields["item_ids"]))
        factors = RatingFactors.fit(
            users, rows, known["rating"].to_numpy(dtype=float), shape, seed=seed
        )
        chosen = np.zeros(shape)
        chosen[users, rows] = 1.0
        every_user, every_item = np.indices(shape).reshape(2, -1)
        choice = RatingFactors.fit(
            every_user, every_item, chosen.ravel(), shape, CHOICE_RANK, CHOICE_L2, seed=seed
        )
        moments = {
            name: _pair_moments(f.user_factors, f.item_factors, f.item_bias)
            for name, f in (("rating", factors), ("choice", choice))
        }
        taste = _weighted_taste(tastes, choice, moments["choice"], factors, moments["rating"])
        preferences = fields["preferences"]
        return GroundedPopulation(
            **fields,
            click_model=click_model,
            factors=factors,
            choice_factors=choice,
            taste_moments=moments["rating"],
            choice_moments=moments["choice"],
            taste_std=_pair_moments(*taste)[1],
            affinity_std=_pair_moments(
                preferences / preferences.max(axis=1, keepdims=True),
                fields["item_genres"],
                np.zeros(len(fields["item_ids"])),
            )[1],
            tastes=tastes,
        )

    @staticmethod
    def genre_taste(
        ratings: pd.DataFrame,
        items: pd.DataFrame,
        tastes: GenreTastes = GenreTastes(),
        click_model: ClickModel = ClickModel(),
    ) -> GenreTastePopulation:
        """Tastes from the genres of what each user rated highly and each item's shrunken
        mean rating (deterministic: nothing to seed)."""
        fields, known = _shared_fields(ratings, items)
        n_items = len(fields["item_ids"])
        rows = known["item_row"].to_numpy()
        sums = np.bincount(rows, weights=known["rating"].to_numpy(dtype=float), minlength=n_items)
        counts = np.bincount(rows, minlength=n_items)
        overall = known["rating"].mean()
        shrunk = (sums + QUALITY_PRIOR_RATINGS * overall) / (counts + QUALITY_PRIOR_RATINGS)
        quality = (shrunk - shrunk.mean()) / shrunk.std(ddof=1)
        return GenreTastePopulation(
            **fields, click_model=click_model, item_quality=quality, tastes=tastes
        )

    @abstractmethod
    def logits(self, user: int, items: np.ndarray) -> np.ndarray:
        """Log-odds that `user` likes each of `items` (item rows of this population)."""

    def affinity(self, user: int, items: np.ndarray) -> np.ndarray:
        """How much of `user`'s favourite genre mix each of `items` carries, in [0, 1]."""
        preference = self.preferences[user]
        return self.item_genres[items] @ preference / preference.max()

    def relevance(self, user: int, items: np.ndarray) -> np.ndarray:
        """P(the user likes each of `items`), item rows of this population."""
        return 1.0 / (1.0 + np.exp(-self.logits(user, items)))

    def click_probabilities(
        self, user: int, shown_item_ids: list[str], consumed: frozenset[str] = frozenset()
    ) -> np.ndarray:
        """P(click) per position of a ranked list. Items outside the catalog, and items the
        user already consumed (rated or clicked: nobody watches a film twice here), are
        never clicked."""
        rows = pd.Index(self.item_ids).get_indexer(shown_item_ids)
        probabilities = np.zeros(len(rows))
        fresh = (rows >= 0) & ~np.isin(np.asarray(shown_item_ids, dtype=object), list(consumed))
        probabilities[fresh] = self.relevance(user, rows[fresh])
        return probabilities * self.click_model.examination(np.arange(len(rows), dtype=float))

    def clicks(
        self,
        rng: np.random.Generator,
        user: int,
        shown_item_ids: list[str],
        consumed: frozenset[str] = frozenset(),
    ) -> list[int]:
        """Positions the user clicks in one response."""
        probabilities = self.click_probabilities(user, shown_item_ids, consumed)
        return np.flatnonzero(rng.random(len(probabilities)) < probabilities).tolist()

    def with_drift(self, share: float, seed: int) -> Self:
        """A copy where `share` of the users (seeded choice) like other genres: their
        preference vector is moved along a fixed derangement of the genre axes."""
        if not 0 < share <= 1:
            raise ValueError(f"drift share must be in (0, 1], got {share}")
        rng = np.random.default_rng(seed)
        n_genres = len(self.genres)
        permutation = np.roll(np.arange(n_genres), rng.integers(1, n_genres))
        chosen = rng.random(len(self.user_ids)) < share
        preferences = self.preferences.copy()
        preferences[chosen] = self.preferences[chosen][:, permutation]
        return replace(self, preferences=preferences, drifted_users=self.drifted_users | chosen)

    def ideal_ctr(self, user: int, k: int, consumed: frozenset[str] = frozenset()) -> float:
        """Expected clicks per impression of the best possible top-k list for `user`,
        among the items they have not consumed."""
        fresh = np.flatnonzero(~np.isin(self.item_ids, list(consumed)))
        best = np.sort(self.relevance(user, fresh))[::-1][:k]
        return float(
            np.mean(best * self.click_model.examination(np.arange(len(best), dtype=float)))
        )


@dataclass(frozen=True, kw_only=True)
class GroundedPopulation(Population):
    """Tastes from factorisations of what MovieLens users chose to rate and how they rated
    it, plus a genre term after drift."""

    scenario: ClassVar[Scenario] = "grounded"
    factors: RatingFactors  # of the rating values (satisfaction)
    choice_factors: RatingFactors  # of rated-or-not over every pair (choice)
    taste_moments: tuple[float, float]  # m_r, s_r: b_i + p_u . q_i of `factors`, all pairs
    choice_moments: tuple[float, float]  # m_c, s_c: the same of `choice_factors`
    taste_std: float  # s_t: w_choice * z_choice + w_rating * z_rating over all pairs
    affinity_std: float  # s_g: affinity over all pairs, before drift
    drift_moments: tuple[float, float] | None = None  # m_d, s_d; set by with_drift
    tastes: GroundedTastes = GroundedTastes()

    def z_choice(self, user: int, items: np.ndarray) -> np.ndarray:
        """How likely `user` is to choose each of `items`, standardised over all pairs."""
        mean, std = self.choice_moments
        return (self.choice_factors.taste(user, items) - mean) / std

    def z_rating(self, user: int, items: np.ndarray) -> np.ndarray:
        """How highly `user` would rate each of `items`, standardised over all pairs."""
        mean, std = self.taste_moments
        return (self.factors.taste(user, items) - mean) / std

    def taste(self, user: int, items: np.ndarray) -> np.ndarray:
        """w_choice * z_choice + w_rating * z_rating: the logit less the bias, before drift."""
        choice, rating = self.z_choice(user, items), self.z_rating(user, items)
        return self.tastes.choice_weight * choice + self.tastes.rating_weight * rating

    def logits(self, user: int, items: np.ndarray) -> np.ndarray:
        taste = self.taste(user, items)
        if not self.drifted_users[user]:
            return self.tastes.bias + taste
        if self.drift_moments is None:
            raise ValueError("drifted users without their moments: make them with with_drift")
        mix_mean, mix_std = self.drift_moments
        mix = self.tastes.drift_mix
        genre = self.affinity(user, items) / self.affinity_std
        z = ((1.0 - mix) * taste / self.taste_std + mix * genre - mix_mean) / mix_std
        return self.tastes.bias + self.taste_std * z

    def with_drift(self, share: float, seed: int) -> Self:
        """As `Population.with_drift`; the drifted users' mix of taste and deranged genre
        affinity is standardised over their pairs, so drift changes what they like, not the
        mean and spread of their logits."""
        drifted = super().with_drift(share, seed)
        moved = drifted.drifted_users
        users, items, offset = _weighted_taste(
            self.tastes, self.choice_factors, self.choice_moments, self.factors, self.taste_moments
        )
        scale, mix = (1.0 - self.tastes.drift_mix) / self.taste_std, self.tastes.drift_mix
        preferences = drifted.preferences[moved]
        users = np.hstack(
            [
                scale * users[moved],
                mix / self.affinity_std * preferences / preferences.max(axis=1, keepdims=True),
            ]
        )
        items = np.hstack([items, self.item_genres])
        return replace(drifted, drift_moments=_pair_moments(users, items, scale * offset))


@dataclass(frozen=True, kw_only=True)
class GenreTastePopulation(Population):
    """Tastes from genre mix and item quality only (the population the loop and the experiments used first)."""

    scenario: ClassVar[Scenario] = "genre_taste"
    item_quality: np.ndarray  # (n_items,), standardised shrunken mean rating
    tastes: GenreTastes = GenreTastes()

    def logits(self, user: int, items: np.ndarray) -> np.ndarray:
        return (
            self.tastes.bias
            + self.tastes.affinity_weight * self.affinity(user, items)
            + self.tastes.quality_weight * self.item_quality[items]
        )


def fit_population(
    scenario: Scenario, ratings: pd.DataFrame, items: pd.DataFrame, seed: int = 0
) -> Population:
    """The named scenario's population, at its default calibration."""
    if scenario == "grounded":
        return Population.grounded(ratings, items, seed=seed)
    if scenario == "genre_taste":
        return Population.genre_taste(ratings, items)
    raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
