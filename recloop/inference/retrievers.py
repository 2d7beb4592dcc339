"""Inference: the one code path for offline evaluation and serving.

Two-tower (`Retriever` over a `ModelBundle`): user features (daily and streaming) and
the user's known history -> user tower -> index search -> drop seen and excluded items
-> top k. A user the id embedding never saw, or absent from the model's users, is
placed by the tower from features, recent items and history alone (the id embedding
is masked, as in training). Only a request with nothing to go on (no known history,
no feature and no recent item) gets the most popular unseen items, and the result
says so. Popularity (`PopularityRetriever`, an experiment's baseline): the most counted
items the user has not interacted with.

`rank_with_policy` puts an exploration policy (recloop.inference.policies) over either: it
retrieves the policy's candidate pool and draws the list with its propensities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from recloop.features.feature_vectors import FeatureColumns, describes_user, empty_user_row
from recloop.inference.policies import Policy
from recloop.models.model_artifact import ModelBundle
from recloop.models.popularity_model import PopularityModel

POPULARITY_FALLBACK = "popularity"


@dataclass(frozen=True)
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    fallback: str | None  # None when the model ranked the items
    # P(this item at this position) under the serving policy; None when no policy drew
    # the list (a fallback, or a list merged from several).
    propensities: list[float] | None = None


class Servable(Protocol):
    """What the service and offline evaluation need of any model kind."""

    @property
    def version(self) -> str: ...

    @property
    def needs_features(self) -> bool: ...

    def interactions(self, user_id: str) -> int:
        """How many items the model knows the user interacted with (0 if unknown)."""
        ...

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation: ...


class UnknownItemError(KeyError):
    pass


class PopularityRanking:
    """Items by count, most counted first: the popularity model, and the two-tower's
    fallback for users it cannot rank."""

    def __init__(self, counts: np.ndarray):
        self.order = np.argsort(-counts, kind="stable")
        self.shares = counts / max(float(counts.sum()), 1.0)

    def top(self, banned: set[int], k: int) -> tuple[list[int], list[float]]:
        """The `k` most counted item indices not in `banned`, with their shares of counts."""
        top = list(islice((int(i) for i in self.order if i not in banned), k))
        return top, [float(self.shares[i]) for i in top]


def _row_items(history: sp.csr_matrix, row: int | None) -> set[int]:
    """The item indices of one user's row of `history` (none for an unknown user)."""
    if row is None:
        return set()
    return set(history.indices[history.indptr[row] : history.indptr[row + 1]].tolist())


def _row_length(history: sp.csr_matrix, row: int | None) -> int:
    return 0 if row is None else int(history.indptr[row + 1] - history.indptr[row])


def _item_rows(item_index: dict[str, int], item_ids: Iterable[str]) -> set[int]:
    return {item_index[i] for i in item_ids if i in item_index}


