"""The scale profile's shared state in PostgreSQL on 127.0.0.1:5432 and Redis on
127.0.0.1:6379 (`.ci/run` starts them), in databases and key spaces of the test's own:
the Dagster instance (deploy/scale/dagster.yaml, as `make` copies it to a new
DAGSTER_HOME) holds the runs, event logs and dynamic partitions of a real pipeline run,
and Feast's SQL registry the feature views it applied; two tenants' whole chain, from
the raw log to each tenant's champion served, runs with every store moved off the data
directory."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from assets.partitions import TENANTS
from drivers.demo import dagster_database_problem
from drivers.launcher import PROJECT_ROOT
from feature_repo.definitions import build_feature_objects
from feature_repo.store import open_feature_store
from recloop.data.layout import DataLayout
from recloop.data.shared_state import redis_client
from recloop.registry.model_registry import Registry
from recloop.settings import DAGSTER_PG_URL_ENV, Settings
from services.runtime import RecloopRuntime
from tests.conftest import TINY_TENANT
from tests.integration.test_pipeline import tiny_features_run
from tests.server_fixtures import scratch_database
from tests.two_tenants import TENANTS as TENANT_NAMES
from tests.two_tenants import catalog, two_tenant_system


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The Dagster database, named where deploy/scale/dagster.yaml reads it."""
    with scratch_database() as url:
        monkeypatch.setenv(DAGSTER_PG_URL_ENV, url)
        yield url


@pytest.fixture
def feast_database() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def _count(url: str, query: str) -> int:
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def test_pipeline_runs_and_feast_registry_are_stored_in_postgresql(
    database: str,
    feast_database: str,
    tiny_log: DataLayout,
    tiny_settings: Settings,
    tmp_path: Path,
) -> None:
    registry_url = feast_database.replace("postgresql://", "postgresql+psycopg2://")
    settings = replace(tiny_settings, feast_registry_url=registry_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "scale" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        assert [type(s).__name__ for s in storages] == [
            "PostgresRunStorage",
            "PostgresEventLogStorage",
            "PostgresScheduleStorage",
        ]
        tiny_features_run(settings, instance)  # validation, dbt, Feast: every check passed
        runs = instance.get_runs()

    # What another process (the webserver, the daemon, a run worker) reads: the database.
    assert _count(database, "select count(*) from runs where status = 'SUCCESS'") == len(runs) >= 3
    materialized = _count(
        database,
        "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'",
    )
    assert materialized > 10
    partitions = (
        f"select count(*) from dynamic_partitions where partitions_def_name = '{TENANTS.name}'"
    )
    assert _count(database, partitions) == 1
    with dg.DagsterInstance.from_config(str(home)) as reopened:
        assert reopened.get_dynamic_partitions(TENANTS.name) == [TINY_TENANT]
    # Feast's registry: every view the features run applied, and no SQLite registry file.
    views = {view.name for view in build_feature_objects(DataLayout(settings.data_dir).marts).views}
    applied = {view.name for view in open_feature_store(settings).list_feature_views()}
    assert views <= applied
    assert _count(feast_database, "select count(*) from feature_views") >= len(views)
    assert not (settings.data_dir / "feast" / "registry.db").exists()


def test_make_demo_names_a_missing_or_silent_dagster_database(database: str) -> None:
    assert "set RECLOOP_DAGSTER_PG_URL" in dagster_database_problem(None)
    silent = dagster_database_problem("postgresql://postgres@127.0.0.1:1/dagster")
    assert silent.startswith("the Dagster database at RECLOOP_DAGSTER_PG_URL does not answer")
    assert dagster_database_problem(database) is None


def test_two_tenants_train_promote_and_serve_with_every_store_off_the_data_directory(
    database: str,
    feast_database: str,
    redis_url: str,
    redis_project: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "scale" / "dagster.yaml", home / "dagster.yaml")
    stores = {
        "profile": "scale",
        "online_store": "redis",
        "redis_url": redis_url,
        "feast_project": redis_project,
        "feast_registry_url": feast_database.replace("postgresql://", "postgresql+psycopg2://"),
        "request_state": "redis",
    }
    client = redis_client(redis_url)
    with (
        scratch_database() as registry_url,
        two_tenant_system(tmp_path, home, registry_url=registry_url, **stores) as system,
    ):
        for tenant in TENANT_NAMES:
            assert system.train(tenant).success, tenant
        champions = Registry.of(system.settings).champions()
        assert set(champions) == set(TENANT_NAMES)
        assert _count(registry_url, "select count(*) from recloop_decisions") == len(TENANT_NAMES)
        assert not (system.settings.data_dir / "registry" / "promotions.jsonl").exists()
        assert _count(database, "select count(*) from runs where status = 'SUCCESS'") >= 3
        # Feast's online rows are in Redis, under this test's project.
        assert any(client.scan_iter(match=f"*{redis_project}", count=1000))

        # The service, configured by the same settings, serves each tenant's champion.
        for name, value in system.settings.to_env().items():
            monkeypatch.setenv(name, value)
        runtime = RecloopRuntime()
        assert runtime.reload() == champions
        for tenant in TENANT_NAMES:
            answer = runtime.recommend(tenant, "1", 5, [], {})
            assert answer.model_version == champions[tenant] and len(answer.items) == 5
            assert set(item.item_id for item in answer.items) <= catalog(tenant)
            assert runtime.served.get(answer.request_id).tenant_id == tenant  # in Redis
    for key in client.scan_iter(match=f"recloop:{redis_project}:*", count=1000):
        client.delete(key)
