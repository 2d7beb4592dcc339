"""Candidate sources of the multi-stage recommender: each proposes items for a user.

Every source is fitted on time-stamped interactions and scores every catalog item for a
batch of queries (`score(queries) -> (len(queries), n_items)`), so the ranker can read
each source's score and rank for any candidate, whichever source proposed it. A query
is a user's items as a row (`Queries`), not only a fitted user index: the batch path
(the bench, offline evaluation) and the one request the service answers, whose
streaming last items join the row and whose user the sources may never have seen, are
scored by the same code. A source that can only score the users it was fitted on
(ALS, the two-tower) gives NaN for the others, which the ranker reads as missing:

- `ItemToItemSource`: EASE (Steck 2019) over the user's whole history, the strongest
  single model on MovieLens-style data;
- `TwoTowerSource`: the torch two-tower, which also places users and items with no
  history through their features;
- `MatrixFactorisationSource`: implicit ALS, a low-rank view the item-item weights lack;
- `TrendingSource`: interactions of the last `window_days`, what is popular now;
- `RecentNeighboursSource`: cosine neighbours of the user's last few items, which
  follows a change of taste a whole-history model averages away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recloop.evaluation.metrics import ndcg_at_k
from recloop.evaluation.splits import Interactions
from recloop.models.baselines import ALS, cosine_neighbours, ease_weights, top_k_unseen
from recloop.models.configs import TwoTowerConfig
from recloop.models.two_tower import TrainingExamples, TrainResult, score_users, train_two_tower

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Queries:
    """The users a batch scores, each as the items they had, ranked by recency.

    `users`: each row's fitted user index, -1 for a user the sources were not fitted on;
    `recency`: (len(users), n_items), the items each user had valued by recency rank
    (1 = most recent), the fitted history and any items a request adds.
    """

    users: np.ndarray
    recency: sp.csr_matrix

    def __len__(self) -> int:
        return len(self.users)

    def rows(self, start: int, stop: int) -> Queries:
        """The queries from `start` to `stop` (a batch)."""
        return Queries(self.users[start:stop], self.recency[start:stop])

    @cached_property
    def history(self) -> sp.csr_matrix:
        """The 0/1 rows of every item each user had."""
        return most_recent(self.recency, None)

    def last(self, n: int) -> sp.csr_matrix:
        """The 0/1 rows of each user's `n` most recent items."""
        return most_recent(self.recency, n)


def most_recent(recency: sp.csr_matrix, n: int | None) -> sp.csr_matrix:
    """0/1 float32 rows of the items whose recency rank is at most `n` (None: all)."""
    matrix = recency.tocsr().astype(np.float32, copy=True)
    keep = np.ones(matrix.nnz, dtype=bool) if n is None else recency.tocsr().data <= n
    matrix.data = keep.astype(np.float32)
    matrix.eliminate_zeros()
    return matrix


