"""Candidate sources of the multi-stage recommender: each proposes items for a user.

Every source is fitted on time-stamped interactions and scores every catalog item for a
batch of users (`score(users) -> (len(users), n_items)`), so the ranker can read each
source's score and rank for any candidate, whichever source proposed it:

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

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recloop.evaluation.metrics import ndcg_at_k
from recloop.evaluation.splits import Interactions
from recloop.models.baselines import ALS, EASE, cosine_neighbours, top_k_unseen
from recloop.models.configs import TwoTowerConfig
from recloop.models.two_tower import TrainingExamples, TrainResult, score_users, train_two_tower

SECONDS_PER_DAY = 86_400


class CandidateSource(Protocol):
    name: str

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> CandidateSource:
        """Fit on `data`; `validation` (relevant items per user) may drive early stopping."""
        ...

    def score(self, users: np.ndarray) -> np.ndarray: ...


def last_timestamp(data: Interactions) -> int:
    """The reference time of a fitted source: its newest interaction (0 when empty)."""
    return int(data.timestamps.max()) if len(data) else 0


@dataclass
class ItemToItemSource:
    """EASE item-item weights applied to the user's history."""

    l2: float = 250.0
    name: str = "item_to_item"
    model: EASE | None = None

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> ItemToItemSource:
        self.model = EASE(l2=self.l2).fit(data.matrix())
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.model.score(users)


@dataclass
class MatrixFactorisationSource:
    """Implicit-feedback ALS (the `implicit` package), seeded."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    seed: int = 0
    name: str = "matrix_factorisation"
    model: ALS | None = None

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> MatrixFactorisationSource:
        model = ALS(self.factors, self.regularization, self.alpha, seed=self.seed)
        self.model = model.fit(data.matrix())
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.model.score(users)


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

    def score(self, users: np.ndarray) -> np.ndarray:
        return score_users(self.result.model, users, self.user_features[users], self.history)


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

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores_, (len(users), len(self.scores_))).copy()


def last_items(data: Interactions, n: int) -> sp.csr_matrix:
    """(n_users, n_items) 0/1: each user's `n` most recent items (ties by stored order)."""
    order = np.lexsort((-data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    starts = np.searchsorted(users, users, side="left")
    keep = np.arange(len(users)) - starts < n
    matrix = sp.csr_matrix(
        (np.ones(keep.sum(), dtype=np.float32), (users[keep], items[keep])),
        shape=(data.n_users, data.n_items),
    )
    matrix.data[:] = 1.0
    return matrix


@dataclass
class RecentNeighboursSource:
    """Sum of cosine similarities to the user's `recent` most recent items."""

    recent: int = 5
    neighbours: int = 100
    name: str = "recent_neighbours"
    recent_items: sp.csr_matrix | None = None
    similarity: np.ndarray | None = None

    def fit(
        self, data: Interactions, validation: list[np.ndarray] | None = None
    ) -> RecentNeighboursSource:
        self.recent_items = last_items(data, self.recent)
        self.similarity = cosine_neighbours(data.matrix(), self.neighbours)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.recent_items[users] @ self.similarity)
