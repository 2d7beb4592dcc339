"""The multi-stage recommender through the same code paths as the other kinds, on a real
pipeline (validated log, dbt, Feast): the chain's steps train, judge and register it, the
registry promotes it and the service runtime serves it as champion; an experiment variant
naming `algorithm: multi_stage` is trained, gated and deployed by its Dagster chain and
resolved by the service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assets.definitions import build_definitions
from assets.experiments import experiment_job_name
from assets.model_chain import check_outcome
from drivers.demo import QUIET_LOGS
from recloop.evaluation.gates import GateConfig
from recloop.experiments import load_spec
from recloop.inference.policies import Greedy
from recloop.inference.retrievers import MultiStageRetriever
from recloop.models.multi_stage_model import MultiStageModel
from recloop.registry.model_registry import Registry
from recloop.training.chain import (
    MULTI_STAGE,
    GatePlan,
    ModelRecipe,
    judge,
    labels_only_inputs,
    train,
)
from services.experiments import ExperimentLoader, ExperimentSet
from services.runtime import RecloopRuntime
from tests.conftest import TINY_TENANT
from tests.integration.test_refit_serving import EARLY, ITEMS, LATE
from tests.labels_only import System, ope_gate, positives_only_system
from tests.spec_fixtures import against_champion_spec

# A dozen users: the ranker's trees may hold a few candidates per leaf.
PARAMS = {"ranker_min_data_in_leaf": 5}
SPEC = against_champion_spec(
    "ms_ab",
    "ranked",
    "multi_stage",
    "{ranker_min_data_in_leaf: 5}",
    "2026-01-01T00:00:00Z",
    "2099-01-01T00:00:00Z",
)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from positives_only_system(tmp_path_factory.mktemp("multi_stage"), "ms_ab", SPEC)


def test_multi_stage_trains_judges_registers_and_serves_as_the_champion(system: System) -> None:
    inputs = labels_only_inputs(system.layout, TINY_TENANT, 0.1, 0.1)
    assert {"genres", "release_year"} <= set(inputs.items.columns)
    progress: list[str] = []
    trained = train(ModelRecipe(MULTI_STAGE, PARAMS), inputs, "labels-only", progress.append)
    model = trained.model
    # What the run log shows while it trains: both fitted states, each window, the ranker.
    assert progress[0].startswith("judged state: ") and any(
        line.startswith("served state: every label") for line in progress
    )
    assert any(line.startswith("label window 1/") for line in progress)
    assert sum(line.startswith("ranker: ") for line in progress) == 2
    assert isinstance(model, MultiStageModel)
    plan = GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    judgement = judge(model, inputs, plan, ope_gate(system))
    gates = {r.name: r for r in judgement.results}
    assert gates["no_regression_vs_champion"].detail == "skipped: no champion yet"
    assert gates["ope_vs_logged"].skipped and gates["ope_vs_logged"].detail.startswith("skipped")
    # each user likes two random items of one genre a day: the sources learn the genres
    assert judgement.metrics["all"]["ndcg@10"] > judgement.popularity["ndcg@10"]
    assert judgement.passed, judgement.gate()

    registry = Registry(system.layout.registry)
    metadata = {"gate": judgement.gate(), **trained.metadata}
    version = registry.register(model, {"gate": "passed"}, metadata)
    assert version.startswith("ms-") and registry.load(version).version == version
    stages = registry.metadata(version)["evaluated"]["stages"]
    assert stages["candidate_recall"]["merged"] > 0 and stages["ranker"]["rounds"] >= 1
    registry.promote(version, reason="multi-stage serves")

    runtime = RecloopRuntime()
    assert runtime.reload() == {TINY_TENANT: version}
    served = registry.load(version)
    # the served state knows every label: the late users' too, whose labels are all in the
    # test part, which the judged state never saw
    for user in [*EARLY, *LATE]:
        row = list(served.user_ids).index(user)
        had = {str(served.item_ids[i]) for i in served.history[row].indices}
        answer = runtime.recommend(TINY_TENANT, user, 10, [], {})
        assert answer.fallback is None and answer.model_version == version, user
        items = [item.item_id for item in answer.items]
        assert len(items) == 10 and not had & set(items), user
    assert runtime.recommend(TINY_TENANT, "never-seen", 3, [], {}).fallback == "popularity"
    similar = runtime.similar_items(TINY_TENANT, ITEMS[0], 3)
    assert similar.model_version == version and ITEMS[0] not in [i.item_id for i in similar.items]


def test_an_experiment_variant_trains_multi_stage_through_its_dagster_chain(
    system: System,
) -> None:
    spec = load_spec(system.settings.experiments_dir / "ms_ab.yaml")
    job = build_definitions(system.settings).resolve_job_def(experiment_job_name(spec))
    result = job.execute_in_process(
        instance=system.instance, run_config=QUIET_LOGS, raise_on_error=False
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = {c.check_name: check_outcome(c) for c in result.get_asset_check_evaluations()}
    assert checks and set(checks.values()) <= {"passed", "skipped"}, checks
    assert checks["ope_vs_logged"] == "skipped"  # no logged exploration: shown, not passed
    registry = Registry(system.layout.registry)
    version = registry.deployed_version("ms_ab", "ranked", spec.variants["ranked"].training_digest)
    assert version is not None and version.startswith("ms-")
    metadata = registry.metadata(version)
    assert metadata["config"]["ranker_min_data_in_leaf"] == 5
    assert {"evaluated", "refit"} <= set(metadata)
    # the model asset shows the stage metrics of both fits
    shown = {
        key
        for event in result.get_asset_materialization_events()
        for key in event.materialization.metadata
    }
    assert {"judged/candidate_recall/merged", "served/ranker/rounds"} <= shown

    experiments = ExperimentLoader(system.settings.experiments_dir, registry)
    live = experiments.refresh(ExperimentSet.empty())
    assert [s.name for s in live.router.specs] == ["ms_ab"], live.waiting
    source = live.sources[("ms_ab", "ranked")]
    assert isinstance(source.model, MultiStageRetriever) and source.model.version == version