class Retriever:
    """Serves one bundle. `history` overrides the interactions known at query time
    (offline evaluation passes what was known at the test cut-off)."""

    def __init__(self, bundle: ModelBundle, history: sp.csr_matrix | None = None):
        self.bundle = bundle
        self.user_index = {str(u): i for i, u in enumerate(bundle.user_ids)}
        self.item_index = {str(i): n for n, i in enumerate(bundle.item_ids)}
        self.known_history = bundle.history if history is None else history.tocsr()
        # The summary only changes with the history, so it is computed once per user.
        with torch.inference_mode():
            self.summaries = bundle.model.history_summary(
                self.known_history, torch.arange(self.known_history.shape[0])
            )
        self.popular = PopularityRanking(bundle.item_popularity)

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def needs_features(self) -> bool:
        return True

    def interactions(self, user_id: str) -> int:
        return _row_length(self.known_history, self.user_index.get(user_id))

    @torch.inference_mode()
    def user_vectors(self, users: np.ndarray, features: FeatureColumns) -> np.ndarray:
        """(len(users), dim) for user indices, with Feast feature columns as of the request.

        Index -1: a user absent from the model, placed by features and recent items with
        the id embedding masked and an empty history summary (a training example with no
        earlier history has the same)."""
        users = users.astype(np.int64)
        absent = torch.from_numpy(users < 0)
        index = torch.from_numpy(np.where(users < 0, 0, users))
        model, spec = self.bundle.model, self.bundle.spec
        vectors = model.users_with_summary(
            index,
            torch.from_numpy(spec.user_vectors(features)),
            self.summaries[index].masked_fill(absent.unsqueeze(1), 0.0),
            torch.from_numpy(spec.recent_item_indices(features, self.item_index)),
            known=model.known_users[index] & ~absent,
        )
        return vectors.numpy()

    def _search_unseen(self, query: np.ndarray, banned: set[int], k: int) -> tuple[list, list]:
        """Widen the search until `k` items survive the filter (or the catalog runs out)."""
        depth = k + len(banned)
        while True:
            scores, indices = self.bundle.index.search(query, depth)
            kept = [
                (i, s)
                for i, s in zip(indices[0], scores[0], strict=True)
                if i >= 0 and i not in banned
            ]
            if len(kept) >= k or depth >= len(self.bundle.index):
                return [i for i, _ in kept[:k]], [float(s) for _, s in kept[:k]]
            depth = min(depth * 2, len(self.bundle.index))

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation:
        """Top `k` for one user from the user tower; `features` is one row of Feast
        columns, None when unavailable. Popularity only when the model knows no history
        of the user and the request carries no feature and no recent item."""
        user = self.user_index.get(user_id)
        banned = _row_items(self.known_history, user) | _item_rows(self.item_index, exclude)
        no_history = _row_length(self.known_history, user) == 0
        if no_history and (features is None or not describes_user(features)):
            top, scores = self.popular.top(banned, k)
            return Recommendation(
                [str(self.bundle.item_ids[i]) for i in top], scores, POPULARITY_FALLBACK
            )
        row = np.array([-1 if user is None else user])
        query = self.user_vectors(row, features if features is not None else empty_user_row())
        top, scores = self._search_unseen(query, banned, k)
        return Recommendation([str(self.bundle.item_ids[i]) for i in top], scores, None)

    def recommend_many(
        self, users: np.ndarray, features: FeatureColumns, seen: sp.csr_matrix, k: int
    ) -> np.ndarray:
        """(len(users), k) item indices for offline evaluation, `seen` (users x items) masked."""
        queries = self.user_vectors(users, features)
        out = np.empty((len(users), k), dtype=np.int64)
        for row, (user, query) in enumerate(zip(users, queries, strict=True)):
            banned = _row_items(seen, int(user))
            top, _ = self._search_unseen(query[None, :], banned, k)
            out[row] = top
        return out

    def similar_items(self, item_id: str, k: int) -> Recommendation:
        """Nearest items to `item_id` in the item tower's space (the item itself left out)."""
        if item_id not in self.item_index:
            raise UnknownItemError(item_id)
        item = self.item_index[item_id]
        top, scores = self._search_unseen(self.bundle.index.vectors[item][None, :], {item}, k)
        return Recommendation([str(self.bundle.item_ids[i]) for i in top], scores, None)


class PopularityRetriever:
    """Serves a `PopularityModel`: the most counted items the user has not had. `history`
    overrides the interactions known at query time (offline evaluation)."""

    def __init__(self, model: PopularityModel, history: sp.csr_matrix | None = None):
        self.model = model
        self.known_history = model.history if history is None else history.tocsr()
        self.user_index = {str(u): i for i, u in enumerate(model.user_ids)}
        self.item_index = {str(i): n for n, i in enumerate(model.item_ids)}
        self.popular = PopularityRanking(model.counts)

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def needs_features(self) -> bool:
        return False

    def interactions(self, user_id: str) -> int:
        return _row_length(self.known_history, self.user_index.get(user_id))

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation:
        """Top `k` by count, without the user's known items and `exclude`; `features` unused."""
        user = self.user_index.get(user_id)
        banned = _row_items(self.known_history, user) | _item_rows(self.item_index, exclude)
        top, scores = self.popular.top(banned, k)
        return Recommendation([str(self.model.item_ids[i]) for i in top], scores, None)


def servable(model: ModelBundle | PopularityModel) -> Retriever | PopularityRetriever:
    """The serving wrapper of a registry model of either kind."""
    if isinstance(model, PopularityModel):
        return PopularityRetriever(model)
    return Retriever(model)


def rank_with_policy(
    model: Servable,
    policy: Policy,
    user_id: str,
    features: FeatureColumns | None,
    k: int,
    exclude: Iterable[str],
    rng: np.random.Generator,
) -> Recommendation:
    """The policy's list from the model's top `policy.pool_size(k)` candidates, with the
    propensity of each shown item. A popularity fallback (a user the model has nothing
    on) is served as it is, without propensities: no policy drew it."""
    pool = model.recommend(user_id, features, policy.pool_size(k), exclude)
    if pool.fallback is not None or not pool.item_ids:
        return Recommendation(pool.item_ids[:k], pool.scores[:k], pool.fallback)
    ranking = policy.rank(
        np.asarray(pool.item_ids, dtype=object),
        np.asarray(pool.scores),
        min(k, len(pool.item_ids)),
        rng,
    )
    return Recommendation(
        [str(i) for i in ranking.item_ids],
        [float(s) for s in ranking.scores],
        None,
        [float(p) for p in ranking.propensities],
    )
