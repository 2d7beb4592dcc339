"""Baseline recommenders that any new model must beat, on the same splits and metrics.

Each has `fit(train)` on a binary user x item CSR matrix and `score(users)` returning
dense (len(users), n_items) scores; `recommend` masks seen items and takes the top K.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits


class Recommender(Protocol):
    name: str

    def fit(self, train: sp.csr_matrix) -> Recommender: ...

    def score(self, users: np.ndarray) -> np.ndarray: ...


@dataclass
class Popularity:
    """Items by how many users interacted with them in training."""

    name: str = "popularity"
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, train: sp.csr_matrix) -> Popularity:
        self.counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()


def cosine_neighbours(train: sp.csr_matrix, neighbours: int, shrink: float = 0.0) -> np.ndarray:
    """(n_items, n_items) float32 cosine similarity of item columns, each column cut to its
    top `neighbours`, diagonal zero; `shrink` damps pairs with little support."""
    co = (train.T @ train).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(co))
    similarity = co / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(similarity, 0.0)
    if neighbours < similarity.shape[0]:
        cutoff = -np.partition(-similarity, neighbours - 1, axis=0)[neighbours - 1]
        similarity[similarity < cutoff] = 0.0
    return similarity.astype(np.float32)


@dataclass
class ItemKNN:
    """Item-based cosine neighbourhood: each item keeps its `neighbours` most similar items."""

    neighbours: int = 100
    shrink: float = 0.0
    name: str = "item_knn"
    train: sp.csr_matrix | None = None
    similarity: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> ItemKNN:
        self.train = train
        self.similarity = cosine_neighbours(train, self.neighbours, self.shrink)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.train[users] @ self.similarity)


def ease_weights(train: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's closed form (Steck 2019): B = I - P / diag(P) with P = (XᵀX + λI)⁻¹, so
    diag(B) = 0 and no item predicts itself. (n_items, n_items) float32, solved in float64;
    a user's scores are their binary row of X times B. The one implementation: the bench's
    `EASE`, the multi-stage candidate source and the registered EASE model all call it."""
    gram = (train.T @ train).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


@dataclass
class EASE:
    """Embarrassingly shallow autoencoder (Steck 2019): closed-form item-item weights."""

    l2: float = 250.0
    name: str = "ease"
    train: sp.csr_matrix | None = None
    weights: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> EASE:
        self.train, self.weights = train, ease_weights(train, self.l2)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.train[users] @ self.weights)


@dataclass
class ALS:
    """Implicit-feedback matrix factorisation (the `implicit` package), seeded."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 20
    seed: int = 0
    name: str = "als"
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> ALS:
        # implicit asks for single-threaded BLAS (its own threads already fill the cores)
        # and checks it when the model is built.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                calculate_training_loss=False,
            )
            model.fit(train.astype(np.float32), show_progress=False)
        self.user_factors, self.item_factors = model.user_factors, model.item_factors
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T


@dataclass
class PopularityForStrangers:
    """A baseline that answers a user it knows nothing of (every score equal, e.g. no
    training interactions for EASE, ItemKNN or ALS) with popularity, as any deployment of
    it would, instead of an arbitrary order; every other user's scores are left as they are."""

    model: Recommender
    popularity: Popularity = field(default_factory=Popularity)

    @property
    def name(self) -> str:
        return self.model.name

    def fit(self, train: sp.csr_matrix) -> PopularityForStrangers:
        self.model.fit(train)
        self.popularity.fit(train)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.model.score(users), dtype=np.float32)
        strangers = scores.max(axis=1) == scores.min(axis=1)
        scores[strangers] = self.popularity.score(users[strangers])
        return scores


def top_k_unseen(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """Top-k item indices per row of `scores`, never an item already in that row of `seen`."""
    scores = scores.astype(np.float64, copy=True)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recommend(
    model: Recommender, users: np.ndarray, seen: sp.csr_matrix, k: int, batch_size: int = 2048
) -> np.ndarray:
    """(len(users), k) recommendations, scoring users in batches to bound memory."""
    parts = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        parts.append(top_k_unseen(model.score(batch), seen[batch], k))
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)
