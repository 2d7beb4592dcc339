"""Training: text embeddings, the PIT training set, the candidate, its gates, the champion.

`model_candidate` trains, evaluates and registers a two-tower candidate; five
blocking asset checks hold it to the promotion gates (recloop.evaluation.gates), so
`champion_model`, which promotes it, only runs when every gate passed. A failed
gate leaves the previous champion serving.
"""

import dataclasses
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field, create_model

from assets.dbt import WAREHOUSE_POOL
from assets.plots import training_curve
from assets.resources import RecloopResource
from feature_repo.training import (
    FEATURE_SERVICE,
    daily_features_as_of,
    item_snapshot,
    labelled_examples,
    user_snapshots,
    uses_stream,
)
from recloop.data.validated_log import newest_validated_event
from recloop.evaluation import gates
from recloop.experiments.ope_replay import OPE_GATE, ope_gate_result
from recloop.features.text_embeddings import ENCODER_ID, embed_items, embedding_matrix
from recloop.features.training_set import TemporalCutoffs, split_summary
from recloop.inference.policies import Greedy
from recloop.inference.retrievers import Retriever
from recloop.models.configs import TwoTowerConfig, field_types
from recloop.registry.model_registry import PromotionError, Registry
from recloop.training.candidate import (
    TrainingInputs,
    candidate_gates,
    champion_served_share,
    fit_candidate,
    load_inputs,
    save_inputs,
    shuffle_training_labels,
)

TRAINING_GROUP = "training"
GATE_CHECKS = {
    "beats_popularity": "NDCG@10 beats popularity's by the configured margin.",
    "no_regression_vs_champion": "NDCG@10 within tolerance of the champion's, same test set.",
    "coverage_and_bias": "Catalog coverage and popularity bias within bounds.",
    "sanity": "Finite weights, scores that vary, an index that holds the whole catalog.",
    OPE_GATE: "Off-policy estimate on logged exploration traffic not below what it earned "
    "(skipped while the log holds too little exploration).",
}
CHECK_OF_GATE = {
    "beats_popularity": "beats_popularity",
    "no_regression_vs_champion": "no_regression_vs_champion",
    "coverage": "coverage_and_bias",
    "popularity_bias": "coverage_and_bias",
    "finite_weights": "sanity",
    "scores_not_constant": "sanity",
    "index_covers_catalog": "sanity",
    OPE_GATE: OPE_GATE,
}


def gate_check_results(
    results: Sequence[Mapping[str, object]],
    checks: Iterable[str],
    check_of_gate: Mapping[str, str],
) -> list[dg.AssetCheckResult]:
    """One blocking check result per check: it passes when every gate it groups passed."""
    outcomes = []
    for check in checks:
        mine = [r for r in results if check_of_gate[str(r["name"])] == check]
        outcomes.append(
            dg.AssetCheckResult(
                check_name=check,
                passed=all(bool(r["passed"]) for r in mine),
                metadata={
                    **{f"{r['name']}_value": float(r["value"]) for r in mine},
                    **{f"{r['name']}_threshold": float(r["threshold"]) for r in mine},
                    "detail": "; ".join(str(r["detail"]) for r in mine),
                },
            )
        )
    return outcomes


class TrainingSetConfig(dg.Config):
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    holdout_since: str | None = Field(
        None,
        description="ISO 8601 time: the fractions are of the labels from then on, and all "
        "earlier labels train (a drift retrain passes the drift's start)",
    )


def dagster_fields(config_class: type) -> dict[str, Any]:
    """Pydantic field definitions (type, Field) for a Dagster Config, from a config dataclass:
    the dataclass stays the one declaration of the fields, defaults and meanings."""
    kinds = field_types(config_class)
    return {
        field.name: (
            kinds[field.name] | None if field.default is None else kinds[field.name],
            Field(field.default, description=field.metadata.get("description")),
        )
        for field in dataclasses.fields(config_class)
    }


