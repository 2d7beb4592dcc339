"""A model chain's steps without the orchestrator: train, judge, describe for the registry.

The champion and every experiment variant go the same way from a point-in-time
training set to serving (assets.model_chain builds the Dagster assets):

    training set -> model (trained, registered) -> judgement (gates) -> release

A `ModelRecipe` says what is trained; a `GatePlan` which gates judge it. Every model
kind (two-tower, popularity, EASE, multi-stage) is trained and judged here, through the
serving code path (recloop.inference), on the training set's temporal test part.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recloop.data.layout import DataLayout
from recloop.data.validated_log import catalog_items, interactions
from recloop.evaluation import gates
from recloop.evaluation.gates import GateConfig, GateResult
from recloop.features.catalog_features import item_feature_matrix
from recloop.features.training_set import label_entities, temporal_cutoffs
from recloop.inference.policies import Policy
from recloop.inference.retrievers import Servable, ServableModel, servable
from recloop.models.configs import (
    EaseConfig,
    MultiStageConfig,
    PopularityConfig,
    TwoTowerConfig,
)
from recloop.models.ease_model import RELATIVE_SCORE, EaseModel, fit_ease, search_l2
from recloop.models.model_artifact import ModelBundle
from recloop.models.multi_stage_model import MultiStageModel, fit_multi_stage
from recloop.models.popularity_model import PopularityModel, fit_popularity
from recloop.models.progress import ProgressLog, silent
from recloop.models.retrieval_index import DEFAULT_ANN_MIN_ITEMS
from recloop.training.candidate import (
    Candidate,
    K,
    Rival,
    TrainingInputs,
    candidate_gates,
    champion_served_share,
    ease_sanity,
    evaluate_labels_only,
    evaluation_set,
    fit_candidate,
    judged_labels_before,
    metric_gates,
    multi_stage_sanity,
    popularity_metrics,
    ranked_bundle,
    ranked_labels_only,
    segment_metrics,
)

TWO_TOWER = "two_tower"
POPULARITY = "popularity"
EASE = "ease"
MULTI_STAGE = "multi_stage"
# The hyperparameters of each algorithm `train` knows (recloop.models.configs): a recipe's
# params are their fields, and a chain's Dagster run config is generated from them.
ALGORITHM_CONFIGS: Mapping[str, type] = {
    TWO_TOWER: TwoTowerConfig,
    POPULARITY: PopularityConfig,
    EASE: EaseConfig,
    MULTI_STAGE: MultiStageConfig,
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

    def stage_metrics(self) -> dict[str, float]:
        """A multi-stage model's stage report as flat numbers, for its judged and served
        fits (candidate recall per source and merged, ranker rounds, holdout NDCG, feature
        gain); EASE's L2 search (validation NDCG@10 per value tried, and the choice) and the
        labels each of its fits solved on;
        none for the other kinds."""
        if isinstance(self.model, EaseModel):
            return {
                f"l2_search/{trial['l2']:g}/{key}": round(value, 4)
                for trial in self.metadata.get("l2_search", [])
                for key, value in trial.items()
                if key != "l2"
            } | {
                "l2": self.model.l2,
                **{
                    f"{fit}/labels": self.metadata[fit]["labels"]
                    for fit in ("evaluated", "refit")
                    if fit in self.metadata
                },
            }
        if not isinstance(self.model, MultiStageModel):
            return {}
        return {
            **flat_numbers(self.metadata["evaluated"]["stages"], "judged/"),
            **flat_numbers(self.metadata["refit"]["stages"], "served/"),
        }


@dataclass
class Judgement:
    """A model's test-part metrics next to popularity's, and the gate verdict."""

    metrics: dict[str, dict[str, float]]
    popularity: dict[str, float]
    results: list[GateResult]
    # The champion's metrics on the same test part, when the candidate was held against it.
    champion: dict[str, float] | None = None

    @property
    def passed(self) -> bool:
        return gates.verdict(self.results)

    def gate(self) -> dict[str, Any]:
        return {"passed": self.passed, "results": [r.to_dict() for r in self.results]}


def labels_only_inputs(
    layout: DataLayout,
    tenant: str,
    valid_fraction: float,
    test_fraction: float,
    holdout_since: pd.Timestamp | None = None,
) -> TrainingInputs:
    """`tenant`'s labels split by time, without Feast features (popularity, EASE and the
    multi-stage recommender read none; the latter reads the catalog's genres and release
    years), in the same form as the two-tower inputs, so every model is evaluated on the
    same kind of test part."""
    labels = label_entities(interactions(layout, tenant))
    cutoffs = temporal_cutoffs(
        labels["event_timestamp"], valid_fraction, test_fraction, holdout_since
    )
    labels["split"] = cutoffs.part_of(labels["event_timestamp"]).to_numpy()
    items = catalog_items(layout, tenant)
    return TrainingInputs(
        examples=labels,
        user_snapshots=pd.DataFrame(
            {"user_id": pd.Series(dtype=str), "as_of": pd.Series(dtype="datetime64[us, UTC]")}
        ),
        items=items,
        text_embeddings=np.zeros((len(items), 0), dtype=np.float32),
        cutoffs=cutoffs,
    )


def train(
    recipe: ModelRecipe, inputs: TrainingInputs, training_set: str, log: ProgressLog = silent
) -> TrainedModel:
    """Fit the recipe's model (a two-tower on the train part, stopping early on validation,
    then refit on every label unless its config says not to: `judge` scores the
    train-part weights, the registry keeps and serves both; popularity and EASE on the
    labels before the test cut-off, which is what popularity serves; EASE and the
    multi-stage recommender on the labels before the test cut-off, which `judge` scores,
    then on every label, which serves, both kept). Progress (epochs, label windows, the
    search) goes to `log`."""
    # The training set by its content hash (its directory's name), not its path: a model's
    # version must not depend on where the data directory lives.
    recorded = {"training_set": Path(training_set).name}
    if recipe.algorithm == TWO_TOWER:
        config = TwoTowerConfig(**recipe.params)
        candidate = fit_candidate(
            inputs,
            config,
            ann_min_items=recipe.ann_min_items,
            metadata=recorded,
            log=log,
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
        search = search_l2(inputs.examples, catalog, inputs.cutoffs) if config.search_l2 else None
        l2 = search.l2 if search else config.l2
        if search:
            scores = ", ".join(f"{t['l2']:g}: {t[RELATIVE_SCORE]:.3f}" for t in search.trials)
            log(f"EASE L2 chosen on validation: {l2:g} (relative NDCG@10 by L2: {scores})")
        log(f"fitting EASE (L2 {l2:g}) on the labels before the test cut-off, then on all")
        model = fit_ease(
            inputs.examples,
            catalog,
            inputs.cutoffs.test_start,
            l2,
            metadata=recorded,
            refit=config.refit,
        )
        searched = {"l2_search": search.trials} if search else {}
        fits = {key: model.metadata[key] for key in ("evaluated", "refit") if key in model.metadata}
        return TrainedModel(model, {"config": config.to_dict(), "l2": l2, **searched, **fits})
    if recipe.algorithm == MULTI_STAGE:
        config = MultiStageConfig(**recipe.params)
        model = fit_multi_stage(
            inputs.examples,
            catalog,
            item_feature_matrix(inputs.items, catalog),
            inputs.cutoffs.test_start,
            config,
            metadata=recorded,
            log=log,
        )
        metadata = {key: model.metadata[key] for key in ("evaluated", "refit")}
        return TrainedModel(model, {"config": config.to_dict(), **metadata})
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
    full lists only; the other kinds to the promotion gates (against `champion`, of any
    kind, on the same test set when the plan says so) and to the off-policy gate. Every
    kind is judged by `model.judged()`: a refit two-tower by the weights trained on the
    train part, EASE and a multi-stage model by their state fitted on the labels before
    the test cut-off (the refits saw the test labels and the logged traffic); sanity
    checks what serves."""
    test = evaluation_set(inputs, "test", inputs.cutoffs.test_start)
    baseline = popularity_metrics(test)
    if isinstance(model, PopularityModel):
        metrics, lengths = evaluate_labels_only(model, test, K)
        return Judgement(metrics, baseline, [gates.full_lists(lengths, K)])
    share = champion_served_share(inputs.examples, champion_version)
    rival = Rival.scored(champion, test) if champion and plan.against_champion else None
    judged = model.judged()
    if isinstance(model, ModelBundle):
        lists = ranked_bundle(judged, test)
        metrics = segment_metrics(lists, test)
        candidate = Candidate(model, metrics, test, lists)
        offline = candidate_gates(candidate, rival, plan.config, share)
    else:
        lists, _ = ranked_labels_only(judged, test, K)
        metrics = segment_metrics(lists, test)
        sanity_of = ease_sanity if isinstance(model, EaseModel) else multi_stage_sanity
        offline = [
            *metric_gates(
                lists,
                test,
                judged_labels_before(model),
                rival,
                plan.config,
                share,
            ),
            *sanity_of(model, test, plan.config),
        ]
    if not plan.against_champion:
        offline = [r for r in offline if r.name != NO_REGRESSION]
    return Judgement(
        metrics,
        baseline,
        [*offline, ope_gate(servable(judged), plan.policy, plan.config)],
        rival.metrics if rival else None,
    )


def code_version() -> str:
    """The git commit the code runs at (recorded with every model)."""
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def flat_numbers(tree: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of a nested mapping as `{prefix + "a/b/c": value}`, rounded to 4
    decimals for reading (text left out)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= flat_numbers(value, f"{prefix}{key}/")
        elif isinstance(value, int | float):
            flat[f"{prefix}{key}"] = round(float(value), 4)
    return flat
