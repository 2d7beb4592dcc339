"""The scale profile's shared state in PostgreSQL on 127.0.0.1:5432 (`.ci/run` starts
it), in databases of the test's own: the Dagster instance (deploy/scale/dagster.yaml, as
`make` copies it to a new DAGSTER_HOME) holds the runs, event logs and dynamic
partitions of a real pipeline run, and Feast's SQL registry the feature views it applied."""

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
from recloop.settings import DAGSTER_PG_URL_ENV, Settings
from tests.conftest import TINY_TENANT
from tests.integration.test_pipeline import tiny_features_run
from tests.server_fixtures import scratch_database


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