class _CandidateSettings(dg.Config):
    ann_min_items: int = 5_000
    # Negative control: shuffle which item each training label points at (validation
    # and test stay true). The gates must then block the candidate; a test proves they do.
    label_permutation_seed: int | None = None

    def two_tower_config(self) -> TwoTowerConfig:
        return TwoTowerConfig(
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(TwoTowerConfig)}
        )

    def gate_thresholds(self) -> gates.GateConfig:
        return gates.GateConfig(
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(gates.GateConfig)}
        )


# Two-tower hyperparameters (recloop.models.configs.TwoTowerConfig) and the gate
# thresholds (recloop.evaluation.gates.GateConfig), flat as run config has them.
CandidateConfig = create_model(
    "CandidateConfig",
    __base__=_CandidateSettings,
    __doc__="Two-tower hyperparameters and gate thresholds of a candidate.",
    **dagster_fields(TwoTowerConfig),
    **dagster_fields(gates.GateConfig),
)


@dg.asset(
    key="item_text_embeddings",
    deps=["int_items"],
    group_name=TRAINING_GROUP,
    pool=WAREHOUSE_POOL,
    description="MiniLM embedding of each item's title and genres, cached by text hash.",
)
def item_text_embeddings(
    context: dg.AssetExecutionContext, recloop: RecloopResource
) -> pd.DataFrame:
    layout = recloop.layout()
    with duckdb.connect(str(layout.warehouse), read_only=True) as warehouse:
        items = warehouse.execute(
            "select item_id, title, genres from int_items order by item_id"
        ).df()
    run = embed_items(items, layout.cache / "item_text_embeddings.parquet")
    context.add_output_metadata(
        {"encoder": ENCODER_ID, "items": len(items), "computed": run.computed, "reused": run.reused}
    )
    return run.embeddings


def build_training_inputs(
    recloop: RecloopResource,
    text_embeddings: pd.DataFrame,
    valid_fraction: float,
    test_fraction: float,
    holdout_since: pd.Timestamp | None = None,
    feature_service: str = FEATURE_SERVICE,
) -> tuple[Path, pd.DataFrame, TemporalCutoffs]:
    """Point-in-time training inputs from Feast with `feature_service`'s views, saved under
    `training/<content hash>/`: the directory, the examples and the cut-offs."""
    layout = recloop.layout()
    store = recloop.feature_store()
    with_stream = uses_stream(store, feature_service)
    interactions = pd.read_parquet(layout.marts / "user_item_interactions.parquet")
    examples, cutoffs = labelled_examples(
        store, interactions, valid_fraction, test_fraction, holdout_since, with_stream
    )
    with duckdb.connect(str(layout.warehouse), read_only=True) as warehouse:
        catalog = warehouse.execute("select item_id from int_items order by item_id").df()
    items = item_snapshot(store, catalog, cutoffs.valid_start)
    inputs = TrainingInputs(
        examples=examples,
        user_snapshots=user_snapshots(store, examples["user_id"], cutoffs, with_stream),
        items=items,
        text_embeddings=embedding_matrix(text_embeddings, items["item_id"].tolist()),
        cutoffs=cutoffs,
    )
    return save_inputs(inputs, layout.training), examples, cutoffs


@dg.asset(
    key="training_set",
    deps=["user_item_interactions", "feast_feature_views"],
    group_name=TRAINING_GROUP,
    pool=WAREHOUSE_POOL,
    description="Point-in-time examples from Feast get_historical_features, split by time.",
)
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    recloop: RecloopResource,
    item_text_embeddings: pd.DataFrame,
) -> str:
    since = pd.Timestamp(config.holdout_since) if config.holdout_since else None
    directory, examples, cutoffs = build_training_inputs(
        recloop, item_text_embeddings, config.valid_fraction, config.test_fraction, since
    )
    summary = split_summary(examples, cutoffs)
    context.add_output_metadata(
        {
            "path": str(directory),
            "examples": len(examples),
            "feature_service": FEATURE_SERVICE,
            "holdout_since": config.holdout_since or "",
            "split": dg.MetadataValue.json(summary),
            **{f"{part}_rows": info["rows"] for part, info in summary["parts"].items()},
        }
    )
    return str(directory)


