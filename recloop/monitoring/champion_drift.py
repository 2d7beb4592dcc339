"""The champion's drift, read from the data directory and the online store, and what it asks for.

`current_drift` assembles what `recloop.monitoring.drift_report.drift_report` judges:
the champion's served events, its users' online features then and now, the clicked
items' genres. `drift_retrain` turns a report and the sensor's memory of the episode
into "wait" or "retrain now". The Dagster asset and sensor (assets.monitoring) only
call these and shape the result for the UI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recloop.data.layout import DataLayout, write_json_atomic, write_parquet_atomic
from recloop.data.validated_log import item_genres, served_events
from recloop.features.feature_vectors import USER_VIEW, activity_columns, feature_refs
from recloop.monitoring.drift import FeatureDrift, feature_drift
from recloop.monitoring.drift_report import (
    DriftReport,
    MonitoringConfig,
    drift_report,
    impressions_since,
    served_windows,
)
from recloop.registry.model_registry import Registry

if TYPE_CHECKING:
    # Only a type here: importing Feast costs seconds in processes that never open a store.
    from feast import FeatureStore

# User features the drift sensor compares: those the world moves (ratings). Click and
# impression counts are left out because the service's own lists drive them (a closed
# loop shifts them by itself), recency because it moves with the clock every midnight.
NUMERIC_USER_FEATURES = [
    f"{USER_VIEW}__{column}"
    for column in activity_columns()
    if column.startswith("rating_count") or column == "mean_rating"
]
FEATURE_SAMPLE = 500


@dataclass(frozen=True)
class ChampionState:
    """What the monitors need to know about the current champion."""

    version: str | None
    tenant: str
    training_set: str | None
    data_end: pd.Timestamp | None

    @classmethod
    def of(cls, registry: Registry, tenant: str | None = None) -> ChampionState:
        """`tenant`'s champion (with one tenant, it may go unnamed)."""
        version = registry.champion(tenant)
        metadata = registry.metadata(version) if version else {}
        return cls(
            version=version,
            tenant=registry.tenant_of(version) if version else "",
            training_set=metadata.get("training_set"),
            data_end=pd.Timestamp(metadata["data_end"]) if "data_end" in metadata else None,
        )


def sampled_activity_features(
    store: FeatureStore, tenant_id: str, user_ids: list[str]
) -> pd.DataFrame:
    """Online activity features of a seeded sample of `tenant_id`'s `user_ids`, one row
    per user."""
    users = sorted(set(user_ids))
    sample = sorted(
        np.random.default_rng(0).choice(users, min(FEATURE_SAMPLE, len(users)), replace=False)
    )
    online = store.get_online_features(
        features=feature_refs(USER_VIEW, activity_columns()),
        entity_rows=[{"tenant_id": tenant_id, "user_id": user} for user in sample],
        full_feature_names=True,
    ).to_dict()
    return pd.DataFrame(
        {
            name: pd.to_numeric(pd.Series(online[name], dtype=object))
            for name in NUMERIC_USER_FEATURES
        }
    )


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy(float) for name in NUMERIC_USER_FEATURES}


def serving_feature_reference(
    layout: DataLayout,
    store: FeatureStore,
    version: str,
    tenant_id: str,
    reference_users: list[str],
) -> pd.DataFrame:
    """The online features of the users the champion served in its reference window,
    read once and kept: later windows compare with what serving saw then, not with
    today's values of the same users."""
    path = layout.serving_features_reference(version)
    if not path.exists():
        write_parquet_atomic(sampled_activity_features(store, tenant_id, reference_users), path)
    return pd.read_parquet(path)


def training_serving_skew(training_set: str | None, current: pd.DataFrame) -> list[FeatureDrift]:
    """Training examples' user features (as of each label) against what serving reads now.
    Reported, never a retraining trigger: on MovieLens most labels fall on a user's first
    day, so 75 % of training rows have no features while served users all do."""
    if not training_set:
        return []
    path = Path(training_set) / "examples.parquet"
    if not set(NUMERIC_USER_FEATURES) <= set(pq.read_schema(path).names):
        return []  # a labels-only training set (EASE, multi-stage): its model reads no features
    examples = pd.read_parquet(path, columns=[*NUMERIC_USER_FEATURES, "split"])
    train = examples.loc[examples["split"] == "train"]
    return feature_drift(_columns(train), _columns(current))


