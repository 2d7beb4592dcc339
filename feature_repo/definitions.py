"""Entities, sources, feature views and feature services over the dbt marts.

Objects are built by a function of the marts directory, so the data directory
is chosen by the caller (recloop's settings) and never read at import time.
Field lists mirror the columns of `dbt_project/models/marts/*`; a test keeps
them in step with the Parquet files dbt writes.

`user_features` and `item_features` reach the online store by materialization
from their marts. `user_stream` reaches it only by pushes to `user_stream_push`
from the service (recloop.features.stream_features); its batch source, the
`user_stream_features` mart built by the same function, is never materialized
online: it is the offline and point-in-time truth that the `stream_batch_parity`
check holds the pushed values against, which materializing it would hide.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int32, Int64, String

from recloop.features.feature_vectors import ITEM_VIEW, STREAM_VIEW, USER_VIEW, activity_columns
from recloop.features.stream_features import WINDOW

STREAM_PUSH_SOURCE = "user_stream_push"
STREAM_MART = "user_stream_features"
BATCH_LISTS_VIEW = "batch_lists"
BATCH_LISTS_PUSH_SOURCE = "batch_lists_push"
BATCH_LISTS_FILE = "batch_lists.parquet"
# A batch list older than this is not served (the service checks; Feast's online TTL is
# not enforced, feast#6821): a refresh schedule that stopped must not serve forever.
BATCH_LISTS_TTL = timedelta(days=7)

# Offline joins look back this far for the latest feature row. Rows are daily, so
# this only matters when the pipeline stops: features older than this are null.
FEATURE_TTL = timedelta(days=30)


# Every view is keyed by tenant first: tenants share user and item ids (independent
# customers do), and one tenant's row must never answer for another's.
TENANT_KEY = "tenant_id"


class FeatureRepoObjects(NamedTuple):
    tenant: Entity
    user: Entity
    item: Entity
    user_features_source: FileSource
    item_features_source: FileSource
    user_stream_source: FileSource
    user_stream_push: PushSource
    user_features: FeatureView
    item_features: FeatureView
    user_stream: FeatureView
    retrieval_v1: FeatureService
    retrieval_v2: FeatureService
    recommendation_list: Entity
    batch_lists_source: FileSource
    batch_lists_push: PushSource
    batch_lists: FeatureView

    @property
    def views_with_join_keys(self) -> list[tuple[FeatureView, tuple[str, ...]]]:
        """Each feature view materialized from its mart, with its entity's join keys."""
        return [
            (self.user_features, (TENANT_KEY, self.user.join_key)),
            (self.item_features, (TENANT_KEY, self.item.join_key)),
        ]

    @property
    def views(self) -> list[FeatureView]:
        """Every online feature view: the materialized ones and the pushed ones."""
        return [
            *(view for view, _ in self.views_with_join_keys),
            self.user_stream,
            self.batch_lists,
        ]


def activity_fields() -> list[Field]:
    """Windowed counts, running mean and recency: the columns of the activity_features macro."""
    *counts, mean_rating, recency = activity_columns()
    return [
        *(Field(name=name, dtype=Int64) for name in counts),
        Field(name=mean_rating, dtype=Float64),
        Field(name=recency, dtype=Float64),
    ]


