"""Multi-stage recommender: several candidate sources, merged, ordered by a learned ranker.

    fit(data):
      1. split off a label window (each user's latest interactions, a random share of
         them, or the last stretch of time: `LabelWindow`);
      2. fit every source on what lies before it and draw each user's candidates;
      3. train the ranker on those candidates, labelled by the window;
      4. refit every source on all of `data` (the two-tower for the epoch count chosen
         in step 2) and keep the ranker.

The sources that produce the ranker's training candidates never see its labels, so
the ranker learns how sources behave on unseen interactions, which is what it faces
when serving. Everything is seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.evaluation.splits import Interactions
from recloop.models.candidate_sources import (
    SECONDS_PER_DAY,
    CandidateSource,
    TwoTowerSource,
    last_timestamp,
)
from recloop.models.ranker import BoostedRanker, RankerConfig

LabelWindowKind = Literal["latest", "random", "global"]
NOT_A_CANDIDATE = -1e6  # below any ranker score; popularity still orders the rest


@dataclass(frozen=True)
class LabelWindow:
    """Which interactions of the training data become the ranker's labels.

    latest: each user's most recent `share` (a next-items task);
    random: a seeded random `share` of each user's (a fill-in task, RecBole's protocol);
    global: everything after the (1 - share) quantile of time (the pipeline's task).
    Users with a single interaction keep it for fitting under latest and random.
    """

    kind: LabelWindowKind = "latest"
    share: float = 0.1
    seed: int = 0
    folds: int = 1  # label windows to train the ranker on; each costs one fit of every source

    def windows(self, data: Interactions) -> list[tuple[Interactions, Interactions]]:
        """`folds` (fit, labels) pairs, the one nearest to all of `data` first: further
        random draws, or the window before the previous one in time."""
        pairs = []
        remaining = data
        for fold in range(self.folds):
            if self.kind == "random":
                pairs.append(replace(self, seed=self.seed + fold).split(data))
            else:
                pairs.append(self.split(remaining))
                remaining = pairs[-1][0]
        return pairs

    def split(self, data: Interactions) -> tuple[Interactions, Interactions]:
        if self.kind == "global":
            cut = np.quantile(data.timestamps, 1.0 - self.share)
            labels = data.timestamps > cut
        else:
            rng = np.random.default_rng(self.seed)
            key = rng.random(len(data)) if self.kind == "random" else data.timestamps.astype(float)
            order = np.lexsort((key, data.users))
            counts = np.bincount(data.users, minlength=data.n_users)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            position = np.arange(len(order)) - starts[data.users[order]]
            held = np.floor(counts * self.share).astype(np.int64)
            held[(held == 0) & (counts >= 2)] = 1
            cut = counts - held
            labels = np.zeros(len(data), dtype=bool)
            labels[order] = position >= cut[data.users[order]]
        return data.subset(~labels), data.subset(labels)


@dataclass(frozen=True)
class MultiStageConfig:
    candidates: dict[str, int] = field(
        default_factory=lambda: {
            "item_to_item": 100,
            "two_tower": 100,
            "trending": 30,
            "recent_neighbours": 50,
        }
    )
    label_window: LabelWindow = field(default_factory=LabelWindow)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    batch_size: int = 1024


def for_refit(source: CandidateSource) -> CandidateSource:
    """An unfitted copy of a fitted source, to refit on more data with what the first
    fit chose (the two-tower's epoch count)."""
    if isinstance(source, TwoTowerSource):
        return replace(
            source, config=replace(source.config, epochs=source.epochs_chosen), result=None
        )
    return replace(source)


@dataclass
class CandidateTable:
    """Candidates of a batch of users: one row per (user, item), sorted by user."""

    rows: np.ndarray  # position of the user in the batch
    items: np.ndarray  # item index
    features: pd.DataFrame


@dataclass
class MultiStageRecommender:
    """`make_sources` builds fresh, unfitted sources (called once per fit).
    `item_features` (n_items, f) feeds the content affinity of user x item."""

    make_sources: Callable[[], list[CandidateSource]]
    item_features: np.ndarray
    config: MultiStageConfig = field(default_factory=MultiStageConfig)
    name: str = "multi_stage"
    sources: list[CandidateSource] = field(default_factory=list)
    ranker: BoostedRanker | None = None
    report: dict[str, object] = field(default_factory=dict)
    history: sp.csr_matrix | None = None
    reference_time: int = 0
    last_seen: np.ndarray | None = None
    item_last_seen: np.ndarray | None = None
    profile: np.ndarray | None = None  # (n_users, f) unit mean of the history's item features
    unit_items: np.ndarray | None = None  # (n_items, f) unit item features

    def fit(self, data: Interactions) -> MultiStageRecommender:
        tables, targets, groups = [], [], []
        first_fold: list[CandidateSource] = []
        for fold, (early, labels) in enumerate(self.config.label_window.windows(data)):
            label_lists = labels.per_user()
            sources = [source.fit(early, label_lists) for source in self.make_sources()]
            self._remember(sources, early)
            users = np.flatnonzero([len(items) > 0 for items in label_lists])
            table = self.candidates(users)
            relevant = labels.matrix()
            tables.append(table.features)
            targets.append(np.asarray(relevant[users[table.rows], table.items]).ravel() > 0)
            groups.append(table.rows + fold * data.n_users)
            if fold == 0:
                first_fold = sources
                self.report = {
                    "label_window": {
                        "kind": self.config.label_window.kind,
                        "folds": self.config.label_window.folds,
                        "fit_interactions": len(early),
                        "label_interactions": len(labels),
                        "users": len(users),
                    },
                    "candidate_recall": candidate_recall(
                        table, users, label_lists, self.config.candidates
                    ),
                    "candidates_per_user": float(len(table.rows) / max(len(users), 1)),
                }
        features = pd.concat(tables, ignore_index=True)
        self.ranker = BoostedRanker(self.config.ranker).fit(
            features,
            np.concatenate(targets).astype(np.int32),
            np.concatenate(groups),
            decreasing=[name for name in features if name.endswith("_log_rank")],
        )
        self.report["ranker"] = {
            "rounds": self.ranker.rounds,
            "holdout_ndcg@10": self.ranker.valid_ndcg,
            "gain": self.ranker.importance(),
        }
        self._remember([for_refit(source).fit(data) for source in first_fold], data)
        return self

    def _remember(self, sources: list[CandidateSource], data: Interactions) -> None:
        """Fitted sources and the per-user and per-item state the features read."""
        self.sources = sources
        self.history = data.matrix()
        self.reference_time = last_timestamp(data)
        self.last_seen = np.full(data.n_users, -1, dtype=np.int64)
        np.maximum.at(self.last_seen, data.users, data.timestamps)
        self.item_last_seen = np.full(data.n_items, -1, dtype=np.int64)
        np.maximum.at(self.item_last_seen, data.items, data.timestamps)
        unit = self.item_features / (
            np.linalg.norm(self.item_features, axis=1, keepdims=True) + 1e-9
        )
        profile = np.asarray(self.history @ unit)
        self.profile = profile / (np.linalg.norm(profile, axis=1, keepdims=True) + 1e-9)
        self.unit_items = unit

    def _days_since(self, stamps: np.ndarray) -> np.ndarray:
        days = (self.reference_time - stamps) / SECONDS_PER_DAY
        return np.where(stamps < 0, np.nan, days)

    def candidates(self, users: np.ndarray) -> CandidateTable:
        """Each source's top unseen items for `users`, merged, with the ranker's features."""
        seen = self.history[users].toarray() > 0
        scores = {source.name: source.score(users).astype(np.float32) for source in self.sources}
        chosen = np.zeros(seen.shape, dtype=bool)
        ranks = {}
        for name, score in scores.items():
            masked = np.where(seen, -np.inf, score)
            order = np.argsort(-masked, axis=1, kind="stable")
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
            ranks[name] = rank
            depth = self.config.candidates.get(name, 0)
            np.put_along_axis(chosen, order[:, :depth], True, axis=1)
        chosen &= ~seen
        rows, items = np.nonzero(chosen)
        user_index = users[rows]
        features = {}
        for name, score in scores.items():
            # Scale-free: a source refitted on more data keeps the meaning of its features.
            spread = score.std(axis=1, keepdims=True) + 1e-9
            standardised = (score - score.mean(axis=1, keepdims=True)) / spread
            features[f"{name}_z"] = standardised[rows, items]
            features[f"{name}_log_rank"] = np.log1p(ranks[name][rows, items]).astype(np.float32)
        popularity = np.asarray(self.history.sum(axis=0)).ravel()
        history_length = np.diff(self.history.indptr)
        features["item_log_popularity"] = np.log1p(popularity[items])
        features["user_log_history"] = np.log1p(history_length[user_index])
        features["user_days_since_last"] = self._days_since(self.last_seen[user_index])
        features["item_days_since_last"] = self._days_since(self.item_last_seen[items])
        features["content_affinity"] = np.einsum(
            "ij,ij->i", self.profile[user_index], self.unit_items[items]
        )
        return CandidateTable(rows, items, pd.DataFrame(features))

    def score(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items): the ranker's score for each candidate; the rest sit below
        every candidate, ordered by popularity."""
        popularity = np.asarray(self.history.sum(axis=0)).ravel()
        fallback = NOT_A_CANDIDATE + np.log1p(popularity) / (1.0 + np.log1p(popularity.max()))
        out = np.tile(fallback.astype(np.float64), (len(users), 1))
        for start in range(0, len(users), self.config.batch_size):
            batch = users[start : start + self.config.batch_size]
            table = self.candidates(batch)
            out[start + table.rows, table.items] = self.ranker.predict(table.features)
        return out


def candidate_recall(
    table: CandidateTable,
    users: np.ndarray,
    relevant: Sequence[np.ndarray],
    depths: dict[str, int],
) -> dict[str, float]:
    """Recall of each source's own top-N and of the merged candidates, over `users`
    (the batch `table` was drawn for)."""
    hits: dict[str, list[float]] = {name: [] for name in [*depths, "merged"]}
    for position, user in enumerate(users):
        wanted = set(relevant[user].tolist())
        mine = table.rows == position
        items = table.items[mine]
        hits["merged"].append(len(wanted & set(items.tolist())) / len(wanted))
        for name, depth in depths.items():
            ranked = table.features[f"{name}_log_rank"].to_numpy()[mine] < np.log1p(depth)
            hits[name].append(len(wanted & set(items[ranked].tolist())) / len(wanted))
    return {
        (name if name == "merged" else f"{name}@{depths[name]}"): float(np.mean(values))
        for name, values in hits.items()
    }
