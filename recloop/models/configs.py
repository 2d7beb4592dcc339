"""The hyperparameters of each trainable model, declared once.

The Dagster run config of a chain's model asset (assets.model_chain.candidate_config) and the
JSON Schema of an experiment variant's `params` (recloop.experiments.algorithms) are
both generated from these dataclasses, so a new field needs no second declaration.
This module imports no torch: a process that only validates specs or routes requests
stays light.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any

JSON_TYPES = {bool: "boolean", int: "integer", float: "number"}


def param(
    default: Any,
    description: str,
    *,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A hyperparameter field: its default, what it means and its bounds."""
    bounds = {"minimum": minimum, "exclusiveMinimum": exclusive_minimum, "maximum": maximum}
    return dataclasses.field(
        default=default,
        metadata={
            "description": description,
            "bounds": {key: value for key, value in bounds.items() if value is not None},
        },
    )


@dataclass(frozen=True)
class TwoTowerConfig:
    """The torch two-tower retrieval model (recloop.models.two_tower)."""

    dim: int = param(64, "embedding size of both towers", minimum=1)
    hidden: int = param(128, "hidden width of each tower's MLP", minimum=1)
    temperature: float = param(0.1, "softmax temperature of the in-batch loss", exclusive_minimum=0)
    id_dropout: float = param(
        0.3, "share of id embeddings dropped while training", minimum=0, maximum=1
    )
    lr: float = param(3e-3, "Adam learning rate", exclusive_minimum=0)
    weight_decay: float = param(1e-4, "Adam weight decay", minimum=0)
    batch_size: int = param(1024, "training examples per batch", minimum=1)
    epochs: int = param(40, "maximum number of epochs", minimum=1)
    patience: int = param(4, "epochs without validation gain before stopping", minimum=1)
    # Most served users (and every offline test user, as of a cut-off) have no recent items.
    recent_dropout: float = param(
        0.5, "share of examples whose recent items are hidden", minimum=0, maximum=1
    )
    seed: int = param(0, "seed of initialisation, dropout and batching", minimum=0)
    # The gates judge the model trained on the train part; what serves should also know
    # the newest labels and the users and items that appear only in them.
    refit: bool = param(
        True,
        "serve the same configuration refit on every label (train, validation and test) for "
        "the validated number of epochs; the gates still judge the train-part model",
    )

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


@dataclass(frozen=True)
class PopularityConfig:
    """Items by their number of interactions (recloop.models.popularity_model)."""

    window_days: int | None = param(
        None, "count interactions of the last N days only (default: all history)", minimum=1
    )


@dataclass(frozen=True)
class EaseConfig:
    """EASE, the item-to-item linear autoencoder (recloop.models.ease_model)."""

    # Steck (2019) tunes it per data set, as the pipeline does by default (search_l2).
    l2: float = param(
        500.0,
        "L2 penalty added to the diagonal of the item Gram matrix: larger values shrink the "
        "item-to-item weights towards zero; used as given when search_l2 is false",
        exclusive_minimum=0,
    )
    search_l2: bool = param(
        True,
        "choose l2 from 50-2000 by NDCG@10 on two hold-outs before the test part (the "
        "temporal validation part and each user's latest labels; the test part is never "
        "read); every trial is kept with the model",
    )
    # As the two-tower's refit: the newest labels hold the users and items the served
    # weights must know.
    refit: bool = param(
        True,
        "serve weights solved on every label (train, validation and test) with the chosen "
        "l2; the gates still judge the weights solved on the labels before the test cut-off",
    )

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


@dataclass(frozen=True)
class MultiStageConfig:
    """The multi-stage recommender as a registered kind (recloop.models.multi_stage_model):
    candidates from EASE, ALS, trending items and the neighbours of the user's last items,
    ordered by a boosted-tree ranker trained on a label window taken from the end of the
    training labels. Defaults: bench/quality.py's on the global temporal protocol (its
    validation grid chose EASE's L2 1000 there; ALS at the bench's defaults)."""

    item_to_item_candidates: int = param(
        100, "candidates the EASE source proposes per user", minimum=0
    )
    matrix_factorisation_candidates: int = param(
        50, "candidates the ALS source proposes per user", minimum=0
    )
    trending_candidates: int = param(30, "candidates the trending source proposes", minimum=0)
    recent_neighbours_candidates: int = param(
        50, "candidates the neighbours of the user's last items propose", minimum=0
    )
    ease_l2: float = param(
        1000.0, "L2 penalty of the EASE source's item-to-item weights", exclusive_minimum=0
    )
    als_factors: int = param(64, "latent factors of the ALS source", minimum=1)
    als_regularization: float = param(0.05, "L2 regularisation of the ALS source", minimum=0)
    als_alpha: float = param(
        10.0, "confidence weight of an interaction in the ALS source", exclusive_minimum=0
    )
    als_iterations: int = param(20, "alternating least squares sweeps", minimum=1)
    trending_days: int = param(
        30, "days before the newest label that the trending source counts", minimum=1
    )
    recent_items: int = param(
        5, "last items of the user whose neighbours the recent-neighbours source sums", minimum=1
    )
    neighbours: int = param(100, "most similar items each item keeps", minimum=1)
    label_window_share: float = param(
        0.125,
        "share of the training labels, the newest (of each user's, or of all), that a label "
        "window holds for the ranker to learn from (the sources proposing its candidates "
        "are fitted on the labels before them)",
        exclusive_minimum=0,
        maximum=0.5,
    )
    label_window_folds: int = param(
        2,
        "label windows, each before the previous one, that the ranker learns from: each "
        "user's latest labels, then the newest period's, alternating",
        minimum=1,
    )
    ranker_min_data_in_leaf: int = param(
        300, "candidates per leaf of the ranker's trees at least (fewer on small data)", minimum=1
    )
    seed: int = param(0, "seed of ALS, the ranker and its held-out users", minimum=0)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def field_types(config_class: type) -> dict[str, type]:
    """Each field's type with `| None` removed: what a set value must be."""
    hints = typing.get_type_hints(config_class)
    types_ = {}
    for field in dataclasses.fields(config_class):
        hint = hints[field.name]
        if isinstance(hint, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        types_[field.name] = hint
    return types_


def params_schema(config_class: type) -> dict[str, Any]:
    """A closed JSON Schema (draft 2020-12) of the config's fields, bounds and meanings."""
    kinds = field_types(config_class)
    properties = {
        field.name: {
            "type": JSON_TYPES[kinds[field.name]],
            **field.metadata["bounds"],
            "description": field.metadata["description"],
        }
        for field in dataclasses.fields(config_class)
    }
    return {"type": "object", "additionalProperties": False, "properties": properties}
