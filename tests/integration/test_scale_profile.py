"""The scale profile's Dagster instance (deploy/scale/dagster.yaml, as `make` copies it
to a new DAGSTER_HOME): runs, event logs and dynamic partitions of a real pipeline run
in PostgreSQL on 127.0.0.1:5432 (`.ci/run` starts it), in a database of the test's own."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from assets.partitions import TENANTS
from drivers.demo import dagster_database_problem
from drivers.launcher import PROJECT_ROOT
from recloop.data.layout import DataLayout
from recloop.settings import DAGSTER_PG_URL_ENV, Settings
from tests.conftest import TINY_TENANT
from tests.integration.test_pipeline import tiny_features_run

SERVER = "postgresql://postgres@127.0.0.1:5432"


def _admin(statement: str) -> None:
    connection = psycopg2.connect(f"{SERVER}/postgres")
    connection.autocommit = True  # CREATE / DROP DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"recloop_test_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    url = f"{SERVER}/{name}"
    monkeypatch.setenv(DAGSTER_PG_URL_ENV, url)
    yield url
    _admin(f"DROP DATABASE {name} WITH (FORCE)")


def _count(url: str, query: str) -> int:
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def test_pipeline_runs_are_stored_in_postgresql(
    database: str, tiny_log: DataLayout, tiny_settings: Settings, tmp_path: Path
) -> None:
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
        tiny_features_run(tiny_settings, instance)  # validation, dbt, Feast: every check passed
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


def test_make_demo_names_a_missing_or_silent_dagster_database(database: str) -> None:
    assert "set RECLOOP_DAGSTER_PG_URL" in dagster_database_problem(None)
    silent = dagster_database_problem("postgresql://postgres@127.0.0.1:1/dagster")
    assert silent.startswith("the Dagster database at RECLOOP_DAGSTER_PG_URL does not answer")
    assert dagster_database_problem(database) is None
