"""Entities, sources, feature views and feature services over the dbt marts.

Objects are built by a function of the marts directory, so the data directory
is chosen by the caller (recloop's settings) and never read at import time.
Field lists mirror the columns of `dbt_project/models/marts/*`; a test keeps
them in step with the Parquet files dbt writes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int32, Int64, String

from recloop.feature_vectors import ITEM_VIEW, USER_VIEW, activity_columns

# Offline joins look back this far for the latest feature row. Rows are daily, so
# this only matters when the pipeline stops: features older than this are null.
FEATURE_TTL = timedelta(days=30)


class FeatureRepoObjects(NamedTuple):
    user: Entity
    item: Entity
    user_features_source: FileSource
    item_features_source: FileSource
    user_features: FeatureView
    item_features: FeatureView
    retrieval_v1: FeatureService

    @property
    def views_with_join_keys(self) -> list[tuple[FeatureView, str]]:
        """Each online feature view with the join key of its entity."""
        return [
            (self.user_features, self.user.join_key),
            (self.item_features, self.item.join_key),
        ]

    @property
    def views(self) -> list[FeatureView]:
        return [view for view, _ in self.views_with_join_keys]


def activity_fields() -> list[Field]:
    """Windowed counts, running mean and recency: the columns of the activity_features macro."""
    *counts, mean_rating, recency = activity_columns()
    return [
        *(Field(name=name, dtype=Int64) for name in counts),
        Field(name=mean_rating, dtype=Float64),
        Field(name=recency, dtype=Float64),
    ]


def build_feature_objects(marts_dir: Path) -> FeatureRepoObjects:
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
        entities=[user],
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
        entities=[item],
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
    retrieval_v1 = FeatureService(
        name="retrieval_v1",
        features=[user_features, item_features],
        description="Features of the two-tower retrieval model, version 1.",
    )
    return FeatureRepoObjects(
        user,
        item,
        user_features_source,
        item_features_source,
        user_features,
        item_features,
        retrieval_v1,
    )
