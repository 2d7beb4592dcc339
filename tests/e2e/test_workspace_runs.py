"""`make demo`'s runs are workspace runs: `dagster dev` lists them under their job and
re-executes them from the UI's own GraphQL mutation."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import VALIDATE_CATALOGS_JOB
from assets.partitions import TENANTS
from drivers.dagster_runs import WorkspaceJobs
from drivers.demo import ONE_PROCESS, PARTITION_TAG, QUIET_LOGS
from drivers.launcher import PROJECT_ROOT
from recloop.settings import Settings
from tests.conftest import TINY_TENANT, write_tiny_log
from tests.dagster_dev import dagster_dev

REEXECUTE = """
mutation ($parent: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parent, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
RUN_STATUS = """
query ($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""
JOB_RUNS = """
query ($job: String!) {
  pipelineOrError(params: {pipelineName: $job, repositoryName: "__repository__",
                           repositoryLocationName: "recloop"}) {
    __typename
    ... on Pipeline { runs { runId } }
  }
}"""


def graphql(url: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A tiny raw log and a Dagster home set up as the Makefile sets them up."""
    data_dir = tmp_path / "data"
    write_tiny_log(data_dir)
    home = data_dir / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    settings = Settings(data_dir=data_dir, partitions_start=date(2024, 1, 1))
    env = {**settings.to_env(), "DAGSTER_HOME": str(home)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(PROJECT_ROOT)
    return env


@pytest.fixture
def dagster_url(environment: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with dagster_dev(environment, tmp_path / "dagster_dev.log") as url:
        yield url


def test_a_demo_run_is_listed_under_its_job_and_re_executes(environment, dagster_url) -> None:
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])
    with WorkspaceJobs(instance, PROJECT_ROOT / "workspace.yaml", ONE_PROCESS) as jobs:
        first = jobs.run(VALIDATE_CATALOGS_JOB, QUIET_LOGS, {PARTITION_TAG: TINY_TENANT})
    assert first.success, first.failures
    assert instance.get_run_by_id(first.run_id).remote_job_origin is not None

    launched = graphql(dagster_url, REEXECUTE, {"parent": first.run_id})["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    again = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    status = ""
    while status not in ("SUCCESS", "FAILURE", "CANCELED") and time.monotonic() < deadline:
        time.sleep(2)
        status = graphql(dagster_url, RUN_STATUS, {"id": again})["runOrError"]["status"]
    assert status == "SUCCESS"
    rerun = instance.get_run_by_id(again)
    assert rerun.parent_run_id == first.run_id and rerun.tags[PARTITION_TAG] == TINY_TENANT

    job = graphql(dagster_url, JOB_RUNS, {"job": VALIDATE_CATALOGS_JOB})["pipelineOrError"]
    assert {first.run_id, again} <= {run["runId"] for run in job["runs"]}
