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

Inference reads users as `Queries` (each user's items by recency, and their fitted
index or -1): `score(users)` builds them from the fitted state for the bench's batch
path, a retriever builds them from a request (known history plus streaming last items,
recloop.inference.retrievers.MultiStageRetriever), and both go through `score_queries`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.evaluation.splits import Interactions, latest_share_per_user
from recloop.models.candidate_sources import (
    SECONDS_PER_DAY,
    CandidateSource,
    Queries,
    TwoTowerSource,
    last_timestamp,
    most_recent,
    recency_ranks,
)
from recloop.models.progress import ProgressLog, silent
from recloop.models.ranker import BoostedRanker, RankerConfig

LabelWindowKind = Literal["latest", "random", "global", "mixed"]
# The tasks a mixed label window alternates, fold by fold.
MIXED_KINDS: tuple[LabelWindowKind, ...] = ("latest", "global")
NOT_A_CANDIDATE = -1e6  # below any ranker score; popularity still orders the rest


@dataclass(frozen=True)
class LabelWindow:
    """Which interactions of the training data become the ranker's labels.

    latest: each user's most recent `share` (a next-items task);
    random: a seeded random `share` of each user's (a fill-in task, RecBole's protocol);
    global: everything after the (1 - share) quantile of time (the pipeline's task);
    mixed: the folds alternate latest and global, each before the previous one, so one
    ranker learns what a returning user does next and what a new period brings.
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
                kind = MIXED_KINDS[fold % len(MIXED_KINDS)] if self.kind == "mixed" else self.kind
                pairs.append(replace(self, kind=kind).split(remaining))
                remaining = pairs[-1][0]
        return pairs

    def split(self, data: Interactions) -> tuple[Interactions, Interactions]:
        if self.kind == "global":
            cut = np.quantile(data.timestamps, 1.0 - self.share)
            labels = data.timestamps > cut
        else:
            rng = np.random.default_rng(self.seed)
            key = rng.random(len(data)) if self.kind == "random" else data.timestamps.astype(float)
            labels = latest_share_per_user(data.users, key, data.n_users, self.share)
        return data.subset(~labels), data.subset(labels)


@dataclass(frozen=True)
class StageConfig:
    """How the stages fit together: each source's candidate depth, where the ranker's
    labels come from, the ranker, and how many users are scored at once."""

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


@dataclass(frozen=True)
class UserItemState:
    """What the ranker's user and item features read besides the sources: each user's
    items by recency, when each user and item was last seen, and the newest time."""

    recency: sp.csr_matrix  # (n_users, n_items) int32 recency ranks (candidate_sources)
    last_seen: np.ndarray  # (n_users,) epoch seconds, -1 for a user with no interaction
    item_last_seen: np.ndarray  # (n_items,) epoch seconds, -1 for an item with none
    reference_time: int  # the newest interaction

    @classmethod
    def of(cls, data: Interactions) -> UserItemState:
        last_seen = np.full(data.n_users, -1, dtype=np.int64)
        np.maximum.at(last_seen, data.users, data.timestamps)
        item_last_seen = np.full(data.n_items, -1, dtype=np.int64)
        np.maximum.at(item_last_seen, data.items, data.timestamps)
        return cls(recency_ranks(data), last_seen, item_last_seen, last_timestamp(data))

    @cached_property
    def history(self) -> sp.csr_matrix:
        return most_recent(self.recency, None)

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Users per item in the fitted data (read by every scored batch, so kept)."""
        return np.asarray(self.history.sum(axis=0)).ravel()

    def days_since(self, stamps: np.ndarray) -> np.ndarray:
        days = (self.reference_time - stamps) / SECONDS_PER_DAY
        return np.where(stamps < 0, np.nan, days)


