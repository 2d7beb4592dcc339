from datetime import date
from pathlib import Path

import pytest

from recloop.settings import Settings, SettingsError


def test_defaults_resolve_data_dir_to_an_absolute_path() -> None:
    settings = Settings.from_env({})
    assert settings.data_dir == Path("data").resolve()
    assert settings.online_store == "sqlite"
    assert settings.partitions_start == date(1997, 9, 1)
    assert settings.reload_interval_s == 2.0


def test_environment_overrides(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "RECLOOP_DATA_DIR": str(tmp_path),
            "RECLOOP_ONLINE_STORE": "Redis",
            "RECLOOP_REDIS_URL": "redis.internal:6380",
            "RECLOOP_PARTITIONS_START": "2025-01-01",
            "RECLOOP_RELOAD_INTERVAL_S": "0.5",
        }
    )
    assert (settings.data_dir, settings.online_store, settings.redis_url) == (
        tmp_path,
        "redis",
        "redis.internal:6380",
    )
    assert settings.partitions_start == date(2025, 1, 1)
    assert settings.reload_interval_s == 0.5
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECLOOP_ONLINE_STORE": "dynamo"}, "RECLOOP_ONLINE_STORE='dynamo'"),
        ({"RECLOOP_PARTITIONS_START": "yesterday"}, "RECLOOP_PARTITIONS_START='yesterday'"),
        ({"RECLOOP_RELOAD_INTERVAL_S": "soon"}, "RECLOOP_RELOAD_INTERVAL_S='soon'"),
        ({"RECLOOP_RELOAD_INTERVAL_S": "0"}, "expected a positive number"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
