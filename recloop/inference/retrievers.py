"""Inference: the one code path for offline evaluation and serving.

Two-tower (`Retriever` over a `ModelBundle`): user features (daily and streaming) and
the user's known history -> user tower -> index search -> drop seen and excluded items
-> top k. A user the id embedding never saw, or absent from the model's users, is
placed by the tower from features, recent items and history alone (the id embedding
is masked, as in training). Only a request with nothing to go on (no known history,
no feature and no recent item) gets the most popular unseen items, and the result
says so.

The labels-only kinds share `HistoryRetriever`: ids, the interactions known at query
time (never recommended again) and the popularity ranking. Popularity
(`PopularityRetriever`, an experiment's baseline): the most counted items the user has
not interacted with. EASE (`EaseRetriever`): the user's known history plus the items
the request's streaming features say they just engaged with, times the item-to-item
weights; popularity, said so, for a request with neither. The multi-stage recommender
(`MultiStageRetriever`): the same row of known history and streaming last items, as a
query of the candidate sources and the ranker, through the one scoring path the bench
and offline evaluation use (`MultiStageRecommender.score_queries`).

`rank_with_policy` puts an exploration policy (recloop.inference.policies) over either: it
retrieves the policy's candidate pool and draws the list with its propensities.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch

from recloop.features.feature_vectors import (
    FeatureColumns,
    describes_user,
    empty_user_row,
    recent_item_ids,
)
from recloop.inference.policies import Policy
from recloop.models.candidate_sources import Queries
from recloop.models.ease_model import EaseModel
from recloop.models.model_artifact import ModelBundle
from recloop.models.multi_stage_model import MultiStageModel
from recloop.models.popularity_model import PopularityModel

POPULARITY_FALLBACK = "popularity"
# Every kind the registry stores; `servable` wraps each in its retriever.
ServableModel = ModelBundle | PopularityModel | EaseModel | MultiStageModel


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


@runtime_checkable
class SimilarItems(Protocol):
    """A kind that can rank items by their likeness to one item (/similar_items)."""

    def similar_items(self, item_id: str, k: int) -> Recommendation: ...


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


def _top_unbanned(scores: np.ndarray, banned: set[int], k: int) -> tuple[list[int], list[float]]:
    """The `k` best-scored item indices outside `banned`, best first, ties by index."""
    allowed = np.ones(len(scores), dtype=bool)
    allowed[list(banned)] = False
    candidates = np.flatnonzero(allowed)
    top = candidates[np.lexsort((candidates, -scores[candidates]))[:k]]
    return top.tolist(), [float(s) for s in scores[top]]


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


class HistoryModel(Protocol):
    """What a labels-only kind holds: its ids and the interactions it knows."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    history: sp.csr_matrix
    version: str


class HistoryRetriever:
    """Base of the labels-only kinds, whose lists start from what the user is known to
    have interacted with. `history` overrides the interactions known at query time
    (offline evaluation passes what was known at the test cut-off); `counts` rank the
    popularity list."""

    def __init__(
        self, model: HistoryModel, counts: np.ndarray, history: sp.csr_matrix | None = None
    ):
        self.model = model
        self.known_history = model.history if history is None else history.tocsr()
        self.user_index = {str(u): i for i, u in enumerate(model.user_ids)}
        self.item_index = {str(i): n for n, i in enumerate(model.item_ids)}
        self.popular = PopularityRanking(counts)

    @property
    def version(self) -> str:
        return self.model.version

    def interactions(self, user_id: str) -> int:
        return _row_length(self.known_history, self.user_index.get(user_id))

    def _known(self, user_id: str) -> set[int]:
        return _row_items(self.known_history, self.user_index.get(user_id))

    def _listed(
        self, top: list[int], scores: list[float], fallback: str | None = None
    ) -> Recommendation:
        return Recommendation([str(self.model.item_ids[i]) for i in top], scores, fallback)


class PopularityRetriever(HistoryRetriever):
    """Serves a `PopularityModel`: the most counted items the user has not had."""

    def __init__(self, model: PopularityModel, history: sp.csr_matrix | None = None):
        super().__init__(model, model.counts, history)

    @property
    def needs_features(self) -> bool:
        return False

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation:
        """Top `k` by count, without the user's known items and `exclude`; `features` unused."""
        banned = self._known(user_id) | _item_rows(self.item_index, exclude)
        return self._listed(*self.popular.top(banned, k))


