import getpass
from datetime import date
from pathlib import Path

import pytest

from recloop import settings as settings_module
from recloop.settings import (
    CHAMPION_ALGORITHMS,
    DATA_DIR_ENV,
    ENV_VARIABLES,
    EnvVariable,
    Settings,
    SettingsError,
    actor_from_env,
    api_key_from_env,
)


def test_defaults_resolve_data_dir_to_an_absolute_path() -> None:
    settings = Settings.from_env({})
    assert settings.data_dir == Path("data").resolve()
    assert settings.online_store == "sqlite"
    assert settings.partitions_start is None  # the first day of the raw log
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
    from_the_data = Settings.from_env({"RECLOOP_DATA_DIR": str(tmp_path)})
    assert Settings.from_env(from_the_data.to_env()) == from_the_data


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECLOOP_ONLINE_STORE": "dynamo"}, "RECLOOP_ONLINE_STORE='dynamo'"),
        ({"RECLOOP_PROFILE": "cloud"}, "RECLOOP_PROFILE='cloud'"),
        ({"RECLOOP_TENANT_API_KEYS": "shop=k"}, "RECLOOP_TENANT_API_KEYS: not JSON"),
        ({"RECLOOP_PARTITIONS_START": "yesterday"}, "RECLOOP_PARTITIONS_START='yesterday'"),
        ({"RECLOOP_RELOAD_INTERVAL_S": "soon"}, "RECLOOP_RELOAD_INTERVAL_S='soon'"),
        ({"RECLOOP_RELOAD_INTERVAL_S": "0"}, "expected a positive number"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_HEADER = "| variable | default | meaning |"


def readme_settings_rows(text: str) -> list[tuple[str, str]]:
    """(variable, default cell) of each row of the README's settings table, backticks
    stripped from the variable and kept in the default (`./data`; unset)."""
    lines = text.splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        variable, default, _meaning = (cell.strip() for cell in line.strip("|").split("|", 2))
        rows.append((variable.strip("`"), default))
    return rows


def test_readme_settings_table_lists_exactly_the_declared_variables() -> None:
    in_readme = sorted(
        row for row in readme_settings_rows(README.read_text()) if row[0].startswith("RECLOOP_")
    )
    declared = sorted(
        (v.name, "unset" if v.default is None else f"`{v.default}`") for v in ENV_VARIABLES
    )
    assert in_readme == declared


def test_every_variable_constant_is_declared_once() -> None:
    constants = {value for name, value in vars(settings_module).items() if name.endswith("_ENV")}
    names = [v.name for v in ENV_VARIABLES]
    assert len(names) == len(set(names))
    assert set(names) == constants


@pytest.mark.parametrize("variable", [v for v in ENV_VARIABLES if v.default is not None])
def test_declared_defaults_are_what_an_unset_variable_means(variable: EnvVariable) -> None:
    assert variable.default is not None
    assert Settings.from_env({variable.name: variable.default}) == Settings.from_env({})


def test_api_key_is_optional_and_kept_out_of_repr_and_child_environments() -> None:
    assert Settings.from_env({}).api_key is None
    assert Settings.from_env({"RECLOOP_API_KEY": ""}).api_key is None
    assert api_key_from_env({"RECLOOP_API_KEY": ""}) is None
    settings = Settings.from_env({"RECLOOP_API_KEY": "s3cret"})
    assert settings.api_key == api_key_from_env({"RECLOOP_API_KEY": "s3cret"}) == "s3cret"
    assert "s3cret" not in repr(settings)
    assert "RECLOOP_API_KEY" not in settings.to_env()


def test_the_scale_profile_defaults_to_redis_and_an_explicit_store_wins() -> None:
    scale = Settings.from_env({"RECLOOP_PROFILE": "scale"})
    assert (scale.profile, scale.online_store, scale.request_state) == ("scale", "redis", "redis")
    assert Settings.from_env(scale.to_env()) == scale
    mixed = Settings.from_env({"RECLOOP_PROFILE": "scale", "RECLOOP_ONLINE_STORE": "sqlite"})
    assert (mixed.online_store, mixed.request_state) == ("sqlite", "redis")


def test_several_service_workers_need_request_state_in_redis() -> None:
    assert Settings.from_env({}).service_workers == 1
    with pytest.raises(
        SettingsError, match="RECLOOP_SERVICE_WORKERS=2 needs RECLOOP_REQUEST_STATE=redis"
    ):
        Settings.from_env({"RECLOOP_SERVICE_WORKERS": "2"})
    workers = Settings.from_env({"RECLOOP_SERVICE_WORKERS": "2", "RECLOOP_REQUEST_STATE": "redis"})
    assert (workers.service_workers, workers.request_state) == (2, "redis")
    assert Settings.from_env(workers.to_env()) == workers
    assert (
        Settings.from_env(
            {"RECLOOP_PROFILE": "scale", "RECLOOP_SERVICE_WORKERS": "4"}
        ).service_workers
        == 4
    )
    with pytest.raises(SettingsError, match="RECLOOP_REQUEST_STATE='disk'"):
        Settings.from_env({"RECLOOP_REQUEST_STATE": "disk"})


def test_actor_defaults_to_the_login_name() -> None:
    assert actor_from_env({"RECLOOP_ACTOR": "ci-bot"}) == "ci-bot"
    assert actor_from_env({"RECLOOP_ACTOR": ""}) == getpass.getuser()
    assert actor_from_env({}) == getpass.getuser()


def test_required_variables_must_be_set(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RECLOOP_DATA_DIR: must be set"):
        Settings.from_env({"RECLOOP_DATA_DIR": ""}, required=(DATA_DIR_ENV,))
    settings = Settings.from_env({"RECLOOP_DATA_DIR": str(tmp_path)}, required=(DATA_DIR_ENV,))
    assert settings.data_dir == tmp_path


def test_the_champion_algorithm_is_a_registered_gated_algorithm() -> None:
    from recloop.experiments.algorithms import ALGORITHMS

    assert set(CHAMPION_ALGORITHMS) == set(ALGORITHMS) - {"popularity"}
    assert Settings.from_env({}).champion_algorithm == "multi_stage"
    chosen = Settings.from_env({"RECLOOP_CHAMPION_ALGORITHM": " Two_Tower "})
    assert chosen.champion_algorithm == "two_tower"
    assert Settings.from_env(chosen.to_env()).champion_algorithm == "two_tower"
    with pytest.raises(SettingsError, match="RECLOOP_CHAMPION_ALGORITHM='popularity': expected"):
        Settings.from_env({"RECLOOP_CHAMPION_ALGORITHM": "popularity"})
