"""Multi-stage recommender: label windows, candidate sources, ranker, and no leakage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recloop.evaluation.metrics import ndcg_at_k
from recloop.evaluation.splits import Interactions, chronological_split_per_user
from recloop.models.baselines import recommend
from recloop.models.candidate_sources import (
    ItemToItemSource,
    Queries,
    RecentNeighboursSource,
    TrendingSource,
    recency_ranks,
)
from recloop.models.multi_stage import LabelWindow, MultiStageRecommender, StageConfig
from recloop.models.ranker import BoostedRanker, RankerConfig

N_USERS, N_ITEMS = 80, 40
SMALL_RANKER = RankerConfig(min_data_in_leaf=5, num_leaves=7, max_rounds=60, seed=0)


def planted(seed: int = 0) -> Interactions:
    """Two taste groups, each liking its half of the catalog (most of the time), at
    increasing timestamps per user."""
    rng = np.random.default_rng(seed)
    users, items, stamps = [], [], []
    for user in range(N_USERS):
        half = user % 2
        chosen = rng.choice(N_ITEMS // 2, size=12, replace=False) + half * N_ITEMS // 2
        noise = rng.choice(N_ITEMS, size=2, replace=False)
        picks = np.unique(np.concatenate([chosen, noise]))
        users += [user] * len(picks)
        items += rng.permutation(picks).tolist()
        stamps += (1_000_000 + user * 10 + np.arange(len(picks)) * 86_400).tolist()
    return Interactions(
        np.array(users),
        np.array(items),
        np.array(stamps),
        np.array([f"u{u}" for u in range(N_USERS)]),
        np.array([f"i{i}" for i in range(N_ITEMS)]),
    )


def triples(data: Interactions) -> set[tuple[int, int, int]]:
    return set(zip(data.users.tolist(), data.items.tolist(), data.timestamps.tolist(), strict=True))


@pytest.mark.parametrize("kind", ["latest", "random", "global"])
def test_label_window_partitions_the_data(kind: str) -> None:
    data = planted()
    fit, labels = LabelWindow(kind, share=0.25, seed=3).split(data)
    assert len(fit) + len(labels) == len(data)
    assert triples(fit) | triples(labels) == triples(data)
    assert not triples(fit) & triples(labels)
    assert 0.15 * len(data) < len(labels) < 0.35 * len(data)


def test_latest_window_holds_each_users_newest_interactions() -> None:
    fit, labels = LabelWindow("latest", share=0.25).split(planted())
    for user in range(N_USERS):
        assert (
            labels.timestamps[labels.users == user].min() > fit.timestamps[fit.users == user].max()
        )


def test_global_window_lies_after_every_fitted_interaction() -> None:
    fit, labels = LabelWindow("global", share=0.25).split(planted())
    assert labels.timestamps.min() > fit.timestamps.max()


def test_folds_step_back_in_time() -> None:
    windows = LabelWindow("latest", share=0.2, folds=2).windows(planted())
    (fit_0, labels_0), (fit_1, labels_1) = windows
    assert triples(fit_1) | triples(labels_1) == triples(fit_0)
    assert not triples(labels_1) & triples(labels_0)


def test_mixed_folds_alternate_each_users_latest_and_the_newest_period() -> None:
    data = planted()
    (fit_0, labels_0), (fit_1, labels_1), (fit_2, labels_2) = LabelWindow(
        "mixed", share=0.2, folds=3
    ).windows(data)
    for (fit, labels), (kind, before) in zip(
        ((fit_0, labels_0), (fit_1, labels_1), (fit_2, labels_2)),
        (("latest", data), ("global", fit_0), ("latest", fit_1)),
        strict=True,
    ):
        expected_fit, expected_labels = LabelWindow(kind, share=0.2).split(before)
        assert triples(fit) == triples(expected_fit) and triples(labels) == triples(expected_labels)
    assert labels_1.timestamps.min() > fit_1.timestamps.max()
    # the latest windows hold some of every user's labels, the global one only the newest
    assert len(np.unique(labels_0.users)) == N_USERS > len(np.unique(labels_1.users))


def test_random_folds_draw_different_labels() -> None:
    (_, first), (_, second) = LabelWindow("random", share=0.2, folds=2).windows(planted())
    assert triples(first) != triples(second)


def test_recency_ranks_put_each_users_most_recent_first() -> None:
    data = planted()
    queries = Queries(np.arange(N_USERS), recency_ranks(data))
    user = 5
    mine = data.users == user
    newest = data.items[mine][np.argsort(-data.timestamps[mine])]
    assert set(queries.last(3)[user].indices.tolist()) == set(newest[:3].tolist())
    ranks = queries.recency[user]
    assert dict(zip(ranks.indices, ranks.data, strict=True)) == {
        item: rank for rank, item in enumerate(newest.tolist(), start=1)
    }


def test_trending_counts_only_the_window() -> None:
    data = Interactions(
        np.array([0, 1, 2, 0]),
        np.array([0, 0, 0, 1]),
        np.array([0, 0, 0, 100 * 86_400]),
        np.array(["a", "b", "c"]),
        np.array(["x", "y"]),
    )
    scores = (
        TrendingSource(window_days=30).fit(data).score(Queries(np.array([0]), data.matrix()[[0]]))
    )
    assert scores[0, 1] > scores[0, 0]


def test_ranker_learns_a_planted_signal() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 20)
    signal = rng.random(len(groups))
    noise = rng.random(len(groups))
    labels = (signal > 0.9).astype(np.int32)
    features = pd.DataFrame({"signal": signal, "noise": noise})
    ranker = BoostedRanker(SMALL_RANKER).fit(features, labels, groups)
    gains = ranker.importance()
    assert gains["signal"] > 10 * max(gains["noise"], 1e-9)
    assert ranker.valid_ndcg > 0.9


def test_ranker_refuses_unsorted_groups() -> None:
    with pytest.raises(ValueError, match="sorted by group"):
        BoostedRanker(SMALL_RANKER).fit(
            pd.DataFrame({"x": [0.0, 1.0]}), np.array([1, 0]), np.array([1, 0])
        )


FITTED_ON: list[set[tuple[int, int, int]]] = []


@dataclass
class Memoriser:
    """A leak detector: scores 1 exactly the pairs it was fitted on, so fitted on the
    ranker's labels it would put them first; it also records what it was fitted on."""

    name: str = "memoriser"
    known: sp.csr_matrix | None = None

    def fit(self, data: Interactions, validation: list[np.ndarray] | None = None) -> Memoriser:
        self.known = data.matrix()
        FITTED_ON.append(triples(data))
        return self

    def score(self, queries: Queries) -> np.ndarray:
        return self.known[queries.users].toarray()


