"""EASE through the same code paths as the other kinds, on a real pipeline (validated log,
dbt, Feast): the chain's steps train, judge and register it, the registry promotes it and
the service runtime serves it as champion; an experiment variant naming `algorithm: ease`
is trained, gated and deployed by its Dagster chain and resolved by the service."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import numpy as np
import pytest

from assets.definitions import TRAINING_JOB, build_definitions
from assets.experiments import experiment_job_name
from assets.model_chain import check_outcome
from drivers.demo import QUIET_LOGS, model_summary
from recloop.evaluation.gates import GateConfig
from recloop.experiments import load_spec
from recloop.inference.policies import Greedy
from recloop.inference.retrievers import EaseRetriever
from recloop.models.ease_model import L2_GRID, EaseModel
from recloop.registry.model_registry import Registry
from recloop.training.chain import EASE, GatePlan, ModelRecipe, judge, labels_only_inputs, train
from services.experiments import ExperimentLoader, ExperimentSet
from services.runtime import RecloopRuntime
from tests.conftest import TINY_TENANT
from tests.integration.test_refit_serving import EARLY, ITEMS, LATE
from tests.labels_only import System, ope_gate, positives_only_system
from tests.spec_fixtures import against_champion_spec

SPEC = against_champion_spec(
    "ease_ab", "ease", "ease", "{l2: 5.0}", "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z"
)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from positives_only_system(tmp_path_factory.mktemp("ease"), "ease_ab", SPEC)


def test_ease_trains_judges_registers_and_serves_as_the_champion(system: System) -> None:
    inputs = labels_only_inputs(system.layout, TINY_TENANT, 0.1, 0.1)
    trained = train(ModelRecipe(EASE, {"l2": 5.0, "search_l2": False}), inputs, "labels-only")
    assert isinstance(trained.model, EaseModel)
    plan = GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    judgement = judge(trained.model, inputs, plan, ope_gate(system))
    gates = {r.name: r for r in judgement.results}
    assert gates["no_regression_vs_champion"].detail == "skipped: no champion yet"
    assert gates["ope_vs_logged"].skipped and gates["ope_vs_logged"].detail.startswith("skipped")
    # each user likes two random items of one genre a day: EASE learns the genres
    assert judgement.metrics["all"]["ndcg@10"] > judgement.popularity["ndcg@10"]
    assert judgement.passed, judgement.gate()

    registry = Registry(system.layout.registry)
    version = registry.register(trained.model, {"gate": "passed"}, {"gate": judgement.gate()})
    assert version.startswith("ease-") and registry.load(version).version == version
    registry.promote(version, reason="ease serves")

    runtime = RecloopRuntime()
    assert runtime.reload() == {TINY_TENANT: version}
    model = registry.load(version)
    # the refit serves (weights solved on the late users' labels too), the gates judged
    # the weights solved before the cut-off
    judged = registry.load(version, with_evaluated=True).judged()
    assert judged.metadata["evaluated"]["labels"] < model.metadata["refit"]["labels"]
    assert not np.allclose(judged.weights, model.weights)
    for user in [*EARLY, *LATE]:
        row = list(model.user_ids).index(user)
        had = {str(model.item_ids[i]) for i in model.history[row].indices}
        answer = runtime.recommend(TINY_TENANT, user, 10, [], {})
        assert answer.fallback is None and answer.model_version == version
        items = [item.item_id for item in answer.items]
        assert len(items) == 10 and not had & set(items), user
    first = runtime.recommend(TINY_TENANT, "never-seen", 3, [], {})
    assert first.fallback == "popularity"
    # a click counts in the very next request, before any flush pushes it to Feast
    clicked = first.items[0].item_id
    runtime.feedback(TINY_TENANT, first.request_id, "never-seen", clicked, "click", None)
    after = runtime.recommend(TINY_TENANT, "never-seen", 3, [], {})
    assert after.fallback is None and clicked not in [item.item_id for item in after.items]
    similar = runtime.similar_items(TINY_TENANT, ITEMS[0], 3)
    assert similar.model_version == version and ITEMS[0] not in [i.item_id for i in similar.items]


def test_an_experiment_variant_trains_ease_through_its_dagster_chain(system: System) -> None:
    spec = load_spec(system.settings.experiments_dir / "ease_ab.yaml")
    job = build_definitions(system.settings).resolve_job_def(experiment_job_name(spec))
    result = job.execute_in_process(
        instance=system.instance, run_config=QUIET_LOGS, raise_on_error=False
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = {c.check_name: check_outcome(c) for c in result.get_asset_check_evaluations()}
    assert checks and set(checks.values()) <= {"passed", "skipped"}, checks
    assert checks["ope_vs_logged"] == "skipped"  # no logged exploration: shown, not passed
    registry = Registry(system.layout.registry)
    version = registry.deployed_version("ease_ab", "ease", spec.variants["ease"].training_digest)
    assert version is not None and version.startswith("ease-")
    metadata = registry.metadata(version)  # l2 chosen on validation, every trial kept
    assert metadata["config"] == {"l2": 5.0, "search_l2": True, "refit": True}
    assert [t["l2"] for t in metadata["l2_search"]] == list(L2_GRID)
    assert registry.load(version).l2 == metadata["l2"] in L2_GRID

    experiments = ExperimentLoader(system.settings.experiments_dir, registry)
    live = experiments.refresh(ExperimentSet.empty())
    assert [s.name for s in live.router.specs] == ["ease_ab"], live.waiting
    source = live.sources[("ease_ab", "ease")]
    assert isinstance(source.model, EaseRetriever) and source.model.version == version
    # Its audience names no tenant: it is routed for its model's tenant only.
    assert live.router.specs[0].audience.tenants == {TINY_TENANT}


def test_the_champion_chain_trains_the_algorithm_the_settings_name(system: System) -> None:
    """RECLOOP_CHAMPION_ALGORITHM=ease: `model_candidate` trains EASE from labels (its run
    config carries EASE's parameters), the gates judge it against the current champion
    and `champion_model` promotes it."""
    settings = replace(system.settings, champion_algorithm="ease")
    defs = build_definitions(settings)
    job = defs.resolve_job_def(TRAINING_JOB)
    with pytest.raises(dg.DagsterInvalidConfigError, match="dim"):  # a two-tower parameter
        job.execute_in_process(
            instance=system.instance,
            partition_key=TINY_TENANT,
            run_config={"ops": {"model_candidate": {"config": {"dim": 8}}}},
        )
    result = job.execute_in_process(
        instance=system.instance,
        partition_key=TINY_TENANT,
        run_config={
            **QUIET_LOGS,
            "ops": {"model_candidate": {"config": {"l2": 7.0, "search_l2": False}}},
        },
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = {c.check_name: check_outcome(c) for c in result.get_asset_check_evaluations()}
    assert checks and set(checks.values()) <= {"passed", "skipped"}, checks
    assert checks["ope_vs_logged"] == "skipped"  # no logged exploration: shown, not passed
    registry = Registry(system.layout.registry)
    champion = registry.champion()
    assert champion is not None and champion.startswith("ease-")
    assert registry.metadata(champion)["config"] == {"l2": 7.0, "search_l2": False, "refit": True}
    assert registry.load(champion).l2 == 7.0
    # what `make demo` reports of the champion
    summary = model_summary(settings)["champions"][TINY_TENANT]
    assert summary["model_version"] == champion
    assert summary["training"]["algorithm"] == "ease"
    assert summary["training"]["feature_service"] is None
    assert summary["metrics"]["ndcg@10"] == registry.metadata(champion)["metrics"]["all"]["ndcg@10"]
