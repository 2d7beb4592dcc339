"""`recloop run` (`make pipeline`): the whole chain on a user's own raw log, one command."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets.definitions import partitions_start
from drivers.launcher import PROJECT_ROOT
from recloop.data.layout import DataLayout
from recloop.data.movielens import to_raw_log, write_raw_log
from recloop.registry.model_registry import Registry
from recloop.settings import Settings
from tests.conftest import TINY_TENANT
from tests.integration.test_refit_serving import positives_only_frames

RECLOOP = str(PROJECT_ROOT / ".venv" / "bin" / "recloop")


def recloop_run(data_dir: Path, artifacts: Path, **env: str) -> subprocess.CompletedProcess:
    """`recloop run` as a user types it, from another working directory, with only the
    data directory (and what `env` adds) set."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RECLOOP_") and name != "DAGSTER_HOME"
    }
    return subprocess.run(
        [RECLOOP, "run", "--artifacts", str(artifacts)],
        cwd=artifacts.parent,
        env={**environment, "RECLOOP_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_recloop_run_trains_and_promotes_on_a_generated_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=7 - n) for n in range(8)]
    write_raw_log(to_raw_log(positives_only_frames(days), TINY_TENANT), DataLayout(data_dir))
    completed = recloop_run(data_dir, tmp_path / "out", RECLOOP_CHAMPION_ALGORITHM="ease")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for line in ("[1/5] tenants: shop", "[5/5] summary", "gate                passed"):
        assert line in completed.stdout
    assert "MovieLens" not in completed.stdout  # nothing downloaded or written for a demo
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["raw_events"] == summary["valid_events"] + summary["quarantined_events"]
    assert summary["pending_events"] == 0 and summary["tenants"] == [TINY_TENANT]
    registry = Registry(DataLayout(data_dir).registry)
    assert registry.champion() == summary["model_version"]
    assert summary["model_version"].startswith("ease-")
    # The runs went to the instance `recloop run` defaults to, as workspace runs.
    with dg.DagsterInstance.from_config(str(data_dir / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert {run.job_name for run in runs} >= {"validate_events", "train_and_promote"}
        assert all(run.remote_job_origin is not None for run in runs)
    # The event partitions start at the data's first day, not at a fixed date.
    assert partitions_start(Settings.from_env({"RECLOOP_DATA_DIR": str(data_dir)})) == days[0]


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
