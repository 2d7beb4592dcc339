"""A tiny trained bundle (two genres, eight users, six items) for artifact, gate and registry
tests, and a point-in-time training set of the same world for the candidate's fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.features.feature_vectors import (
    ITEM_VIEW,
    STREAM_VIEW,
    USER_VIEW,
    FeatureSpec,
    activity_columns,
)
from recloop.features.training_set import TemporalCutoffs
from recloop.models.configs import TwoTowerConfig
from recloop.models.model_artifact import ModelBundle, item_vectors_of
from recloop.models.retrieval_index import RetrievalIndex
from recloop.models.two_tower import TrainingExamples, train_two_tower
from recloop.training.candidate import TrainingInputs

# Users 0-3 like items 0 and 1 (genre A); users 4-7 like items 2 and 3 (genre B).
LIKES = np.zeros((8, 6), dtype=np.float32)
LIKES[:4, [0, 1]] = 1
LIKES[4:, [2, 3]] = 1
TRAIN = sp.csr_matrix(LIKES)
USER_IDS = np.array([f"u{i}" for i in range(8)], dtype=object)
ITEM_IDS = np.array([f"i{i}" for i in range(6)], dtype=object)
ITEM_GENRES = ["A", "A", "B", "B", "A", "B"]
CONFIG = TwoTowerConfig(dim=8, hidden=16, batch_size=8, epochs=60, patience=60, lr=0.02, seed=1)


def feast_frame(view: str, ids: list[str], key: str, **extra: list[object]) -> pd.DataFrame:
    """A frame shaped like Feast's output with full feature names, counts all set to 1."""
    frame = pd.DataFrame({key: ids})
    for column in activity_columns():
        frame[f"{view}__{column}"] = 1.0
    for column, values in extra.items():
        frame[f"{view}__{column}"] = values
    return frame


def user_frame(
    user_ids: list[str], last_items: list[list[str] | None] | None = None
) -> pd.DataFrame:
    """User features, and the streaming `last_items` (null for everyone by default)."""
    affinity = [[1.0, 0.0] if int(u[1:]) < 4 else [0.0, 1.0] for u in user_ids]
    frame = feast_frame(USER_VIEW, user_ids, "user_id", genre_affinity=affinity)
    frame[f"{STREAM_VIEW}__last_items"] = last_items or [None] * len(user_ids)
    return frame


def item_frame() -> pd.DataFrame:
    return feast_frame(
        ITEM_VIEW,
        list(ITEM_IDS),
        "item_id",
        years_since_release=[5.0] * 6,
        genres=ITEM_GENRES,
    )


def tiny_bundle(config: TwoTowerConfig = CONFIG) -> ModelBundle:
    users = user_frame(list(USER_IDS))
    items = item_frame()
    spec = FeatureSpec.fit(users, items, text_dim=2)
    text = np.zeros((6, 2), dtype=np.float32)
    item_features = spec.item_vectors(items, text)
    examples = TrainingExamples.from_matrix(TRAIN, spec.user_vectors(users))
    result = train_two_tower(examples, TRAIN, item_features, config, progress=False)
    return ModelBundle(
        model=result.model,
        config=config,
        spec=spec,
        user_ids=USER_IDS,
        item_ids=ITEM_IDS,
        history=TRAIN,
        item_popularity=np.asarray(TRAIN.sum(axis=0)).ravel(),
        index=RetrievalIndex.build(item_vectors_of(result.model)),
        metadata={"tenants": ["shop"]},
    )


DAY = pd.Timestamp("2024-03-01", tz="UTC")
CUTOFFS = TemporalCutoffs(DAY + pd.Timedelta(days=1), DAY + pd.Timedelta(days=2))
# (user, item, day): the genre-A users u0-u2 and genre-B users u4-u6 train on day 0 and go on
# to the cold items i4 / i5; u3 and u7 have labels only on day 2, the test part.
LABELS = [
    *((f"u{u}", f"i{i}", 0) for u in (0, 1, 2) for i in (0, 1)),
    *((f"u{u}", f"i{i}", 0) for u in (4, 5, 6) for i in (2, 3)),
    ("u0", "i4", 1),
    ("u1", "i4", 1),
    ("u4", "i5", 1),
    ("u5", "i5", 1),
    ("u2", "i4", 2),
    ("u6", "i5", 2),
    ("u3", "i0", 2),
    ("u3", "i1", 2),
    ("u7", "i2", 2),
    ("u7", "i3", 2),
]


def tiny_training_inputs() -> TrainingInputs:
    """`LABELS` as a training set: features as `user_frame` gives them, split at `CUTOFFS`,
    in a catalog of 16 items (top-10 lists need ten unseen ones), i6-i15 never labelled."""
    item_ids = [f"i{i}" for i in range(16)]
    genres = [*ITEM_GENRES, *(["A", "B"] * 5)]
    catalog = feast_frame(
        ITEM_VIEW, item_ids, "item_id", years_since_release=[5.0] * 16, genres=genres
    )
    users = [user for user, _, _ in LABELS]
    examples = user_frame(users)
    examples["item_id"] = [item for _, item, _ in LABELS]
    examples["tenant_id"] = "shop"
    examples["event_timestamp"] = [
        DAY + pd.Timedelta(days=day, minutes=n) for n, (_, _, day) in enumerate(LABELS)
    ]
    examples["split"] = CUTOFFS.part_of(examples["event_timestamp"]).to_numpy()
    snapshots = pd.concat(
        [
            user_frame(list(USER_IDS)).assign(as_of=as_of)
            for as_of in (CUTOFFS.valid_start, CUTOFFS.test_start)
        ],
        ignore_index=True,
    )
    return TrainingInputs(
        examples=examples,
        user_snapshots=snapshots,
        items=catalog,
        text_embeddings=np.zeros((len(catalog), 2), dtype=np.float32),
        cutoffs=CUTOFFS,
    )