@dataclass
class MultiStageRecommender:
    """`make_sources` builds fresh, unfitted sources (called once per fit).
    `item_features` (n_items, f) feeds the content affinity of user x item."""

    make_sources: Callable[[], list[CandidateSource]]
    item_features: np.ndarray
    config: StageConfig = field(default_factory=StageConfig)
    name: str = "multi_stage"
    sources: list[CandidateSource] = field(default_factory=list)
    ranker: BoostedRanker | None = None
    report: dict[str, object] = field(default_factory=dict)
    state: UserItemState | None = None

    @property
    def history(self) -> sp.csr_matrix:
        """The 0/1 users x items the sources were last fitted on."""
        return self.state.history

    @cached_property
    def unit_items(self) -> np.ndarray:
        """(n_items, f) item features scaled to unit length."""
        norms = np.linalg.norm(self.item_features, axis=1, keepdims=True)
        return self.item_features / (norms + 1e-9)

    def fit(self, data: Interactions, log: ProgressLog = silent) -> MultiStageRecommender:
        """The four steps of the module docstring; each label window, the ranker and the
        refit are reported to `log` as they finish."""
        tables, targets, groups = [], [], []
        first_fold: list[CandidateSource] = []
        windows = self.config.label_window.windows(data)
        for fold, (early, labels) in enumerate(windows):
            label_lists = labels.per_user()
            sources = [source.fit(early, label_lists) for source in self.make_sources()]
            self._remember(sources, early)
            users = np.flatnonzero([len(items) > 0 for items in label_lists])
            table = self.candidates(self.fitted_queries(users))
            relevant = labels.matrix()
            tables.append(table.features)
            targets.append(np.asarray(relevant[users[table.rows], table.items]).ravel() > 0)
            groups.append(table.rows + fold * data.n_users)
            log(
                f"label window {fold + 1}/{len(windows)}: sources fitted on {len(early):,} "
                f"interactions, {len(table.rows):,} candidates for the {len(users):,} users "
                f"with {len(labels):,} labels"
            )
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
        log(
            f"ranker: {self.ranker.rounds} boosting rounds, NDCG@10 "
            f"{self.ranker.valid_ndcg:.4f} on its held-out users"
        )
        self._remember([for_refit(source).fit(data) for source in first_fold], data)
        log(f"sources refit on all {len(data):,} interactions")
        return self

    def _remember(self, sources: list[CandidateSource], data: Interactions) -> None:
        """Fitted sources and the per-user and per-item state the features read."""
        self.sources = sources
        self.state = UserItemState.of(data)

    def fitted_queries(self, users: np.ndarray) -> Queries:
        """Fitted users by index, with the items they had in the fitted data."""
        return Queries(users, self.state.recency[users])

    def source_scores(self, queries: Queries) -> dict[str, np.ndarray]:
        """Each source's (len(queries), n_items) scores, NaN rows where it cannot score."""
        return {source.name: source.score(queries).astype(np.float32) for source in self.sources}

    def candidates(self, queries: Queries) -> CandidateTable:
        """Each source's top items the user has not had, merged, with the ranker's features.
        A source that cannot score a user (NaN) proposes nothing and leaves its features
        missing."""
        history = queries.history
        seen = history.toarray() > 0
        scores = self.source_scores(queries)
        chosen = np.zeros(seen.shape, dtype=bool)
        ranks, scored = {}, {}
        for name, score in scores.items():
            scored[name] = ~np.isnan(score).any(axis=1)
            masked = np.where(seen, -np.inf, score)
            order = np.argsort(-masked, axis=1, kind="stable")
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
            ranks[name] = rank
            top = np.zeros_like(chosen)
            np.put_along_axis(top, order[:, : self.config.candidates.get(name, 0)], True, axis=1)
            chosen |= top & scored[name][:, None]
        chosen &= ~seen
        rows, items = np.nonzero(chosen)
        features = {}
        for name, score in scores.items():
            # Scale-free: a source refitted on more data keeps the meaning of its features.
            spread = score.std(axis=1, keepdims=True) + 1e-9
            standardised = (score - score.mean(axis=1, keepdims=True)) / spread
            features[f"{name}_z"] = standardised[rows, items]
            log_rank = np.log1p(ranks[name][rows, items]).astype(np.float32)
            features[f"{name}_log_rank"] = np.where(
                scored[name][rows], log_rank, np.float32(np.nan)
            )
        state = self.state
        known = queries.users >= 0
        last_seen = np.where(known, state.last_seen[np.where(known, queries.users, 0)], -1)
        unit = self.unit_items
        profile = np.asarray(history @ unit)
        profile = profile / (np.linalg.norm(profile, axis=1, keepdims=True) + 1e-9)
        features["item_log_popularity"] = np.log1p(state.item_popularity[items])
        features["user_log_history"] = np.log1p(np.diff(history.indptr)[rows])
        features["user_days_since_last"] = state.days_since(last_seen[rows])
        features["item_days_since_last"] = state.days_since(state.item_last_seen[items])
        features["content_affinity"] = np.einsum("ij,ij->i", profile[rows], unit[items])
        return CandidateTable(rows, items, pd.DataFrame(features))

    def score_queries(self, queries: Queries) -> np.ndarray:
        """(len(queries), n_items): the ranker's score for each candidate; the rest sit
        below every candidate, ordered by popularity. The one scoring path: the bench's
        batches and a served request alike."""
        popularity = self.state.item_popularity
        fallback = NOT_A_CANDIDATE + np.log1p(popularity) / (1.0 + np.log1p(popularity.max()))
        out = np.tile(fallback.astype(np.float64), (len(queries), 1))
        for start in range(0, len(queries), self.config.batch_size):
            batch = queries.rows(start, start + self.config.batch_size)
            table = self.candidates(batch)
            out[start + table.rows, table.items] = self.ranker.predict(table.features)
        return out

    def score(self, users: np.ndarray) -> np.ndarray:
        """`score_queries` for fitted users by index, with their fitted items (the
        baselines' interface, bench/quality.py's batch path)."""
        return self.score_queries(self.fitted_queries(users))


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