class EaseRetriever(HistoryRetriever):
    """Serves an `EaseModel`: scores = the user's items (known history and the request's
    streaming last items, as a 0/1 row) times the item-to-item weights. Those items are
    never returned: EASE reconstructs its input, so they would rank first. A user with
    neither gets the popularity list, marked as a fallback: the labels per item of the
    known history (offline, those before the cut-off: test labels never rank it)."""

    def __init__(self, model: EaseModel, history: sp.csr_matrix | None = None):
        known = model.history if history is None else history
        super().__init__(model, np.asarray(known.sum(axis=0)).ravel(), history)
        self.weights = model.weights

    @property
    def needs_features(self) -> bool:
        # Only the streaming last items: what places a user the weights were not fitted on.
        return True

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_items) scores of users by their rows of the known history."""
        return np.asarray(self.known_history[rows] @ self.weights)

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation:
        """Top `k` for one user; `features` is one row of Feast columns (only
        `user_stream__last_items` is read), None when unavailable."""
        recent = _item_rows(
            self.item_index, recent_item_ids(features) if features is not None else []
        )
        had = self._known(user_id) | recent
        banned = had | _item_rows(self.item_index, exclude)
        if not had:
            return self._listed(*self.popular.top(banned, k), POPULARITY_FALLBACK)
        scores = self.weights[sorted(had)].sum(axis=0)
        return self._listed(*_top_unbanned(scores, banned, k))

    def similar_items(self, item_id: str, k: int) -> Recommendation:
        """The items a user who had only `item_id` would be recommended (the item left out)."""
        if item_id not in self.item_index:
            raise UnknownItemError(item_id)
        item = self.item_index[item_id]
        return self._listed(*_top_unbanned(self.weights[item], {item}, k))


class MultiStageRetriever(HistoryRetriever):
    """Serves a `MultiStageModel` by its served state (pass `model.judged()` to score the
    judged one). A user's query is their known history and the request's streaming last
    items, the latter the most recent: the sources score it, the ranker orders the
    merged candidates. Those items are never returned. A user the model was not fitted
    on is scored from their recent items (ALS, which has no factors for them, proposes
    nothing and leaves its features missing); a request with neither gets the popularity
    list, marked as a fallback (counts of the known history, as for EASE)."""

    def __init__(self, model: MultiStageModel, history: sp.csr_matrix | None = None):
        known = model.history if history is None else history
        super().__init__(model, np.asarray(known.sum(axis=0)).ravel(), history)
        self.recommender = model.recommender

    @property
    def needs_features(self) -> bool:
        # Only the streaming last items: what places a user the sources were not fitted on.
        return True

    def _recency(self, user_id: str, recent: Sequence[int]) -> tuple[int, list[int], list[int]]:
        """The user's fitted row (-1: none), and their items with recency ranks: the
        request's recent items first, then known items the fitted state lacks (they came
        after its fit), then the fitted items still known, by their fitted ranks."""
        known = self._known(user_id)
        row = self.user_index.get(user_id)
        fitted = self.recommender.state.recency[row] if row is not None else None
        fitted_items = set() if fitted is None else set(fitted.indices.tolist())
        first = list(dict.fromkeys([*recent, *sorted(known - fitted_items)]))
        items, ranks = list(first), list(range(1, len(first) + 1))
        if fitted is not None:
            for item, rank in zip(fitted.indices.tolist(), fitted.data.tolist(), strict=True):
                if item in known and item not in first:
                    items.append(item)
                    ranks.append(len(first) + int(rank))
        return -1 if row is None else row, items, ranks

    def queries(self, user_ids: Sequence[str], recent: Sequence[Sequence[int]]) -> Queries:
        """The queries of `user_ids`, each with its request's recent item indices (most
        recent first)."""
        rows = [self._recency(user, items) for user, items in zip(user_ids, recent, strict=True)]
        recency = sp.csr_matrix(
            (
                np.asarray([r for _, _, ranks in rows for r in ranks], dtype=np.int32),
                np.asarray([i for _, items, _ in rows for i in items], dtype=np.int64),
                np.cumsum([0, *(len(items) for _, items, _ in rows)]),
            ),
            shape=(len(rows), len(self.model.item_ids)),
        )
        recency.sort_indices()
        return Queries(np.asarray([row for row, _, _ in rows], dtype=np.int64), recency)

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation:
        """Top `k` for one user; `features` is one row of Feast columns (only
        `user_stream__last_items` is read), None when unavailable."""
        recent_ids = recent_item_ids(features) if features is not None else []
        recent = [self.item_index[i] for i in recent_ids if i in self.item_index]
        had = self._known(user_id) | set(recent)
        banned = had | _item_rows(self.item_index, exclude)
        if not had:
            return self._listed(*self.popular.top(banned, k), POPULARITY_FALLBACK)
        scores = self.recommender.score_queries(self.queries([user_id], [recent]))[0]
        return self._listed(*_top_unbanned(scores, banned, k))

    def similar_items(self, item_id: str, k: int) -> Recommendation:
        """The items a user known only by having just had `item_id` would be recommended."""
        if item_id not in self.item_index:
            raise UnknownItemError(item_id)
        item = self.item_index[item_id]
        queries = Queries(
            np.array([-1]), sp.csr_matrix(([1], ([0], [item])), shape=(1, len(self.model.item_ids)))
        )
        return self._listed(*_top_unbanned(self.recommender.score_queries(queries)[0], {item}, k))


def servable(model: ServableModel, history: sp.csr_matrix | None = None) -> Servable:
    """The serving wrapper of a registry model of any kind; `history` overrides the
    interactions it knows (offline evaluation: those before the test cut-off)."""
    if isinstance(model, PopularityModel):
        return PopularityRetriever(model, history)
    if isinstance(model, EaseModel):
        return EaseRetriever(model, history)
    if isinstance(model, MultiStageModel):
        return MultiStageRetriever(model, history)
    return Retriever(model, history)


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
