"""A model chain's steps without the orchestrator: train, judge, describe for the registry.

The champion and every experiment variant go the same way from a point-in-time
training set to serving (assets.model_chain builds the Dagster assets):

    training set -> model (trained, registered) -> judgement (gates) -> release

A `ModelRecipe` says what is trained; a `GatePlan` which gates judge it. Every model
kind (two-tower, popularity, EASE) is trained and judged here, through the serving code
path (recloop.inference), on the training set's temporal test part.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recloop.data.layout import DataLayout
from recloop.data.validated_log import catalog_item_ids, interactions
from recloop.evaluation import gates
from recloop.evaluation.gates import GateConfig, GateResult
from recloop.features.training_set import label_entities, temporal_cutoffs
from recloop.inference.policies import Policy
from recloop.inference.retrievers import Servable, ServableModel, servable
from recloop.models.configs import EaseConfig, PopularityConfig, TwoTowerConfig
from recloop.models.ease_model import EaseModel, fit_ease
from recloop.models.model_artifact import ModelBundle
from recloop.models.popularity_model import PopularityModel, fit_popularity
from recloop.models.retrieval_index import DEFAULT_ANN_MIN_ITEMS
from recloop.training.candidate import (
    Candidate,
    K,
    TrainingInputs,
    candidate_gates,
    champion_served_share,
    ease_gates,
    evaluate_bundle,
    evaluate_labels_only,
    evaluation_set,
    fit_candidate,
    popularity_metrics,
)

TWO_TOWER = "two_tower"
POPULARITY = "popularity"
EASE = "ease"
# The hyperparameters of each algorithm `train` knows (recloop.models.configs): a recipe's
# params are their fields, and a chain's Dagster run config is generated from them.
ALGORITHM_CONFIGS: Mapping[str, type] = {
    TWO_TOWER: TwoTowerConfig,
    POPULARITY: PopularityConfig,
    EASE: EaseConfig,
}
NO_REGRESSION = "no_regression_vs_champion"
# The off-policy gate of a served model, on the logged traffic (recloop.experiments.ope_replay
# provides it; the training layer does not reach into experiments).
OpeGate = Callable[[Servable, Policy, GateConfig], GateResult]


@dataclass(frozen=True)
class ModelRecipe:
    """What a chain trains: an algorithm with its parameters, and the features it reads."""

    algorithm: str
    params: Mapping[str, Any] = field(default_factory=dict)
    # The Feast feature service the training set reads (None: labels only).
    feature_service: str | None = None
    ann_min_items: int = DEFAULT_ANN_MIN_ITEMS

    @property
    def reads_features(self) -> bool:
        return self.algorithm == TWO_TOWER


@dataclass(frozen=True)
class GatePlan:
    """Which gates judge a chain's model: its thresholds, whether it must hold its own
    against the champion offline (an experiment variant meets it online instead), and
    the policy it serves with (for the off-policy gate)."""

    config: GateConfig
    against_champion: bool
    policy: Policy


@dataclass
class TrainedModel:
    model: ServableModel
    # What the registry keeps about the training, besides the chain's own metadata.
    metadata: dict[str, Any]
    # Per-epoch training curve (empty for models without epochs).
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def best_epoch(self) -> int | None:
        if isinstance(self.model, ModelBundle):
            return int(self.model.metadata["best_epoch"])
        return None


@dataclass
class Judgement:
    """A model's test-part metrics next to popularity's, and the gate verdict."""

    metrics: dict[str, dict[str, float]]
    popularity: dict[str, float]
    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return gates.verdict(self.results)

    def gate(self) -> dict[str, Any]:
        return {"passed": self.passed, "results": [r.to_dict() for r in self.results]}


def labels_only_inputs(
    layout: DataLayout, valid_fraction: float, test_fraction: float
) -> TrainingInputs:
    """Labels split by time, without features (popularity and EASE read none), in the same
    form as the two-tower inputs, so every model is evaluated on the same kind of test part."""
    labels = label_entities(interactions(layout))
    cutoffs = temporal_cutoffs(labels["event_timestamp"], valid_fraction, test_fraction)
    labels["split"] = cutoffs.part_of(labels["event_timestamp"]).to_numpy()
    catalog = np.asarray(catalog_item_ids(layout))
    return TrainingInputs(
        examples=labels,
        user_snapshots=pd.DataFrame(
            {"user_id": pd.Series(dtype=str), "as_of": pd.Series(dtype="datetime64[us, UTC]")}
        ),
        items=pd.DataFrame({"item_id": catalog}),
        text_embeddings=np.zeros((len(catalog), 0), dtype=np.float32),
        cutoffs=cutoffs,
    )


def train(recipe: ModelRecipe, inputs: TrainingInputs, training_set: str) -> TrainedModel:
    """Fit the recipe's model (a two-tower on the train part, stopping early on validation,
    then refit on every label unless its config says not to: `judge` scores the
    train-part weights, the registry keeps and serves both; popularity and EASE on the
    labels before the test cut-off, which is what they serve)."""
    if recipe.algorithm == TWO_TOWER:
        config = TwoTowerConfig(**recipe.params)
        candidate = fit_candidate(
            inputs,
            config,
            ann_min_items=recipe.ann_min_items,
            metadata={"training_set": training_set},
        )
        bundle = candidate.bundle
        metadata = {
            "feature_service": recipe.feature_service,
            "config": config.to_dict(),
            "best_epoch": bundle.metadata["best_epoch"],
            **{
                key: bundle.metadata[key]
                for key in ("evaluated", "refit")
                if key in bundle.metadata
            },
        }
        return TrainedModel(bundle, metadata, candidate.history)
    catalog = inputs.items["item_id"].to_numpy()
    if recipe.algorithm == POPULARITY:
        window_days = PopularityConfig(**recipe.params).window_days
        model = fit_popularity(inputs.examples, catalog, inputs.cutoffs.test_start, window_days)
        return TrainedModel(model, {"window_days": window_days})
    if recipe.algorithm == EASE:
        config = EaseConfig(**recipe.params)
        model = fit_ease(
            inputs.examples,
            catalog,
            inputs.cutoffs.test_start,
            config.l2,
            metadata={"training_set": training_set},
        )
        return TrainedModel(model, {"config": config.to_dict()})
    raise ValueError(f"no trainer for algorithm {recipe.algorithm!r}")


def judge(
    model: ServableModel,
    inputs: TrainingInputs,
    plan: GatePlan,
    ope_gate: OpeGate,
    champion_version: str | None = None,
    champion: ServableModel | None = None,
) -> Judgement:
    """Metrics on the test part and every gate of `plan`. A popularity model is held to
    full lists only; a two-tower and EASE to the promotion gates (against `champion`, of
    any kind, on the same test set when the plan says so) and to the off-policy gate. A
    refit two-tower is judged by the weights trained on the train part
    (`ModelBundle.judged`): the refit saw the test labels and the logged traffic; sanity
    checks the weights that serve. EASE serves the weights it is judged by."""
    test = evaluation_set(inputs, "test", inputs.cutoffs.test_start)
    baseline = popularity_metrics(test)
    if isinstance(model, PopularityModel):
        metrics, lengths = evaluate_labels_only(model, test, K)
        return Judgement(metrics, baseline, [gates.full_lists(lengths, K)])
    share = champion_served_share(inputs.examples, champion_version)
    rival = champion if plan.against_champion else None
    if isinstance(model, EaseModel):
        metrics, _ = evaluate_labels_only(model, test, K)
        offline = ease_gates(model, metrics["all"], baseline, test, rival, plan.config, share)
        served = servable(model)
    else:
        judged = model.judged()
        metrics = evaluate_bundle(judged, test)
        candidate = Candidate(model, metrics, baseline, test)
        offline = candidate_gates(candidate, rival, plan.config, share)
        served = servable(judged)
    if not plan.against_champion:
        offline = [r for r in offline if r.name != NO_REGRESSION]
    return Judgement(metrics, baseline, [*offline, ope_gate(served, plan.policy, plan.config)])


def code_version() -> str:
    """The git commit the code runs at (recorded with every model)."""
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def flat_metrics(metrics: Mapping[str, Mapping[str, float]], prefix: str) -> dict[str, float]:
    """`{segment: {metric: value}}` as `{prefix + "segment/metric": value}`."""
    return {
        f"{prefix}{segment}/{name}": float(value)
        for segment, values in metrics.items()
        for name, value in values.items()
    }
