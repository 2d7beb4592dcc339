"""`recloop run` on a generated positives-only log, as a user types it: one session run
shared by the tests that need a pipeline that went through workspace runs (the own-data
summary, the browser's lineage and re-execution), so it is paid for once."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from drivers.launcher import PROJECT_ROOT
from recloop.data.layout import DataLayout
from recloop.data.movielens import to_raw_log, write_raw_log
from recloop.settings import Settings
from tests.conftest import TINY_TENANT
from tests.integration.test_refit_serving import positives_only_frames

RECLOOP = str(PROJECT_ROOT / ".venv" / "bin" / "recloop")


def recloop_run(data_dir: Path, artifacts: Path, **env: str) -> subprocess.CompletedProcess:
    """`recloop run` from another working directory, with only the data directory (and
    what `env` adds) set: no RECLOOP_* or DAGSTER_HOME from the test's environment."""
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


@dataclass(frozen=True)
class OwnLogRun:
    settings: Settings
    days: list[date]
    artifacts: Path
    completed: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def own_log_run(tmp_path_factory: pytest.TempPathFactory) -> OwnLogRun:
    """Eight days of positives ending yesterday, through `recloop run` with EASE."""
    root = tmp_path_factory.mktemp("own_log")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=7 - n) for n in range(8)]
    data_dir = root / "data"
    write_raw_log(to_raw_log(positives_only_frames(days), TINY_TENANT), DataLayout(data_dir))
    completed = recloop_run(data_dir, root / "out", RECLOOP_CHAMPION_ALGORITHM="ease")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    settings = Settings(data_dir=data_dir, champion_algorithm="ease")
    return OwnLogRun(settings, days, root / "out", completed)
