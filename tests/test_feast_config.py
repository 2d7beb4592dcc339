"""The Feast configuration recloop builds matches what the Feast CLI reads from the same YAML."""

from pathlib import Path

import ibis
import pytest
from feast.repo_config import load_repo_config as feast_load_repo_config

from feature_repo.store import (
    REPO_DIR,
    config_file,
    load_repo_config,
    open_feature_store,
    redis_url_from_feast,
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
