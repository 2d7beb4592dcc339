"""Shared by the integration tests of the labels-only kinds (EASE, multi-stage): a small
real pipeline to train, judge and serve them on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from feature_repo.store import open_feature_store
from feature_repo.training import daily_features_as_of
from recloop.data.layout import DataLayout
from recloop.data.movielens import to_raw_log, write_raw_log
from recloop.evaluation.gates import GateConfig, GateResult
from recloop.experiments.ope_replay import ope_gate_result
from recloop.inference.policies import Policy
from recloop.inference.retrievers import Servable
from recloop.settings import Settings
from tests.conftest import TINY_TENANT
from tests.integration.test_pipeline import tiny_features_run
from tests.integration.test_refit_serving import positives_only_frames

DAYS = 8


@dataclass(frozen=True)
class System:
    settings: Settings
    instance: dg.DagsterInstance

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.settings.data_dir)


def positives_only_system(root: Path, spec_name: str, spec: str) -> Iterator[System]:
    """A positives-only log ending yesterday (fresh online features), its features and a
    spec directory holding `spec`; the environment the service runtime reads is set."""
    for folder in ("data", "specs", "dagster"):
        (root / folder).mkdir()
    (root / "specs" / f"{spec_name}.yaml").write_text(spec)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=DAYS - 1 - n) for n in range(DAYS)]
    settings = Settings(
        data_dir=root / "data", partitions_start=days[0], experiments_dir=root / "specs"
    )
    write_raw_log(to_raw_log(positives_only_frames(days), TINY_TENANT), DataLayout(root / "data"))
    with (
        dg.instance_for_test(temp_dir=str(root / "dagster")) as instance,
        pytest.MonkeyPatch.context() as env,
    ):
        tiny_features_run(settings, instance)
        for name, value in settings.to_env().items():
            env.setenv(name, value)
        yield System(settings, instance)


def ope_gate(system: System):
    """The pipeline's off-policy gate (no logged exploration here: it passes, skipped)."""
    features_as_of = daily_features_as_of(open_feature_store(system.settings))

    def gate(model: Servable, policy: Policy, config: GateConfig) -> GateResult:
        return ope_gate_result(
            system.layout, features_as_of, model, policy, config.ope_min_ess, config.ope_tolerance
        )

    return gate
