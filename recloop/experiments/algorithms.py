"""Algorithms a spec may train, each with the JSON Schema of its `params`.

The registry is the single source of the parameter schemas: the published spec schema
(`recloop/experiment.schema.json`) is generated from it, so an editor validates
`params` as the loader does. A new algorithm registers here (and the schema file is
regenerated with `recloop experiments schema`); the Dagster factory maps the same name
to its trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Algorithm:
    """A trainable recommender a variant may name, and what its spec entry must carry."""

    name: str
    description: str
    # JSON Schema (draft 2020-12) of `params`; closed, so a misspelt hyperparameter fails.
    params_schema: Mapping[str, Any]
    # Whether the variant must name a Feast feature service (e.g. retrieval_v2).
    uses_feature_service: bool


_REGISTRY: dict[str, Algorithm] = {}
# Read-only view; register_algorithm is the one way in.
ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(_REGISTRY)


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    """Add an algorithm; a second one under the same name is a mistake, not an override."""
    if algorithm.name in _REGISTRY:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    if algorithm.params_schema.get("additionalProperties") is not False:
        raise ValueError(
            f"algorithm {algorithm.name!r}: params_schema needs additionalProperties: false "
            "(unknown parameters must fail validation)"
        )
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def _integer(minimum: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": description}


def _positive(description: str) -> dict[str, Any]:
    return {"type": "number", "exclusiveMinimum": 0, "description": description}


def _share(description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 1, "description": description}


# The fields of recloop.models.two_tower.TwoTowerConfig (a test keeps them in step; importing
# the model here would pull torch into every process that only routes requests).
register_algorithm(
    Algorithm(
        name="two_tower",
        description="the torch two-tower retrieval model (recloop/models/two_tower.py)",
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "dim": _integer(1, "embedding size of both towers"),
                "hidden": _integer(1, "hidden width of each tower's MLP"),
                "temperature": _positive("softmax temperature of the in-batch loss"),
                "id_dropout": _share("share of id embeddings dropped while training"),
                "lr": _positive("Adam learning rate"),
                "weight_decay": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Adam weight decay",
                },
                "batch_size": _integer(1, "training examples per batch"),
                "epochs": _integer(1, "maximum number of epochs"),
                "patience": _integer(1, "epochs without validation gain before stopping"),
                "recent_dropout": _share("share of examples whose recent items are hidden"),
                "seed": _integer(0, "seed of initialisation, dropout and batching"),
            },
        },
        uses_feature_service=True,
    )
)
register_algorithm(
    Algorithm(
        name="popularity",
        description="items by their number of interactions (recloop/models/baselines.py)",
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "window_days": _integer(
                    1, "count interactions of the last N days only (default: all history)"
                ),
            },
        },
        uses_feature_service=False,
    )
)
