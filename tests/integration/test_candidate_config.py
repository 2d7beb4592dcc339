"""The Dagster run config of a candidate, generated from the config dataclasses."""

from __future__ import annotations

import dataclasses

from assets.model_chain import CandidateConfig, candidate_config
from recloop.evaluation.gates import GateConfig
from recloop.inference.policies import Greedy
from recloop.models.configs import EaseConfig, TwoTowerConfig
from recloop.training.chain import EASE, TWO_TOWER, GatePlan, ModelRecipe


def test_dagster_run_config_has_every_field_with_its_default() -> None:
    config = CandidateConfig()
    for config_class, instance in ((TwoTowerConfig, TwoTowerConfig()), (GateConfig, GateConfig())):
        for field in dataclasses.fields(config_class):
            assert getattr(config, field.name) == getattr(instance, field.name), field.name
    described = CandidateConfig.model_fields["dim"].description
    assert described == "embedding size of both towers"


def test_run_config_overrides_reach_the_model_and_the_gates() -> None:
    config = CandidateConfig(epochs=3, min_coverage_ratio=0.5, ann_min_items=7, refit=False)
    recipe, plan = config.applied_to(
        ModelRecipe(TWO_TOWER), GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    )
    params = TwoTowerConfig(**recipe.params)
    assert params.epochs == 3 and params.refit is False and recipe.ann_min_items == 7
    assert plan.config.min_coverage_ratio == 0.5 and plan.against_champion


def test_a_chain_of_another_algorithm_gets_that_algorithms_run_config() -> None:
    """`candidate_config` is generated per algorithm (one class each); an EASE chain's run
    config carries l2 and the gate thresholds, and none of the two-tower's fields."""
    assert candidate_config(TwoTowerConfig) is CandidateConfig
    ease = candidate_config(EaseConfig)
    assert ease is candidate_config(EaseConfig) and "dim" not in ease.model_fields
    assert ease().l2 == EaseConfig().l2
    recipe, plan = ease(l2=42.0, search_l2=False, champion_tolerance=0.1).applied_to(
        ModelRecipe(EASE), GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    )
    assert recipe.params == {"l2": 42.0, "search_l2": False, "refit": True}
    assert plan.config.champion_tolerance == 0.1