@dataclass(frozen=True)
class CurrentDrift:
    report: DriftReport
    # the champion's tenant's served impressions and engagements, every model's
    events: pd.DataFrame
    skew: list[FeatureDrift]


def current_drift(
    layout: DataLayout,
    registry: Registry,
    store: FeatureStore,
    window: int,
    tenant: str | None = None,
) -> CurrentDrift | None:
    """`tenant`'s champion's drift report on the validated log, its served events and the
    training/serving skew table (None without a champion)."""
    champion = ChampionState.of(registry, tenant)
    if champion.version is None:
        return None
    config = MonitoringConfig(window=window)
    events = served_events(layout, champion.tenant)
    windows = served_windows(events, champion.version, config.window)
    features, skew = (None, None), []
    if windows is not None:
        reference_users, recent_users = (w["user_id"].astype(str).tolist() for w in windows)
        reference = serving_feature_reference(
            layout, store, champion.version, champion.tenant, reference_users
        )
        current = sampled_activity_features(store, champion.tenant, recent_users)
        features = (_columns(reference), _columns(current))
        skew = training_serving_skew(champion.training_set, current)
    report = drift_report(
        events, champion.version, item_genres(layout, champion.tenant), config, *features
    )
    return CurrentDrift(report, events, skew)


def record_episode(layout: DataLayout, report: DriftReport, since: str) -> None:
    """Write when and why drift was first detected for this champion (once; kept for
    audits and the loop's timeline)."""
    path = layout.drift_episode(report.model_version)
    if not path.exists():
        write_json_atomic(
            {
                "champion": report.model_version,
                "detected_at": datetime.now(UTC).isoformat(),
                "drift_since": since,
                "window": report.window_id,
                "reasons": list(report.reasons),
            },
            path,
        )


def summary(report: DriftReport, window: int) -> str:
    if not report.enough_data:
        return f"{report.model_version}: waiting for 2 x {window:,} impressions to compare"
    return (
        f"{report.model_version}: CTR {report.reference.ctr:.4f} -> {report.recent.ctr:.4f}, "
        f"score PSI {report.score_psi:.3f}, click-genre JS {report.click_genre_js:.3f}"
    )


@dataclass(frozen=True)
class DriftRetrain:
    """The drift sensor's verdict: `retrain` or a `skip_reason`, and its next cursor."""

    cursor: str
    skip_reason: str | None = None
    since: str | None = None
    reasons: str = ""

    @property
    def retrain(self) -> bool:
        return self.skip_reason is None


def drift_retrain(
    drift: CurrentDrift, cursor: str | None, window: int, post_drift_impressions: int
) -> DriftRetrain:
    """Retrain once per champion when its drift report says the world moved, after
    `post_drift_impressions` more impressions show the new behaviour: retraining at the
    moment of detection would learn from data from before the drift. The cursor keeps
    when the episode began, so every later tick counts from the same moment."""
    report = drift.report
    previous = json.loads(cursor) if cursor else {}
    if not report.drifted:
        return DriftRetrain(
            cursor=json.dumps({"champion": report.model_version, "window": report.window_id}),
            skip_reason=summary(report, window),
        )
    same_episode = previous.get("champion") == report.model_version and previous.get("drift_since")
    since = previous["drift_since"] if same_episode else report.recent.first_event
    next_cursor = json.dumps(
        {"champion": report.model_version, "window": report.window_id, "drift_since": since}
    )
    reasons = "; ".join(report.reasons)
    collected = impressions_since(drift.events, report.model_version, pd.Timestamp(since))
    if collected < post_drift_impressions:
        return DriftRetrain(
            cursor=next_cursor,
            skip_reason=f"drift on {report.model_version} since {since} ({reasons}); "
            f"collecting post-drift data: {collected:,} of {post_drift_impressions:,} impressions",
            since=since,
            reasons=reasons,
        )
    return DriftRetrain(cursor=next_cursor, since=since, reasons=reasons)
