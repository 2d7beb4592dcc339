"""Simulated users for the closed loop: hidden tastes, position bias and a click model.

Tastes are fitted on MovieLens-100K: a user's preference over genres is the genre
mix of the movies they rated 4 or more (smoothed), and an item's quality is its
shrunken mean rating. The probability that a user clicks item i shown at position
p (0-based) is the position-based model

    P(click) = examination(p) * relevance(u, i)
    examination(p) = 1 / (p + 1) ** position_decay
    relevance(u, i) = sigmoid(bias + affinity_weight * affinity(u, i) + quality_weight * quality(i))

with affinity(u, i) = (preference_u . genres_i) / max(preference_u) in [0, 1].
A user never clicks an item twice, nor one they rated: what they consumed is gone.
Drift moves a share of users' preferences to other genres (a fixed permutation of
the genre axes), which is what "tastes changed" looks like to a recommender.
Everything is seeded; the service never sees these hidden quantities.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

POSITIVE_RATING = 4.0
PREFERENCE_SMOOTHING = 0.5
QUALITY_PRIOR_RATINGS = 20


@dataclass(frozen=True)
class ClickModel:
    position_decay: float = 1.0
    affinity_weight: float = 4.0
    quality_weight: float = 1.0
    bias: float = -2.5

    def examination(self, positions: np.ndarray) -> np.ndarray:
        return 1.0 / (positions + 1.0) ** self.position_decay


@dataclass(frozen=True)
class Population:
    """Hidden tastes of every simulated user over every catalog item."""

    user_ids: np.ndarray  # (n_users,) str
    item_ids: np.ndarray  # (n_items,) str
    genres: tuple[str, ...]
    preferences: np.ndarray  # (n_users, n_genres), rows sum to 1
    item_genres: np.ndarray  # (n_items, n_genres), rows sum to 1 (0 for no genre)
    item_quality: np.ndarray  # (n_items,), standardised shrunken mean rating
    drifted_users: np.ndarray  # (n_users,) bool
    click_model: ClickModel = ClickModel()

    @classmethod
    def from_movielens(
        cls, ratings: pd.DataFrame, items: pd.DataFrame, click_model: ClickModel = ClickModel()
    ) -> Population:
        """Fit tastes on `ratings` (user_id, item_id, rating) and `items` (item_id, genres)."""
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
        user_row = pd.Index(user_ids)
        liked = known.loc[known["rating"] >= POSITIVE_RATING]
        preferences = np.full((len(user_ids), len(genres)), PREFERENCE_SMOOTHING / len(genres))
        np.add.at(
            preferences,
            user_row.get_indexer(liked["user_id"]),
            item_genres[item_row.get_indexer(liked["item_id"])],
        )
        preferences /= preferences.sum(axis=1, keepdims=True)

        stats = known.groupby("item_id")["rating"].agg(["sum", "count"]).reindex(item_row)
        overall = known["rating"].mean()
        shrunk = (stats["sum"].fillna(0) + QUALITY_PRIOR_RATINGS * overall) / (
            stats["count"].fillna(0) + QUALITY_PRIOR_RATINGS
        )
        quality = ((shrunk - shrunk.mean()) / shrunk.std()).to_numpy()
        return cls(
            user_ids=user_ids.astype(str),
            item_ids=items["item_id"].to_numpy().astype(str),
            genres=genres,
            preferences=preferences,
            item_genres=item_genres,
            item_quality=quality,
            drifted_users=np.zeros(len(user_ids), dtype=bool),
            click_model=click_model,
        )

    def relevance(self, user: int, items: np.ndarray) -> np.ndarray:
        """P(the user likes each of `items`), item rows of this population."""
        preference = self.preferences[user]
        affinity = self.item_genres[items] @ preference / preference.max()
        model = self.click_model
        logit = (
            model.bias
            + model.affinity_weight * affinity
            + model.quality_weight * self.item_quality[items]
        )
        return 1.0 / (1.0 + np.exp(-logit))

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

    def with_drift(self, share: float, seed: int) -> Population:
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

    def ideal_ctr(self, user: int, k: int) -> float:
        """Expected clicks per impression of the best possible top-k list for `user`."""
        best = np.sort(self.relevance(user, np.arange(len(self.item_ids))))[::-1][:k]
        return float(np.mean(best * self.click_model.examination(np.arange(k, dtype=float))))
