"""dbt-duckdb models as Dagster assets; dbt tests become asset checks."""

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from assets.automation import FRESH_FEATURES
from assets.resources import RecloopResource
from recloop.settings import DATA_DIR_ENV, Settings

# Dagster concurrency pool of every step that opens the DuckDB warehouse (DuckDB allows one writer per database file).
WAREHOUSE_POOL = "duckdb_warehouse"
DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
# The dbt beside this interpreter, so a virtualenv works without being on PATH.
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


@contextmanager
def data_dir_environment(data_dir: str) -> Iterator[None]:
    """dbt reads the data directory with env_var(); point it at this run's directory."""
    previous = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = data_dir
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = previous


def dbt_cli_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


if os.getenv("DAGSTER_IS_DEV_CLI"):
    # Like DbtProject.prepare_if_dev, but with this venv's dbt: `dagster dev` re-parses
    # the project on every code-location reload, so model edits show up in the graph.
    with data_dir_environment(str(Settings.from_env().data_dir)):
        dbt_cli_resource().cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()

if not dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"{dbt_project.manifest_path} is missing: run `make install` "
        "(it runs `dbt parse`) before loading the Dagster definitions"
    )


class RecloopDbtTranslator(DagsterDbtTranslator):
    """Asset keys are bare model names; sources map to the validation assets; groups are folders."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        return dg.AssetKey(dbt_resource_props["name"])

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        """Rebuild a model once its inputs changed (the features_automation sensor acts)."""
        return FRESH_FEATURES

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        if dbt_resource_props["resource_type"] == "model" and len(fqn) > 2:
            return fqn[1]
        return "staging"


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=RecloopDbtTranslator(),
    # One writer per DuckDB file: runs that touch the warehouse take turns.
    pool=WAREHOUSE_POOL,
)
def recloop_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, recloop: RecloopResource
):
    layout = recloop.layout()
    layout.warehouse.parent.mkdir(parents=True, exist_ok=True)
    layout.marts.mkdir(parents=True, exist_ok=True)
    with data_dir_environment(str(recloop.settings().data_dir)):
        yield from dbt.cli(["build"], context=context).stream()
