"""Point-in-time training inputs from Feast's offline store.

Every feature value comes from `get_historical_features`, so a label only sees
features stamped at or before its own time (Feast's PIT join; tests/integration/test_pit_oracle.py
checks that join against a brute-force oracle). The streaming view `user_stream` is
joined as of a microsecond before: a label's own engagement (and any stamped with it)
is not yet in the features, as it was not when the service ranked the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.errors import FeastObjectNotFoundException

from feature_repo.definitions import TENANT_KEY
from recloop.data.layout import DataLayout
from recloop.data.validated_log import catalog_item_keys, interactions
from recloop.features.feature_vectors import (
    ITEM_COLUMNS,
    ITEM_VIEW,
    STREAM_COLUMNS,
    STREAM_VIEW,
    USER_COLUMNS,
    USER_VIEW,
    feature_refs,
)
from recloop.features.stream_features import LOOKUP_BEFORE
from recloop.features.text_embeddings import embedding_matrix
from recloop.features.training_set import TemporalCutoffs, label_entities, temporal_cutoffs
from recloop.training.candidate import TrainingInputs, save_inputs

FEATURE_SERVICE = "retrieval_v2"


def uses_stream(store: FeatureStore, feature_service: str) -> bool:
    """Whether the two-tower inputs of `feature_service` include the streaming view.

    The model reads `user_features` and `item_features` in any case; a service without
    `user_stream` (retrieval_v1) trains a model without the recent-items input.
    """
    try:
        service = store.get_feature_service(feature_service)
    except FeastObjectNotFoundException as exc:
        raise ValueError(
            f"feature service {feature_service!r} is not in the Feast registry "
            "(feature_repo/definitions.py; run the build_features job to apply it)"
        ) from exc
    views = {projection.name for projection in service.feature_view_projections}
    missing = {USER_VIEW, ITEM_VIEW} - views
    if missing:
        raise ValueError(
            f"feature service {feature_service!r} lacks {sorted(missing)}: the two-tower "
            "model needs user_features and item_features"
        )
    return STREAM_VIEW in views


def historical(
    store: FeatureStore, entities: pd.DataFrame, view: str, columns: Sequence[str]
) -> pd.DataFrame:
    """Features of `view` as of each entity row's `event_timestamp`, in the input's row order."""
    rows = entities.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    joined = store.get_historical_features(
        entity_df=rows, features=feature_refs(view, columns), full_feature_names=True
    ).to_df()
    joined = joined.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True)
    return joined


def user_features_as_of(
    store: FeatureStore, entities: pd.DataFrame, with_stream: bool = True
) -> pd.DataFrame:
    """`user_features` as of each row's `event_timestamp` and (`with_stream`) `user_stream`
    as of just before it: every user column the model reads, in the input's row order."""
    joined = historical(store, entities, USER_VIEW, USER_COLUMNS)
    if not with_stream:
        return joined
    earlier = entities.assign(event_timestamp=entities["event_timestamp"] - LOOKUP_BEFORE)
    stream = historical(store, earlier, STREAM_VIEW, STREAM_COLUMNS)
    for column in STREAM_COLUMNS:
        name = f"{STREAM_VIEW}__{column}"
        joined[name] = stream[name].to_numpy()
    return joined


def daily_features_as_of(store: FeatureStore) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """`user_features_as_of` without the stream view, bound to `store`: the point-in-time
    join off-policy replays read (they rebuild stream features from the log)."""
    return partial(user_features_as_of, store, with_stream=False)


def labelled_examples(
    store: FeatureStore,
    interactions: pd.DataFrame,
    valid_fraction: float,
    test_fraction: float,
    holdout_since: pd.Timestamp | None = None,
    with_stream: bool = True,
) -> tuple[pd.DataFrame, TemporalCutoffs]:
    """Positive labels with user features as of each label, and a `split` column by time
    (`recloop.features.training_set.temporal_cutoffs`)."""
    labels = label_entities(interactions)
    cutoffs = temporal_cutoffs(
        labels["event_timestamp"], valid_fraction, test_fraction, holdout_since
    )
    examples = user_features_as_of(store, labels, with_stream)
    examples["split"] = cutoffs.part_of(examples["event_timestamp"]).to_numpy()
    return examples, cutoffs


def user_snapshots(
    store: FeatureStore, users: pd.DataFrame, cutoffs: TemporalCutoffs, with_stream: bool = True
) -> pd.DataFrame:
    """Each user's features as of each cut-off (column `as_of`); `users` has `tenant_id`
    and `user_id` (Feast's key of the user views)."""
    keys = (
        users[[TENANT_KEY, "user_id"]]
        .astype(str)
        .drop_duplicates()
        .sort_values(["user_id", TENANT_KEY])
        .reset_index(drop=True)
    )
    entities = pd.concat(
        [keys.assign(event_timestamp=at) for at in (cutoffs.valid_start, cutoffs.test_start)],
        ignore_index=True,
    )
    entities["event_timestamp"] = entities["event_timestamp"].astype("datetime64[us, UTC]")
    frame = user_features_as_of(store, entities, with_stream).drop(columns=TENANT_KEY)
    return frame.rename(columns={"event_timestamp": "as_of"})


def item_snapshot(store: FeatureStore, catalog: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every catalog item's features as of `as_of`; `catalog` has `tenant_id` and
    `item_id` (Feast's key of the item view)."""
    entities = catalog[[TENANT_KEY, "item_id"]].astype(str).assign(event_timestamp=as_of)
    entities["event_timestamp"] = entities["event_timestamp"].astype("datetime64[us, UTC]")
    return historical(store, entities, ITEM_VIEW, ITEM_COLUMNS).drop(columns=TENANT_KEY)


def build_training_inputs(
    layout: DataLayout,
    tenant: str,
    store: FeatureStore,
    text_embeddings: pd.DataFrame,
    valid_fraction: float,
    test_fraction: float,
    holdout_since: pd.Timestamp | None = None,
    feature_service: str = FEATURE_SERVICE,
) -> tuple[Path, TrainingInputs]:
    """`tenant`'s point-in-time training inputs (its labels, its catalog) from Feast with
    `feature_service`'s views, saved under `training/<content hash>/`: the directory and
    the inputs."""
    with_stream = uses_stream(store, feature_service)
    examples, cutoffs = labelled_examples(
        store,
        interactions(layout, tenant),
        valid_fraction,
        test_fraction,
        holdout_since,
        with_stream,
    )
    items = item_snapshot(store, catalog_item_keys(layout, tenant), cutoffs.valid_start)
    inputs = TrainingInputs(
        examples=examples,
        user_snapshots=user_snapshots(store, examples, cutoffs, with_stream),
        items=items,
        text_embeddings=embedding_matrix(
            text_embeddings.loc[text_embeddings[TENANT_KEY].astype(str) == tenant],
            items["item_id"].tolist(),
        ),
        cutoffs=cutoffs,
    )
    return save_inputs(inputs, layout.training), inputs