def build_feature_objects(marts_dir: Path) -> FeatureRepoObjects:
    tenant = Entity(
        name="tenant",
        join_keys=[TENANT_KEY],
        value_type=ValueType.STRING,
        description="A customer of the platform, with users and a catalog of its own.",
    )
    user = Entity(
        name="user",
        join_keys=["user_id"],
        value_type=ValueType.STRING,
        description="A person who receives recommendations.",
    )
    item = Entity(
        name="item",
        join_keys=["item_id"],
        value_type=ValueType.STRING,
        description="A thing that can be recommended.",
    )
    user_features_source = FileSource(
        name="user_features_source",
        path=str(marts_dir / "user_features.parquet"),
        timestamp_field="event_timestamp",
        description="dbt mart user_features (one row per user per day).",
    )
    item_features_source = FileSource(
        name="item_features_source",
        path=str(marts_dir / "item_features.parquet"),
        timestamp_field="event_timestamp",
        description="dbt mart item_features (one row per item per day).",
    )
    user_features = FeatureView(
        name=USER_VIEW,
        entities=[tenant, user],
        ttl=FEATURE_TTL,
        schema=[
            *activity_fields(),
            Field(name="genre_affinity", dtype=Array(Float64)),
            Field(name="top_genre", dtype=String),
        ],
        source=user_features_source,
        online=True,
        tags={"dbt_model": "user_features"},
    )
    item_features = FeatureView(
        name=ITEM_VIEW,
        entities=[tenant, item],
        ttl=FEATURE_TTL,
        schema=[
            *activity_fields(),
            Field(name="release_year", dtype=Int32),
            Field(name="years_since_release", dtype=Float64),
            Field(name="genres", dtype=String),
        ],
        source=item_features_source,
        online=True,
        tags={"dbt_model": "item_features"},
    )
    user_stream_source = FileSource(
        name="user_stream_source",
        path=str(marts_dir / f"{STREAM_MART}.parquet"),
        timestamp_field="event_timestamp",
        description="dbt mart user_stream_features (one row per user per engagement time).",
    )
    user_stream_push = PushSource(
        name=STREAM_PUSH_SOURCE,
        batch_source=user_stream_source,
        description="Rows of recloop.features.stream_features pushed by the service as feedback arrives.",
    )
    user_stream = FeatureView(
        name=STREAM_VIEW,
        entities=[tenant, user],
        # A row describes the hour before its timestamp; older, it is a session that ended.
        ttl=WINDOW,
        schema=[
            Field(name="engagements_1h", dtype=Int64),
            Field(name="last_items", dtype=Array(String)),
        ],
        source=user_stream_push,
        online=True,
        tags={"dbt_model": STREAM_MART},
    )
    retrieval_v1 = FeatureService(
        name="retrieval_v1",
        features=[user_features, item_features],
        description="Features of the two-tower retrieval model, version 1.",
    )
    retrieval_v2 = FeatureService(
        name="retrieval_v2",
        features=[user_features, item_features, user_stream],
        description="Version 1 plus the user's last items from the streaming view (the "
        "recent-history input of the user tower).",
    )
    recommendation_list = Entity(
        name="recommendation_list",
        join_keys=["list_id"],
        value_type=ValueType.STRING,
        description="A precomputed list, named by the experiment variant it serves "
        "('<experiment>:<variant>').",
    )
    batch_lists_source = FileSource(
        name="batch_lists_source",
        path=str(marts_dir / BATCH_LISTS_FILE),
        timestamp_field="event_timestamp",
        description="Batch source of the pushed lists (Feast requires one); lists reach the "
        "online store by push only, and each push is kept under experiments/batch_lists/.",
    )
    batch_lists_push = PushSource(
        name=BATCH_LISTS_PUSH_SOURCE,
        batch_source=batch_lists_source,
        description="Top-k lists of batch-mode experiment variants, pushed on their schedule.",
    )
    batch_lists = FeatureView(
        name=BATCH_LISTS_VIEW,
        entities=[tenant, user, recommendation_list],
        ttl=BATCH_LISTS_TTL,
        schema=[
            Field(name="item_ids", dtype=Array(String)),
            Field(name="scores", dtype=Array(Float64)),
            Field(name="model_version", dtype=String),
        ],
        source=batch_lists_push,
        online=True,
    )
    return FeatureRepoObjects(
        tenant,
        user,
        item,
        user_features_source,
        item_features_source,
        user_stream_source,
        user_stream_push,
        user_features,
        item_features,
        user_stream,
        retrieval_v1,
        retrieval_v2,
        recommendation_list,
        batch_lists_source,
        batch_lists_push,
        batch_lists,
    )
