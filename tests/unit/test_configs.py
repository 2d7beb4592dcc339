"""Hyperparameters declared once (recloop.models.configs): the schema and the run config follow."""

from __future__ import annotations

import jsonschema
import pytest

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
    assert schema["properties"]["refit"]["type"] == "boolean"


@pytest.mark.parametrize(
    ("params", "valid"),
    [
        ({"dim": 8, "lr": 0.01}, True),
        ({"dim": 0}, False),
        ({"temperature": 0}, False),
        ({"recent_dropout": 1.5}, False),
        ({"epochs": 2.5}, False),
        ({"refit": False}, True),
        ({"refit": 0}, False),
        ({"dims": 8}, False),
    ],
)
def test_the_published_schema_is_the_generated_one(params: dict, valid: bool) -> None:
    schema = ALGORITHMS["two_tower"].params_schema
    assert schema == params_schema(TwoTowerConfig)
    assert jsonschema.Draft202012Validator(schema).is_valid(params) is valid
