"""Interaction matrices and train/validation/test splits.

Three protocols:
- `temporal_split`: global time cut-offs, the honest one for a system that retrains
  on new data (the model never sees the future).
- `random_split_per_user`: RecBole's default for MovieLens (each user's interactions
  shuffled and split 8:1:1), so numbers compare with published ones.
- `chronological_split_per_user`: each user's interactions in time order, cut by
  ratios (next-items prediction for every user, whenever they were active).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.features.training_set import temporal_cutoffs


@dataclass(frozen=True)
class Interactions:
    """Positive interactions as contiguous indices, with the id maps to go back."""

    users: np.ndarray  # int64 user index per interaction
    items: np.ndarray  # int64 item index per interaction
    timestamps: np.ndarray  # int64 epoch seconds per interaction
    user_ids: np.ndarray  # index -> external id
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> Interactions:
        return Interactions(
            self.users[mask], self.items[mask], self.timestamps[mask], self.user_ids, self.item_ids
        )

    def matrix(self) -> sp.csr_matrix:
        """Binary user x item matrix (repeated pairs count once)."""
        data = np.ones(len(self), dtype=np.float32)
        matrix = sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        matrix.data[:] = 1.0
        return matrix

    def per_user(self) -> list[np.ndarray]:
        """Item indices of each user (unique, sorted)."""
        matrix = self.matrix()
        return [
            matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]] for u in range(self.n_users)
        ]


def index_interactions(frame: pd.DataFrame, item_ids: np.ndarray | None = None) -> Interactions:
    """Map `user_id`/`item_id` columns to indices; `item_ids` fixes the catalog (cold items too)."""
    users, user_ids = pd.factorize(frame["user_id"], sort=True)
    if item_ids is None:
        items, item_ids = pd.factorize(frame["item_id"], sort=True)
    else:
        items = pd.Index(item_ids).get_indexer(frame["item_id"])
        if (items < 0).any():
            unknown = frame["item_id"][items < 0].unique()[:5].tolist()
            raise ValueError(f"interactions name items missing from the catalog: {unknown}")
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True).astype("int64") // 10**9
    return Interactions(
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        timestamps=np.asarray(stamps, dtype=np.int64),
        user_ids=np.asarray(user_ids),
        item_ids=np.asarray(item_ids),
    )


@dataclass(frozen=True)
class Split:
    train: Interactions
    valid: Interactions
    test: Interactions
    protocol: str

    def describe(self) -> dict[str, object]:
        return {
            "protocol": self.protocol,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
        }


def recbole_split_counts(total: int, ratios: tuple[float, ...]) -> list[int]:
    """How RecBole (1.2, `_calcu_split_ids`) sizes the parts of one user's interactions."""
    counts = [int(ratio * total) for ratio in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def random_split_per_user(
    interactions: Interactions,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 2020,
) -> Split:
    """Shuffle each user's interactions and cut them by `ratios` (RecBole's RS/RO protocol)."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(interactions), dtype=np.int8)
    order = np.argsort(interactions.users, kind="stable")
    boundaries = np.flatnonzero(np.diff(interactions.users[order])) + 1
    for group in np.split(order, boundaries):
        shuffled = rng.permutation(group)
        counts = recbole_split_counts(len(shuffled), ratios)
        cuts = np.cumsum(counts)[:-1]
        for index, chunk in enumerate(np.split(shuffled, cuts)):
            part[chunk] = index
    return Split(
        train=interactions.subset(part == 0),
        valid=interactions.subset(part == 1),
        test=interactions.subset(part == 2),
        protocol=f"random per user {ratios}, seed {seed}",
    )


def _per_user_parts(
    interactions: Interactions, ratios: tuple[float, float, float], key: np.ndarray
) -> np.ndarray:
    """Part (0 train, 1 valid, 2 test) of each interaction: each user's interactions
    ordered by `key`, cut with RecBole's sizes."""
    part = np.zeros(len(interactions), dtype=np.int8)
    order = np.lexsort((key, interactions.users))
    boundaries = np.flatnonzero(np.diff(interactions.users[order])) + 1
    for group in np.split(order, boundaries):
        cuts = np.cumsum(recbole_split_counts(len(group), ratios))[:-1]
        for index, chunk in enumerate(np.split(group, cuts)):
            part[chunk] = index
    return part


def latest_share_per_user(
    users: np.ndarray, keys: np.ndarray, n_users: int, share: float
) -> np.ndarray:
    """Which interactions are among their user's last `share` by `keys` (a bool each):
    floor(share x count) of a user's, at least one of a user with two or more, none of a
    user with a single one (it stays for fitting)."""
    order = np.lexsort((keys, users))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(order)) - starts[users[order]]
    held = np.floor(counts * share).astype(np.int64)
    held[(held == 0) & (counts >= 2)] = 1
    latest = np.zeros(len(users), dtype=bool)
    latest[order] = position >= (counts - held)[users[order]]
    return latest


def chronological_split_per_user(
    interactions: Interactions, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Split:
    """Each user's oldest interactions train, the next validate, the latest test."""
    part = _per_user_parts(interactions, ratios, interactions.timestamps)
    return Split(
        train=interactions.subset(part == 0),
        valid=interactions.subset(part == 1),
        test=interactions.subset(part == 2),
        protocol=f"chronological per user {ratios}",
    )


def temporal_split(
    interactions: Interactions, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> Split:
    """Everything before the first cut trains, then validation, then test, by timestamp."""
    cutoffs = temporal_cutoffs(
        pd.to_datetime(interactions.timestamps, unit="s", utc=True), valid_fraction, test_fraction
    )
    stamps = interactions.timestamps
    valid_start, test_start = (
        int(t.timestamp()) for t in (cutoffs.valid_start, cutoffs.test_start)
    )
    return Split(
        train=interactions.subset(stamps < valid_start),
        valid=interactions.subset((stamps >= valid_start) & (stamps < test_start)),
        test=interactions.subset(stamps >= test_start),
        protocol=f"temporal: valid from {cutoffs.valid_start.isoformat()}, "
        f"test from {cutoffs.test_start.isoformat()}",
    )
