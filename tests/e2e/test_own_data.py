"""`recloop run` (`make pipeline`): the whole chain on a user's own raw log, one command."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from assets.definitions import partitions_start
from drivers.demo import RUNS_OUTPUT
from recloop.data.layout import DataLayout
from recloop.registry.model_registry import Registry
from recloop.settings import Settings
from tests.conftest import TINY_TENANT
from tests.own_log import OwnLogRun, recloop_run


def test_recloop_run_trains_and_promotes_on_a_generated_log(own_log_run: OwnLogRun) -> None:
    completed, data_dir = own_log_run.completed, own_log_run.settings.data_dir
    for line in ("[1/5] tenants: shop", "[5/5] summary", "gate                passed"):
        assert line in completed.stdout
    assert "MovieLens" not in completed.stdout  # nothing downloaded or written for a demo
    # The runs' own printed lines (dbt's per model) are in their file, not the summary.
    assert "of 50 START" not in completed.stdout
    assert " START " in (own_log_run.artifacts / RUNS_OUTPUT).read_text()
    summary = json.loads((own_log_run.artifacts / "run_summary.json").read_text())
    assert summary["raw_events"] == summary["valid_events"] + summary["quarantined_events"]
    assert summary["pending_events"] == 0 and summary["tenants"] == [TINY_TENANT]
    assert summary["events_by_tenant"][TINY_TENANT]["raw"] == summary["raw_events"]
    registry = Registry(DataLayout(data_dir).registry)
    champion = summary["champions"][TINY_TENANT]["model_version"]
    assert registry.champion() == champion and champion.startswith("ease-")
    # The runs went to the instance `recloop run` defaults to, as workspace runs.
    with dg.DagsterInstance.from_config(str(data_dir / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert {run.job_name for run in runs} >= {"validate_events", "train_and_promote"}
        assert all(run.remote_job_origin is not None for run in runs)
    # The event partitions start at the data's first day, not at a fixed date.
    first_day = partitions_start(Settings.from_env({"RECLOOP_DATA_DIR": str(data_dir)}))
    assert first_day == own_log_run.days[0]


def test_recloop_run_on_an_empty_or_missing_data_dir_says_what_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    completed = recloop_run(empty, tmp_path / "out")
    assert completed.returncode == 1
    assert f"no raw events under {empty / 'raw' / 'events'}" in completed.stderr
    assert "make demo" in completed.stderr
    missing = recloop_run(tmp_path / "typo", tmp_path / "out")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "typo").exists()