def code_version() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def flat_metrics(metrics: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{segment}/{name}": float(value)
        for segment, values in metrics.items()
        for name, value in values.items()
    }


@dg.asset(
    key="model_candidate",
    group_name=TRAINING_GROUP,
    check_specs=[
        dg.AssetCheckSpec(name, asset="model_candidate", blocking=True, description=text)
        for name, text in GATE_CHECKS.items()
    ],
    description="Two-tower candidate: trained, evaluated on the test part, registered in the model registry.",
)
def model_candidate(
    context: dg.AssetExecutionContext,
    config: CandidateConfig,
    recloop: RecloopResource,
    training_set: str,
):
    inputs = load_inputs(Path(training_set))
    if config.label_permutation_seed is not None:
        inputs = shuffle_training_labels(inputs, config.label_permutation_seed)
        context.log.warning("negative control: training labels were shuffled")
    registry = Registry(recloop.layout().registry)
    tenants = sorted(inputs.examples["tenant_id"].astype(str).unique())
    newest = [newest_validated_event(recloop.layout(), tenant) for tenant in tenants]
    data_end = max(t for t in newest if t is not None)
    gate_config = config.gate_thresholds()
    candidate = fit_candidate(
        inputs,
        config.two_tower_config(),
        ann_min_items=config.ann_min_items,
        metadata={"training_set": training_set},
    )
    champion = registry.champion()
    served_share = champion_served_share(inputs.examples, champion)
    results = [
        *candidate_gates(
            candidate, registry.load(champion) if champion else None, gate_config, served_share
        ),
        ope_gate_result(
            recloop.layout(),
            daily_features_as_of(recloop.feature_store()),
            Retriever(candidate.bundle),
            Greedy(),
            gate_config.ope_min_ess,
            gate_config.ope_tolerance,
        ),
    ]
    passed = gates.verdict(results)
    gate = {"passed": passed, "results": [r.to_dict() for r in results]}
    version = registry.register(
        candidate.bundle,
        labels={"gate": "passed" if passed else "failed", "feature_service": FEATURE_SERVICE},
        metadata={
            "metrics": candidate.metrics,
            "popularity": candidate.popularity_metrics,
            "gate": gate,
            "gate_config": gate_config.to_dict(),
            "training_set": training_set,
            "cutoffs": inputs.cutoffs.to_metadata(),
            # Retraining sensors and the nightly schedule count events after this as new.
            "data_end": data_end.isoformat(),
            "feature_service": FEATURE_SERVICE,
            "code_version": code_version(),
            "config": config.two_tower_config().to_dict(),
            "best_epoch": candidate.bundle.metadata["best_epoch"],
        },
    )
    checks = gate_check_results(gate["results"], GATE_CHECKS, CHECK_OF_GATE)
    yield dg.Output(
        version,
        metadata={
            "model_version": version,
            "gate_passed": passed,
            "best_epoch": int(candidate.bundle.metadata["best_epoch"]),
            "index": candidate.bundle.index.kind,
            "training_curve": training_curve(
                candidate.history, int(candidate.bundle.metadata["best_epoch"])
            ),
            **flat_metrics(candidate.metrics, ""),
            **flat_metrics({"all": candidate.popularity_metrics}, "popularity/"),
        },
    )
    yield from checks


@dg.asset(
    key="champion_model",
    deps=["feast_online_store"],
    group_name=TRAINING_GROUP,
    description="The registry's champion: the candidate, once every blocking gate passed "
    "and the online store holds the features it serves with.",
)
def champion_model(
    context: dg.AssetExecutionContext, recloop: RecloopResource, model_candidate: str
) -> dg.MaterializeResult:
    registry = Registry(recloop.layout().registry)
    if registry.champion() == model_candidate:
        context.log.info(f"{model_candidate} is already the champion")
    else:
        try:
            registry.promote(model_candidate, reason=f"gates passed in run {context.run.run_id}")
        except PromotionError as exc:
            raise dg.Failure(str(exc)) from exc
    return dg.MaterializeResult(
        metadata={
            "champion": model_candidate,
            "promotions": len(registry.history()),
        }
    )
