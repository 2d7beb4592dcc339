"""Splits keep every interaction exactly once; baselines recommend what co-occurs, never what was seen."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recloop.evaluation.splits import (
    index_interactions,
    random_split_per_user,
    recbole_split_counts,
    temporal_split,
)
from recloop.features.training_set import temporal_cutoffs
from recloop.models.baselines import (
    ALS,
    EASE,
    ItemKNN,
    Popularity,
    PopularityForStrangers,
    recommend,
    top_k_unseen,
)


def interactions(n_users: int = 30, per_user: int = 12, n_items: int = 40, seed: int = 1):
    rng = np.random.default_rng(seed)
    rows = [
        {
            "user_id": f"u{u}",
            "item_id": f"i{i}",
            "event_timestamp": pd.Timestamp(1_700_000_000 + int(t), unit="s", tz="UTC"),
        }
        for u in range(n_users)
        for i, t in zip(
            rng.choice(n_items, per_user, replace=False),
            rng.integers(0, 10**6, per_user),
            strict=True,
        )
    ]
    return index_interactions(
        pd.DataFrame(rows), item_ids=np.array([f"i{i}" for i in range(n_items)])
    )


def test_recbole_split_counts() -> None:
    assert recbole_split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    # 5 * 0.1 = 0.5 rounds to 0, and RecBole then moves one interaction into each small part
    assert recbole_split_counts(5, (0.8, 0.1, 0.1)) == [3, 1, 1]
    assert recbole_split_counts(1, (0.8, 0.1, 0.1)) == [1, 0, 0]


def pairs(part) -> set[tuple[int, int]]:
    return set(zip(part.users.tolist(), part.items.tolist(), strict=True))


def test_random_split_partitions_each_user_and_is_seeded() -> None:
    data = interactions()
    split = random_split_per_user(data, seed=3)
    train, valid, test = pairs(split.train), pairs(split.valid), pairs(split.test)
    assert train | valid | test == pairs(data)
    assert not (train & valid or train & test or valid & test)
    assert np.bincount(split.test.users, minlength=data.n_users).tolist() == [1] * data.n_users
    again = random_split_per_user(data, seed=3)
    assert pairs(again.test) == test
    assert pairs(random_split_per_user(data, seed=4).test) != test


def test_temporal_split_never_trains_on_the_future() -> None:
    split = temporal_split(interactions(), valid_fraction=0.2, test_fraction=0.2)
    assert split.train.timestamps.max() < split.valid.timestamps.min()
    assert split.valid.timestamps.max() < split.test.timestamps.min()
    assert len(split.train) + len(split.valid) + len(split.test) == 30 * 12


def test_holdout_since_a_drift_takes_its_fractions_of_the_labels_after_it() -> None:
    history = pd.date_range("2026-01-01", periods=900, freq="h", tz="UTC")
    after_drift = pd.date_range("2026-03-01", periods=100, freq="min", tz="UTC")
    stamps = pd.Series(history.append(after_drift))
    everywhere = temporal_cutoffs(stamps, 0.1, 0.1)
    assert everywhere.valid_start < after_drift[0]  # 10 % of all: every post-drift label held out
    since = temporal_cutoffs(stamps, 0.1, 0.1, holdout_since=after_drift[0])
    parts = since.part_of(stamps).value_counts()
    assert (parts["train"], parts["valid"], parts["test"]) == (980, 10, 10)
    assert since.valid_start == after_drift[80]
    with pytest.raises(ValueError, match="at least 3 examples since 2026-04-01"):
        temporal_cutoffs(stamps, 0.1, 0.1, holdout_since=pd.Timestamp("2026-04-01", tz="UTC"))


def test_unknown_catalog_items_are_an_error() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u"],
            "item_id": ["x"],
            "event_timestamp": [pd.Timestamp("2024-01-01", tz="UTC")],
        }
    )
    with pytest.raises(ValueError, match=r"missing from the catalog: \['x'\]"):
        index_interactions(frame, item_ids=np.array(["a"]))


def test_top_k_unseen_masks_seen_items() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.5]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0]]))
    assert top_k_unseen(scores, seen, 2).tolist() == [[1, 3]]


# Users 0-2 hold items {0, 1}; user 3 holds only item 0; item 2 is rare, item 3 unseen.
CO_OCCURRENCE = sp.csr_matrix(
    np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=np.float32)
)


@pytest.mark.parametrize(
    "model",
    [ItemKNN(neighbours=2), EASE(l2=1.0), Popularity(), ALS(factors=2, iterations=30, seed=0)],
)
def test_baselines_recommend_the_co_occurring_item(model) -> None:
    model.fit(CO_OCCURRENCE)
    top = recommend(model, np.array([3]), CO_OCCURRENCE, k=1)
    assert top.tolist() == [[1]]


def test_popularity_counts_users() -> None:
    assert Popularity().fit(CO_OCCURRENCE).counts.tolist() == [4, 3, 1, 0]


@pytest.mark.parametrize("model", [ItemKNN(neighbours=2), EASE(l2=1.0)])
def test_a_user_without_history_gets_popularity_and_the_others_keep_their_scores(model) -> None:
    # User 4 has no interactions: EASE and ItemKNN score every item 0 for them.
    matrix = sp.vstack([CO_OCCURRENCE, sp.csr_matrix((1, 4), dtype=np.float32)]).tocsr()
    wrapped = PopularityForStrangers(model).fit(matrix)
    assert wrapped.name == model.name
    assert recommend(wrapped, np.array([4]), matrix, k=3).tolist() == [[0, 1, 2]]
    np.testing.assert_array_equal(wrapped.score(np.array([3])), model.score(np.array([3])))