def recency_ranks(data: Interactions) -> sp.csr_matrix:
    """(n_users, n_items) int32: each item a user had, valued by the position of its latest
    interaction among the user's interactions, newest first, from 1 (ties by stored order)."""
    order = np.lexsort((-data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    position = np.arange(len(users)) - np.searchsorted(users, users, side="left")
    _, first = np.unique(users * data.n_items + items, return_index=True)
    return sp.csr_matrix(
        ((position[first] + 1).astype(np.int32), (users[first], items[first])),
        shape=(data.n_users, data.n_items),
    )


def fitted_users_only(
    queries: Queries, n_items: int, score: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """`score(users)` for the rows whose user the source was fitted on, NaN for the rest."""
    known = queries.users >= 0
    out = np.full((len(queries), n_items), np.nan, dtype=np.float32)
    if known.any():
        out[known] = score(queries.users[known])
    return out


class CandidateSource(Protocol):
    name: str

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> CandidateSource:
        """Fit on `data`; `validation` (relevant items per user) may drive early stopping."""
        ...

    def score(self, queries: Queries) -> np.ndarray: ...


class StoredSource(CandidateSource, Protocol):
    """A source whose fitted state is a few arrays (what a registered model stores)."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state, to save."""
        ...

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> StoredSource:
        """This (unfitted) source holding a saved fitted state."""
        ...


def last_timestamp(data: Interactions) -> int:
    """The reference time of a fitted source: its newest interaction (0 when empty)."""
    return int(data.timestamps.max()) if len(data) else 0


@dataclass
class ItemToItemSource:
    """EASE item-item weights applied to the user's items."""

    l2: float = 250.0
    name: str = "item_to_item"
    weights: np.ndarray | None = None

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> ItemToItemSource:
        self.weights = ease_weights(data.matrix(), self.l2)
        return self

    def score(self, queries: Queries) -> np.ndarray:
        return np.asarray(queries.history @ self.weights)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> ItemToItemSource:
        return replace(self, weights=arrays["weights"])


@dataclass
class MatrixFactorisationSource:
    """Implicit-feedback ALS (the `implicit` package), seeded. Scores only the users it
    was fitted on: it has no factors for anyone else."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 20
    seed: int = 0
    name: str = "matrix_factorisation"
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> MatrixFactorisationSource:
        model = ALS(self.factors, self.regularization, self.alpha, self.iterations, self.seed)
        model.fit(data.matrix())
        self.user_factors, self.item_factors = model.user_factors, model.item_factors
        return self

    def score(self, queries: Queries) -> np.ndarray:
        return fitted_users_only(
            queries,
            len(self.item_factors),
            lambda users: self.user_factors[users] @ self.item_factors.T,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> MatrixFactorisationSource:
        return replace(
            self, user_factors=arrays["user_factors"], item_factors=arrays["item_factors"]
        )


@dataclass
class TwoTowerSource:
    """The two-tower with static side features. With `validation` it stops early on
    NDCG@10; without, it trains for `config.epochs` epochs (the count a fit with
    validation chose, so a refit on more data needs no second holdout)."""

    user_features: np.ndarray  # (n_users, f_u)
    item_features: np.ndarray  # (n_items, f_i)
    config: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    progress: bool = False
    name: str = "two_tower"
    result: TrainResult | None = None
    history: sp.csr_matrix | None = None

    def fit(self, data: Interactions, validation: list[np.ndarray] | None = None) -> TwoTowerSource:
        history = data.matrix()
        users = np.arange(data.n_users)
        config = self.config

        def validate(model: object) -> float:
            scores = score_users(model, users, self.user_features, history)
            return ndcg_at_k(top_k_unseen(scores, history, 10), validation)

        if validation is None:
            # A fixed number of epochs: no early stopping, so nothing to be patient about.
            config = replace(config, patience=config.epochs)
        self.history = history
        self.result = train_two_tower(
            TrainingExamples.from_matrix(history, self.user_features),
            history,
            self.item_features,
            config,
            validate if validation is not None else None,
            self.progress,
        )
        return self

    @property
    def epochs_chosen(self) -> int:
        return self.result.best_epoch + 1

    def score(self, queries: Queries) -> np.ndarray:
        model = self.result.model
        return fitted_users_only(
            queries,
            self.history.shape[1],
            lambda users: score_users(model, users, self.user_features[users], self.history),
        )


@dataclass
class TrendingSource:
    """Interactions per item in the last `window_days` before the newest one, ties broken
    by all-time counts: popular now, not popular once."""

    window_days: int = 30
    name: str = "trending"
    scores_: np.ndarray | None = None

    def fit(self, data: Interactions, validation: list[np.ndarray] | None = None) -> TrendingSource:
        recent = data.timestamps >= last_timestamp(data) - self.window_days * SECONDS_PER_DAY
        window = np.bincount(data.items[recent], minlength=data.n_items)
        overall = np.bincount(data.items, minlength=data.n_items)
        self.scores_ = (np.log1p(window) + 1e-3 * np.log1p(overall)).astype(np.float32)
        return self

    def score(self, queries: Queries) -> np.ndarray:
        return np.broadcast_to(self.scores_, (len(queries), len(self.scores_))).copy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores_}

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> TrendingSource:
        return replace(self, scores_=arrays["scores"])


@dataclass
class RecentNeighboursSource:
    """Sum of cosine similarities to the user's `recent` most recent items (a request's
    streaming last items first)."""

    recent: int = 5
    neighbours: int = 100
    name: str = "recent_neighbours"
    similarity: np.ndarray | None = None

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> RecentNeighboursSource:
        self.similarity = cosine_neighbours(data.matrix(), self.neighbours)
        return self

    def score(self, queries: Queries) -> np.ndarray:
        return np.asarray(queries.last(self.recent) @ self.similarity)

    def arrays(self) -> dict[str, np.ndarray]:
        # Each column keeps its `neighbours` most similar items: stored sparse, used dense.
        similarity = sp.csr_matrix(self.similarity)
        return {
            "similarity_data": similarity.data,
            "similarity_indices": similarity.indices,
            "similarity_indptr": similarity.indptr,
            "similarity_shape": np.asarray(similarity.shape),
        }

    def with_arrays(self, arrays: dict[str, np.ndarray]) -> RecentNeighboursSource:
        similarity = sp.csr_matrix(
            (arrays["similarity_data"], arrays["similarity_indices"], arrays["similarity_indptr"]),
            shape=tuple(int(n) for n in arrays["similarity_shape"]),
        )
        return replace(self, similarity=similarity.toarray())
