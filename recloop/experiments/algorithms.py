"""Algorithms a spec may train, each with the JSON Schema of its `params`.

The registry is the single source of the parameter schemas: the published spec schema
(`recloop/experiment.schema.json`) is generated from it, so an editor validates
`params` as the loader does. Each algorithm's `params` schema is generated from its
config dataclass (recloop.models.configs), the one declaration of its hyperparameters.
A new algorithm registers here (and the schema file is regenerated with `recloop
experiments schema`); the Dagster factory maps the same name to its trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from recloop.models.configs import (
    EaseConfig,
    MultiStageConfig,
    PopularityConfig,
    TwoTowerConfig,
    params_schema,
)


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


register_algorithm(
    Algorithm(
        name="two_tower",
        description="the torch two-tower retrieval model (recloop/models/two_tower.py)",
        params_schema=params_schema(TwoTowerConfig),
        uses_feature_service=True,
    )
)
register_algorithm(
    Algorithm(
        name="popularity",
        description="items by their number of interactions (recloop/models/baselines.py)",
        params_schema=params_schema(PopularityConfig),
        uses_feature_service=False,
    )
)
register_algorithm(
    Algorithm(
        name="ease",
        description="EASE, item-to-item weights in closed form (recloop/models/ease_model.py)",
        params_schema=params_schema(EaseConfig),
        uses_feature_service=False,
    )
)
register_algorithm(
    Algorithm(
        name="multi_stage",
        description="candidates from EASE, ALS, trending items and the neighbours of recent "
        "items, ordered by a boosted-tree ranker (recloop/models/multi_stage_model.py)",
        params_schema=params_schema(MultiStageConfig),
        uses_feature_service=False,
    )
)