def multi_stage(folds: int = 1, kind: str = "latest") -> MultiStageRecommender:
    return MultiStageRecommender(
        lambda: [
            ItemToItemSource(l2=10.0),
            TrendingSource(),
            RecentNeighboursSource(),
            Memoriser(),
        ],
        item_features=np.eye(N_ITEMS, dtype=np.float32),
        config=StageConfig(
            candidates={"item_to_item": 15, "trending": 5, "recent_neighbours": 10, "memoriser": 5},
            label_window=LabelWindow(kind, share=0.25, folds=folds),
            ranker=SMALL_RANKER,
        ),
    )


@pytest.mark.parametrize("kind", ["latest", "random", "global"])
def test_ranker_candidates_come_from_sources_that_never_saw_the_labels(kind: str) -> None:
    data = planted()
    FITTED_ON.clear()
    model = multi_stage(kind=kind).fit(data)
    _, labels = LabelWindow(kind, share=0.25).split(data)
    first_fit, refit = FITTED_ON
    assert not first_fit & triples(labels)
    assert refit == triples(data)
    # Had it seen the labels, the memoriser would recall all of them (about 3 per user).
    assert model.report["candidate_recall"]["memoriser@5"] < 0.5
    assert model.report["candidate_recall"]["merged"] > 0.5


def test_served_sources_are_refitted_on_everything() -> None:
    data = planted()
    model = multi_stage().fit(data)
    memoriser = next(source for source in model.sources if source.name == "memoriser")
    assert memoriser.known.nnz == data.matrix().nnz
    assert model.history.nnz == data.matrix().nnz


def test_multi_stage_beats_popularity_on_planted_tastes() -> None:
    split = chronological_split_per_user(planted(), (0.7, 0.1, 0.2))
    model = multi_stage(folds=2).fit(split.train)
    users = np.arange(N_USERS)
    seen = (split.train.matrix() + split.valid.matrix()).tocsr()
    top = recommend(model, users, seen, 5)
    assert not any(seen[u, top[u]].nnz for u in users)
    trending = TrendingSource(window_days=10_000).fit(split.train)
    popular = recommend(trending, users, seen, 5)
    relevant = split.test.per_user()
    assert ndcg_at_k(top, relevant) > 1.5 * ndcg_at_k(popular, relevant)
    assert set(model.report["ranker"]["gain"]) >= {"item_to_item_z", "content_affinity"}


def test_ranker_score_never_rises_with_a_decreasing_feature() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(300), 10)
    rank = rng.integers(0, 50, len(groups)).astype(float)
    other = rng.random(len(groups))
    # Noisy labels that mostly favour good ranks, sometimes bad ones.
    labels = ((rank < 10) ^ (rng.random(len(groups)) < 0.2)).astype(np.int32)
    features = pd.DataFrame({"source_log_rank": np.log1p(rank), "other": other})
    ranker = BoostedRanker(SMALL_RANKER).fit(features, labels, groups, ["source_log_rank"])
    sweep = pd.DataFrame({"source_log_rank": np.log1p(np.arange(50.0)), "other": 0.5})
    assert np.all(np.diff(ranker.predict(sweep)) <= 1e-12)
