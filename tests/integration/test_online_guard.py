"""Re-materializing an older window must never replace newer online values.

Feast's SQLite store overwrites unconditionally (ARCHITECTURE.md, "Upstream gaps recloop guards against"); recloop's trigger
guards it. Feast's Redis store compares timestamps itself. Both are tested for real.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Int64

from feature_repo.store import install_monotonic_guard, open_feature_store, read_online
from recloop.settings import Settings

OLD = datetime(2024, 1, 1, tzinfo=UTC)
NEW = datetime(2024, 1, 5, tzinfo=UTC)


def guarded_store(settings: Settings, marts: Path) -> tuple[FeatureStore, FeatureView]:
    marts.mkdir(parents=True, exist_ok=True)
    path = marts / "scores.parquet"
    pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "score": [1, 2, 7],
            # Microseconds, as dbt writes the marts: DuckDB 2 cannot cast TIMESTAMPTZ_NS.
            "event_timestamp": pd.Series([OLD, NEW, OLD]).astype("datetime64[us, UTC]"),
        }
    ).to_parquet(path)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="scores",
        entities=[user],
        ttl=timedelta(days=30),
        schema=[Field(name="score", dtype=Int64)],
        source=FileSource(name="scores_source", path=str(path), timestamp_field="event_timestamp"),
    )
    store = open_feature_store(settings)
    store.apply([user, view])
    return store, view


def materialize_new_then_old(store: FeatureStore) -> None:
    store.materialize(NEW - timedelta(hours=1), NEW + timedelta(hours=1), feature_views=["scores"])
    store.materialize(OLD - timedelta(hours=1), OLD + timedelta(hours=1), feature_views=["scores"])


def scores(store: FeatureStore, view: FeatureView) -> dict[str, int]:
    frame = read_online(store, view, pd.DataFrame({"user_id": ["u1", "u2"]}))
    return dict(zip(frame["user_id"], frame["score"], strict=True))


def test_unguarded_sqlite_store_loses_the_newer_value(data_dir: Path) -> None:
    store, view = guarded_store(Settings(data_dir=data_dir), data_dir / "marts")
    materialize_new_then_old(store)
    assert scores(store, view) == {"u1": 1, "u2": 7}, (
        "Feast's SQLite gap is fixed upstream: revisit the guard"
    )


def test_guarded_sqlite_store_keeps_the_newer_value(data_dir: Path) -> None:
    store, view = guarded_store(Settings(data_dir=data_dir), data_dir / "marts")
    assert install_monotonic_guard(store, [view]) == ["recloop_scores_keep_newest"]
    materialize_new_then_old(store)
    assert scores(store, view) == {"u1": 2, "u2": 7}


def test_redis_store_keeps_the_newer_value(
    data_dir: Path, redis_url: str, redis_project: str
) -> None:
    settings = Settings(
        data_dir=data_dir, online_store="redis", redis_url=redis_url, feast_project=redis_project
    )
    store, view = guarded_store(settings, data_dir / "marts")
    assert install_monotonic_guard(store, [view]) == []
    materialize_new_then_old(store)
    assert scores(store, view) == {"u1": 2, "u2": 7}
