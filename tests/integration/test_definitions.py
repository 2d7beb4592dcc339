"""The code location loads, its graph is the documented lineage, and tenants are discovered."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.definitions import FEATURES_JOB, build_definitions
from assets.partitions import TENANTS, event_key, split_event_key
from assets.resources import RecloopResource
from assets.sensors import VALIDATE_CATALOGS_JOB, VALIDATE_EVENTS_JOB, tenant_discovery_sensor
from drivers.demo import lineage
from recloop.settings import Settings
from tests.conftest import write_tiny_log

REPO = Path(__file__).resolve().parents[2]


def test_definitions_validate(tiny_settings) -> None:
    defs = build_definitions(tiny_settings)
    dg.Definitions.validate_loadable(defs)
    for job in (VALIDATE_EVENTS_JOB, VALIDATE_CATALOGS_JOB, FEATURES_JOB):
        assert defs.resolve_job_def(job) is not None


def test_every_job_sensor_and_schedule_says_what_it_does(tiny_settings) -> None:
    defs = build_definitions(tiny_settings)
    undescribed = [
        f"{kind} {item.name}"
        for kind, items in (
            ("sensor", defs.sensors or []),
            ("schedule", defs.schedules or []),
            ("job", [j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]),
        )
        for item in items
        if not item.description
    ]
    assert undescribed == []


def test_lineage_runs_from_raw_events_to_the_champion_model(tiny_settings) -> None:
    path = lineage(build_definitions(tiny_settings))
    assert path[0] == "raw_events" and path[-1] == "champion_model"
    for earlier, later in [
        ("validated_events", "stg_events"),
        ("stg_events", "int_user_daily_activity"),
        ("int_user_daily_activity", "user_features"),
        ("user_features", "feast_feature_views"),
        ("feast_feature_views", "feast_online_store"),
        ("feast_feature_views", "training_set"),
        ("training_set", "model_candidate"),
        ("model_candidate", "champion_model"),
        ("feast_online_store", "champion_model"),
    ]:
        assert path.index(earlier) < path.index(later)


def test_dbt_tests_are_asset_checks(tiny_settings) -> None:
    graph = build_definitions(tiny_settings).resolve_asset_graph()
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert ("validated_events", "rows_conserved") in checks
    assert ("feast_online_store", "online_offline_parity") in checks
    assert any(
        asset == "user_features" and name.startswith("unique_combination") for asset, name in checks
    )


def test_partition_keys_round_trip() -> None:
    from datetime import date

    assert split_event_key(event_key("shop", date(2024, 3, 1))) == ("shop", date(2024, 3, 1))


def test_workspace_loads_as_dagster_dev_loads_it(data_dir, tmp_path) -> None:
    """As under `dagster dev` (which re-parses dbt), and without the venv on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "RECLOOP_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(home),
        "DAGSTER_IS_DEV_CLI": "1",
        "PATH": path,
    }
    completed = subprocess.run(
        [str(Path(bin_dir) / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_tenant_sensor_adds_new_tenants_once(data_dir, instance) -> None:
    write_tiny_log(data_dir, tenant="shop")
    write_tiny_log(data_dir, tenant="news")
    resources = {"recloop": RecloopResource.from_settings(Settings(data_dir=data_dir))}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = tenant_discovery_sensor(context)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == ["news", "shop"]
    instance.add_dynamic_partitions(TENANTS.name, list(request.partition_keys))
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        assert isinstance(tenant_discovery_sensor(context), dg.SkipReason)
