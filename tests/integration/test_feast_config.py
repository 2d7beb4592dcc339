"""The Feast configuration recloop builds matches what the Feast CLI reads from the same YAML."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import ibis
import pandas as pd
import pytest
from feast.data_source import PushMode
from feast.repo_config import load_repo_config as feast_load_repo_config

from feature_repo.definitions import STREAM_PUSH_SOURCE, build_feature_objects
from feature_repo.store import (
    REPO_DIR,
    config_file,
    install_monotonic_guard,
    load_repo_config,
    open_feature_store,
    read_online_as_of,
    redis_url_from_feast,
    without_stale_values,
)
from recloop.settings import Settings


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_recloop_and_feast_cli_read_the_same_config(
    online_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, online_store=online_store, redis_url="cache:6380")
    ours = load_repo_config(settings)
    monkeypatch.setenv("RECLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RECLOOP_REDIS_URL", "cache:6380")
    theirs = feast_load_repo_config(REPO_DIR, config_file(settings))
    assert ours.online_store.type == theirs.online_store.type == online_store
    assert ours.registry.path == theirs.registry.path == f"sqlite:///{tmp_path}/feast/registry.db"
    if online_store == "sqlite":
        assert ours.online_store.path == str(tmp_path / "feast" / "online.db")
    else:
        assert ours.online_store.connection_string == "cache:6380"


def test_redis_connection_strings_become_urls() -> None:
    assert redis_url_from_feast("127.0.0.1:6379") == "redis://127.0.0.1:6379/0"
    assert (
        redis_url_from_feast("cache:6380,db=2,password=s3cret,ssl=true")
        == "rediss://:s3cret@cache:6380/2"
    )


def test_opening_the_store_turns_off_duckdb_file_cache(tmp_path: Path) -> None:
    ibis.get_backend().raw_sql("SET enable_external_file_cache = true")
    open_feature_store(Settings(data_dir=tmp_path))
    (setting,) = (
        ibis.get_backend()
        .raw_sql("SELECT current_setting('enable_external_file_cache')")
        .fetchone()
    )
    assert setting is False


def test_stream_view_is_fed_by_pushes_that_keep_the_newest_row(tmp_path: Path) -> None:
    """`user_stream` reads its mart offline, is never materialized, and a push of an older
    row (a retry that lost a race) goes through the same SQLite guard as materialization."""
    settings = Settings(data_dir=tmp_path)
    objects = build_feature_objects(tmp_path / "marts")
    assert objects.user_stream.stream_source.name == STREAM_PUSH_SOURCE
    assert objects.user_stream.batch_source.path == str(
        tmp_path / "marts" / "user_stream_features.parquet"
    )
    assert objects.user_stream not in [view for view, _ in objects.views_with_join_keys]
    store = open_feature_store(settings)
    store.apply(list(objects))
    assert "recloop_user_stream_keep_newest" in install_monotonic_guard(store, objects.views)

    newer = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    for at, count, items in ((newer, 3, ["b", "a"]), (newer - timedelta(minutes=1), 2, ["a"])):
        frame = pd.DataFrame(
            {
                "tenant_id": ["shop"],
                "user_id": ["u1"],
                "event_timestamp": [at],
                "engagements_1h": [count],
                "last_items": [items],
            }
        )
        store.push(STREAM_PUSH_SOURCE, frame, to=PushMode.ONLINE)
    keys = pd.DataFrame({"tenant_id": "shop", "user_id": ["u1", "nobody"]})
    online = read_online_as_of(store, objects.user_stream, keys)
    assert online["engagements_1h"].tolist()[0] == 3
    assert online["last_items"].tolist()[0] == ["b", "a"]
    # Feast keeps whole seconds online.
    assert online["event_timestamp"].tolist()[0] == pd.Timestamp(newer).floor("s")
    assert pd.isna(online["event_timestamp"].tolist()[1])


def test_stale_values_read_online_become_null_as_in_the_pit_join() -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    fresh, stale = (now - timedelta(minutes=59)).timestamp(), (now - timedelta(hours=2)).timestamp()
    old = (now - timedelta(days=31)).timestamp()
    features = {
        "user_id": ["a", "b", "c"],
        "user_stream__last_items": [["x"], ["y"], None],
        "user_stream__last_items__ts": [int(fresh), int(stale), 0],
        "user_features__mean_rating": [4.0, 3.0, None],
        "user_features__mean_rating__ts": [int(stale), int(old), 0],
    }
    ttls = {"user_stream": timedelta(hours=1), "user_features": timedelta(days=30)}
    assert without_stale_values(features, ttls, now) == {
        "user_id": ["a", "b", "c"],
        "user_stream__last_items": [["x"], None, None],
        "user_features__mean_rating": [4.0, None, None],
    }
    assert without_stale_values(features, {"user_stream": timedelta(hours=1)}, now)[
        "user_features__mean_rating"
    ] == [4.0, 3.0, None]
