"""Hyperparameters declared once (recloop.models.configs): the schema and the run config follow."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from assets.model_chain import CandidateConfig
from recloop.evaluation.gates import GateConfig
from recloop.experiments.algorithms import ALGORITHMS
from recloop.models.configs import PopularityConfig, TwoTowerConfig, params_schema


def test_schema_carries_types_bounds_and_meanings() -> None:
    schema = params_schema(TwoTowerConfig)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["dim"] == {
        "type": "integer",
        "minimum": 1,
        "description": "embedding size of both towers",
    }
    assert schema["properties"]["id_dropout"]["maximum"] == 1
    assert schema["properties"]["temperature"]["exclusiveMinimum"] == 0
    assert params_schema(PopularityConfig)["properties"]["window_days"]["type"] == "integer"


@pytest.mark.parametrize(
    ("params", "valid"),
    [
        ({"dim": 8, "lr": 0.01}, True),
        ({"dim": 0}, False),
        ({"temperature": 0}, False),
        ({"recent_dropout": 1.5}, False),
        ({"epochs": 2.5}, False),
        ({"dims": 8}, False),
    ],
)
def test_the_published_schema_is_the_generated_one(params: dict, valid: bool) -> None:
    schema = ALGORITHMS["two_tower"].params_schema
    assert schema == params_schema(TwoTowerConfig)
    assert jsonschema.Draft202012Validator(schema).is_valid(params) is valid


def test_dagster_run_config_has_every_field_with_its_default() -> None:
    config = CandidateConfig()
    for config_class, instance in ((TwoTowerConfig, TwoTowerConfig()), (GateConfig, GateConfig())):
        for field in dataclasses.fields(config_class):
            assert getattr(config, field.name) == getattr(instance, field.name), field.name
    described = CandidateConfig.model_fields["dim"].description
    assert described == "embedding size of both towers"


def test_run_config_overrides_reach_the_model_and_the_gates() -> None:
    from recloop.inference.policies import Greedy
    from recloop.training.chain import TWO_TOWER, GatePlan, ModelRecipe

    config = CandidateConfig(epochs=3, min_coverage=0.5, ann_min_items=7)
    recipe, plan = config.applied_to(
        ModelRecipe(TWO_TOWER), GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    )
    assert TwoTowerConfig(**recipe.params).epochs == 3 and recipe.ann_min_items == 7
    assert plan.config.min_coverage == 0.5 and plan.against_champion
