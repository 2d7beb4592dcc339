"""The one factory of model chains: the champion's and every experiment variant's assets.

    training_set -> model -> evaluation (blocking gate checks) -> release

A `ModelChain` names the assets and says what is trained (recloop.training.chain's
`ModelRecipe`), which gates judge it (`GatePlan`, with one blocking asset check per
gate group) and how the judged model is released: promoted to champion, deployed for
an experiment variant, or served as batch lists pushed to Feast. The champion's chain
judges inside its model asset (`model_candidate` carries the checks that hold
`champion_model`); a variant's chain has an `evaluation` asset of its own. Asset
bodies only wire the resource to the domain steps.
"""

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from feast.data_source import PushMode
from pydantic import Field, create_model

from assets.dbt import WAREHOUSE_POOL
from assets.plots import metrics_table, model_comparison, training_curve
from assets.resources import RecloopResource
from feature_repo.definitions import BATCH_LISTS_PUSH_SOURCE
from feature_repo.store import online_user_features
from feature_repo.training import build_training_inputs, daily_features_as_of
from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.data.validated_log import newest_validated_event, training_tenant
from recloop.evaluation import gates
from recloop.experiments.ope_replay import OPE_GATE, ope_gate_result
from recloop.features.training_set import split_summary
from recloop.inference.batch_lists import batch_list_rows
from recloop.inference.policies import Policy
from recloop.inference.retrievers import Servable, servable
from recloop.models.configs import TwoTowerConfig, field_types
from recloop.models.model_artifact import ModelBundle
from recloop.registry.model_registry import PromotionError, Registry, model_tenant
from recloop.training.candidate import (
    TrainingInputs,
    load_inputs,
    save_inputs,
    shuffle_training_labels,
)
from recloop.training.chain import (
    ALGORITHM_CONFIGS,
    GatePlan,
    Judgement,
    ModelRecipe,
    OpeGate,
    code_version,
    judge,
    labels_only_inputs,
    train,
)

# One blocking check per gate group; CHECK_OF_GATE says which group each gate is in.
PROMOTION_CHECKS = {
    "lift_over_popularity": "NDCG@10 lift over popularity's, lower bound of a paired "
    "bootstrap interval over test users, at least the configured margin.",
    "no_regression_vs_champion": "NDCG@10 within tolerance of the champion's, same test set.",
    "coverage_and_bias": "Distinct items recommended (against popularity's) and popularity "
    "bias within bounds.",
    "sanity": "Finite weights, scores that vary, an index (EASE: item-to-item weights; "
    "multi-stage: every candidate source) that holds the whole catalog.",
    OPE_GATE: "Off-policy estimate on logged exploration traffic not below what it earned "
    "(skipped while the log holds too little exploration).",
}
# A variant meets the champion in its online test, not offline.
VARIANT_CHECKS = {k: v for k, v in PROMOTION_CHECKS.items() if k != "no_regression_vs_champion"}
POPULARITY_CHECKS = {"full_lists": "Every test user gets k items."}
CHECK_OF_GATE = {
    "lift_over_popularity": "lift_over_popularity",
    "no_regression_vs_champion": "no_regression_vs_champion",
    "coverage": "coverage_and_bias",
    "popularity_bias": "coverage_and_bias",
    "finite_weights": "sanity",
    "scores_not_constant": "sanity",
    "index_covers_catalog": "sanity",
    OPE_GATE: OPE_GATE,
    "full_lists": "full_lists",
}


class Release(StrEnum):
    PROMOTE = "promote"
    DEPLOY = "deploy"
    BATCH_LISTS = "batch_lists"


@dataclass(frozen=True)
class ChainKeys:
    release: dg.AssetKey
    training_set: dg.AssetKey | None = None
    model: dg.AssetKey | None = None
    # None: the model asset judges the model and carries the gate checks.
    evaluation: dg.AssetKey | None = None


@dataclass(frozen=True)
class VariantTarget:
    """Where a variant's release goes: its experiment, and the spec's training as written."""

    experiment: str
    variant: str
    training_digest: str
    # batch lists: the list length; with no recipe, the model they serve ("champion" or a version)
    k: int = 10
    serves: str | None = None


@dataclass(frozen=True)
class ModelChain:
    keys: ChainKeys
    group: str
    label: str
    release: Release
    # None: nothing is trained; the release serves `target.serves`.
    recipe: ModelRecipe | None = None
    plan: GatePlan | None = None
    checks: Mapping[str, str] = field(default_factory=dict)
    target: VariantTarget | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    registry_labels: Mapping[str, str] = field(default_factory=dict)
    registry_metadata: Mapping[str, Any] = field(default_factory=dict)
    # The champion's hyperparameters and split come from run config (`candidate_config`,
    # TrainingSetConfig); a variant's are its spec's, which its deployment is keyed by.
    run_config: bool = False
    release_description: str = ""
    # The champion's chain is partitioned by tenant (one model and champion per tenant); a
    # variant's trains for its spec's tenant (None: the only tenant with labels).
    partitions: dg.PartitionsDefinition | None = None
    tenant: str | None = None


def chain_tenant(context: dg.AssetExecutionContext, chain: ModelChain) -> str | None:
    """The tenant this materialization is for: the partition's, else the chain's."""
    return context.partition_key if chain.partitions is not None else chain.tenant


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
        f.name: (
            kinds[f.name] | None if f.default is None else kinds[f.name],
            Field(f.default, description=f.metadata.get("description")),
        )
        for f in dataclasses.fields(config_class)
    }


class _CandidateSettings(dg.Config):
    ann_min_items: int = 5_000
    # Negative control: shuffle which item each training label points at (validation
    # and test stay true). The gates must then block the candidate; a test proves they do.
    label_permutation_seed: int | None = None

    def applied_to(self, recipe: ModelRecipe, plan: GatePlan) -> tuple[ModelRecipe, GatePlan]:
        thresholds = {f.name: getattr(self, f.name) for f in dataclasses.fields(gates.GateConfig)}
        # The rest are the algorithm's own hyperparameters (`candidate_config` added them).
        own = set(_CandidateSettings.model_fields) | set(thresholds)
        params = {name: getattr(self, name) for name in type(self).model_fields if name not in own}
        return (
            replace(recipe, params=params, ann_min_items=self.ann_min_items),
            replace(plan, config=gates.GateConfig(**thresholds)),
        )


@functools.cache
def candidate_config(config_class: type) -> type[_CandidateSettings]:
    """The run config of a chain's model asset: the algorithm's hyperparameters (its config
    dataclass, recloop.models.configs) and the gate thresholds
    (recloop.evaluation.gates.GateConfig), flat as run config has them. One class per
    algorithm (cached), whichever chains use it."""
    name = config_class.__name__.removesuffix("Config")
    return create_model(
        f"{name}CandidateConfig",
        __base__=_CandidateSettings,
        __doc__=f"{name} hyperparameters and gate thresholds of a candidate.",
        **dagster_fields(config_class),
        **dagster_fields(gates.GateConfig),
    )


# The champion chain's run config with RECLOOP_CHAMPION_ALGORITHM=two_tower.
CandidateConfig = candidate_config(TwoTowerConfig)


CheckOutcome = Literal["passed", "failed", "skipped"]


def gate_outcome(result: Mapping[str, object]) -> CheckOutcome:
    """A gate's verdict in a word (a skipped gate passed without deciding)."""
    if result.get("skipped"):
        return "skipped"
    return "passed" if result["passed"] else "failed"


def grouped_outcome(results: Sequence[Mapping[str, object]]) -> CheckOutcome:
    """The outcome of a check that groups these gates: failed if any failed, skipped if
    all were skipped, passed otherwise."""
    words = {gate_outcome(r) for r in results}
    return "failed" if "failed" in words else "skipped" if words == {"skipped"} else "passed"


def gate_check_results(
    results: Sequence[Mapping[str, object]], checks: Iterable[str]
) -> list[dg.AssetCheckResult]:
    """One blocking check result per check: it passes when every gate it groups passed.
    A check whose gates were all skipped is shown as what it is: a warning saying
    "skipped" (it blocks nothing), not a green pass."""
    outcomes = []
    for check in checks:
        mine = [r for r in results if CHECK_OF_GATE[str(r["name"])] == check]
        outcome = grouped_outcome(mine)
        outcomes.append(
            dg.AssetCheckResult(
                check_name=check,
                passed=outcome == "passed",
                severity=(
                    dg.AssetCheckSeverity.WARN
                    if outcome == "skipped"
                    else dg.AssetCheckSeverity.ERROR
                ),
                metadata={
                    "outcome": outcome,
                    **{f"{r['name']}_value": float(r["value"]) for r in mine},
                    **{f"{r['name']}_threshold": float(r["threshold"]) for r in mine},
                    "detail": "; ".join(f"{r['name']}: {r['detail']}" for r in mine),
                },
            )
        )
    return outcomes


def check_outcome(evaluation: dg.AssetCheckEvaluation) -> CheckOutcome:
    """What a gate check's evaluation says: passed, failed, or skipped (a warning whose
    gates could not decide)."""
    if evaluation.passed:
        return "passed"
    outcome = evaluation.metadata.get("outcome")
    return "skipped" if outcome is not None and outcome.value == "skipped" else "failed"


def model_chain_assets(chain: ModelChain) -> list[dg.AssetsDefinition]:
    """The chain's assets, in lineage order."""
    assets = []
    if chain.recipe is not None:
        assets += [_training_set_asset(chain), _model_asset(chain)]
        if chain.keys.evaluation is not None:
            assets.append(_evaluation_asset(chain))
    return [*assets, _release_asset(chain)]


def _ope_gate(recloop: RecloopResource) -> OpeGate:
    layout, features_as_of = recloop.layout(), daily_features_as_of(recloop.feature_store())

    def gate(model: Servable, policy: Policy, config: gates.GateConfig) -> gates.GateResult:
        return ope_gate_result(
            layout, features_as_of, model, policy, config.ope_min_ess, config.ope_tolerance
        )

    return gate


def _check_specs(chain: ModelChain, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=key, blocking=True, description=text)
        for name, text in chain.checks.items()
    ]


# --- training set ----------------------------------------------------------------------


def _training_set_asset(chain: ModelChain) -> dg.AssetsDefinition:
    recipe = chain.recipe
    reads = (
        f" with {recipe.feature_service}'s features" if recipe.reads_features else " (labels only)"
    )

    @dg.asset(
        key=chain.keys.training_set,
        deps=["user_item_interactions", "feast_feature_views"],
        ins={"item_text_embeddings": dg.AssetIn("item_text_embeddings")}
        if recipe.reads_features
        else {},
        group_name=chain.group,
        pool=WAREHOUSE_POOL,
        partitions_def=chain.partitions,
        tags=dict(chain.tags),
        description=f"{chain.label}: point-in-time examples{reads}, split by time.",
    )
    def training_set(
        context: dg.AssetExecutionContext,
        config: TrainingSetConfig,
        recloop: RecloopResource,
        **inputs: pd.DataFrame,
    ) -> str:
        tenant = training_tenant(recloop.layout(), chain_tenant(context, chain))
        directory, inputs_ = _build_training_set(recloop, recipe, tenant, config, inputs)
        summary = split_summary(inputs_.examples, inputs_.cutoffs)
        context.add_output_metadata(
            {
                "path": str(directory),
                "tenant": tenant,
                "examples": len(inputs_.examples),
                "feature_service": recipe.feature_service or "",
                "holdout_since": config.holdout_since or "",
                "split": dg.MetadataValue.json(summary),
                **{f"{part}_rows": info["rows"] for part, info in summary["parts"].items()},
            }
        )
        return str(directory)

    return training_set


def _build_training_set(
    recloop: RecloopResource,
    recipe: ModelRecipe,
    tenant: str,
    config: TrainingSetConfig,
    inputs: Mapping[str, pd.DataFrame],
) -> tuple[Path, TrainingInputs]:
    layout = recloop.layout()
    holdout_since = pd.Timestamp(config.holdout_since) if config.holdout_since else None
    if not recipe.reads_features:
        labels = labels_only_inputs(
            layout, tenant, config.valid_fraction, config.test_fraction, holdout_since
        )
        return save_inputs(labels, layout.training), labels
    return build_training_inputs(
        layout,
        tenant,
        recloop.feature_store(),
        inputs["item_text_embeddings"],
        config.valid_fraction,
        config.test_fraction,
        holdout_since,
        recipe.feature_service,
    )


# --- model -----------------------------------------------------------------------------


def _model_asset(chain: ModelChain) -> dg.AssetsDefinition:
    judged_here = chain.keys.evaluation is None
    decorator = dg.asset(
        key=chain.keys.model,
        ins={"training_set": dg.AssetIn(chain.keys.training_set)},
        group_name=chain.group,
        partitions_def=chain.partitions,
        tags=dict(chain.tags),
        check_specs=_check_specs(chain, chain.keys.model) if judged_here else None,
        description=f"{chain.label}: the {chain.recipe.algorithm} model (a two-tower trained on "
        "the train part, then refit on every label unless `refit` is off, the registry keeping "
        "both weight sets and serving the refit; popularity and EASE fitted on the labels "
        "before the test part; the multi-stage recommender fitted on those, then refit on "
        "every label, both states kept), registered in the model registry"
        + (
            ", judged on the test part by weights that never saw it (the gates are blocking "
            "checks)."
            if judged_here
            else "."
        ),
    )
    if chain.run_config:
        run_config = candidate_config(ALGORITHM_CONFIGS[chain.recipe.algorithm])

        def model(
            context: dg.AssetExecutionContext,
            config: run_config,
            recloop: RecloopResource,
            training_set: str,
        ):
            yield from _train_and_register(context, chain, recloop, training_set, config)

    else:

        def model(context: dg.AssetExecutionContext, recloop: RecloopResource, training_set: str):
            yield from _train_and_register(context, chain, recloop, training_set, None)

    return decorator(model)


def _train_and_register(
    context: dg.AssetExecutionContext,
    chain: ModelChain,
    recloop: RecloopResource,
    training_set: str,
    config: _CandidateSettings | None,
):
    layout, registry = recloop.layout(), recloop.registry()
    inputs = load_inputs(Path(training_set))
    recipe, plan = chain.recipe, chain.plan
    if config is not None:
        recipe, plan = config.applied_to(recipe, plan)
        if config.label_permutation_seed is not None:
            inputs = shuffle_training_labels(inputs, config.label_permutation_seed)
            context.log.warning("negative control: training labels were shuffled")
    # Every epoch, label window and search result in the run's log, so the run page moves.
    trained = train(recipe, inputs, training_set, log=context.log.info)
    labels = dict(chain.registry_labels)
    metadata = {**chain.registry_metadata, **_training_metadata(layout, inputs, training_set)}
    judgement = None
    if chain.keys.evaluation is None:
        # The champion of the tenant the candidate was trained for.
        champion = registry.champion(model_tenant(trained.model.metadata, "the candidate"))
        # With the weights it was judged as: a refit champion saw most of this test window.
        champion_model = registry.load(champion, with_evaluated=True) if champion else None
        judgement = judge(trained.model, inputs, plan, _ope_gate(recloop), champion, champion_model)
        labels["gate"] = "passed" if judgement.passed else "failed"
        metadata |= _judgement_metadata(judgement) | {"gate_config": plan.config.to_dict()}
    version = registry.register(trained.model, labels, {**metadata, **trained.metadata})
    shown: dict[str, Any] = {"model_version": version}
    if isinstance(trained.model, ModelBundle):
        shown |= {
            "best_epoch": trained.best_epoch,
            "index": trained.model.index.kind,
            "training_curve": training_curve(trained.history, trained.best_epoch),
        }
    if judgement is not None:
        shown |= _judgement_shown(judgement)
    yield dg.Output(version, metadata=shown | trained.stage_metrics())
    if judgement is not None:
        yield from gate_check_results(judgement.gate()["results"], chain.checks)


def _training_metadata(layout: DataLayout, inputs: TrainingInputs, training_set: str) -> dict:
    tenants = sorted(inputs.examples["tenant_id"].astype(str).unique())
    newest = [newest_validated_event(layout, tenant) for tenant in tenants]
    return {
        "training_set": training_set,
        "cutoffs": inputs.cutoffs.to_metadata(),
        # Retraining sensors and the nightly schedule count events after this as new.
        "data_end": max(t for t in newest if t is not None).isoformat(),
        "code_version": code_version(),
    }


def _judgement_metadata(judgement: Judgement) -> dict[str, Any]:
    return {
        "metrics": judgement.metrics,
        "popularity": judgement.popularity,
        "gate": judgement.gate(),
    }


# The few numbers the model page plots across runs; the rest is in the metrics table.
HEADLINE_METRICS = ("ndcg@10", "recall@10", "coverage")


def _judgement_shown(judgement: Judgement) -> dict[str, Any]:
    """The model page: the verdict, headline metrics (rounded, plotted across runs; the
    champion's and popularity's on the same test users beside them), one segment x metric
    table and one chart of the candidate, the champion and popularity."""
    models = {"candidate": judgement.metrics["all"]}
    if judgement.champion is not None:
        models["champion"] = judgement.champion
    models["popularity"] = judgement.popularity
    headline = {
        (name if label == "candidate" else f"{label}/{name}"): round(float(values[name]), 4)
        for label, values in models.items()
        for name in HEADLINE_METRICS
    }
    return {
        "gate_passed": judgement.passed,
        **headline,
        "metrics": dg.MetadataValue.md(metrics_table(judgement.metrics, judgement.popularity)),
        "comparison": model_comparison(models, HEADLINE_METRICS),
    }


# --- evaluation ------------------------------------------------------------------------


def _evaluation_asset(chain: ModelChain) -> dg.AssetsDefinition:
    @dg.asset(
        key=chain.keys.evaluation,
        ins={
            "model": dg.AssetIn(chain.keys.model),
            "training_set": dg.AssetIn(chain.keys.training_set),
        },
        group_name=chain.group,
        partitions_def=chain.partitions,
        tags=dict(chain.tags),
        check_specs=_check_specs(chain, chain.keys.evaluation),
        description=f"{chain.label}: offline metrics on the test part against popularity; "
        "the gates are blocking checks.",
    )
    def evaluation(
        context: dg.AssetExecutionContext, recloop: RecloopResource, model: str, training_set: str
    ):
        registry = recloop.registry()
        inputs = load_inputs(Path(training_set))
        judged = registry.load(model, with_evaluated=True)
        judgement = judge(judged, inputs, chain.plan, _ope_gate(recloop))
        result = {"version": model, **_judgement_metadata(judgement)}
        yield dg.Output(result, metadata={"model_version": model, **_judgement_shown(judgement)})
        yield from gate_check_results(result["gate"]["results"], chain.checks)

    return evaluation


# --- release ---------------------------------------------------------------------------


def _release_asset(chain: ModelChain) -> dg.AssetsDefinition:
    judged = chain.keys.evaluation or chain.keys.model
    online = chain.release is Release.PROMOTE or judged is None

    @dg.asset(
        key=chain.keys.release,
        ins={"judged": dg.AssetIn(judged)} if judged else {},
        # Serving reads the online store: the features must be there first.
        deps=["feast_online_store"] if online else [],
        group_name=chain.group,
        partitions_def=chain.partitions,
        tags=dict(chain.tags),
        description=chain.release_description,
    )
    def release(
        context: dg.AssetExecutionContext, recloop: RecloopResource, **judged_model: Any
    ) -> dg.MaterializeResult:
        registry = recloop.registry()
        version, gate = _released_model(chain, registry, judged_model.get("judged"))
        try:
            if chain.release is Release.PROMOTE:
                return _promote(context, registry, version)
            metadata = {"model_version": version}
            if chain.release is Release.BATCH_LISTS:
                metadata |= _push_batch_lists(recloop, chain, version)
            registry.deploy_variant(
                chain.target.experiment,
                chain.target.variant,
                version,
                chain.target.training_digest,
                gate,
                reason=f"run {context.run.run_id}",
            )
        except PromotionError as exc:
            raise dg.Failure(str(exc)) from exc
        return dg.MaterializeResult(metadata=metadata)

    return release


def _released_model(
    chain: ModelChain, registry: Registry, judged: str | dict | None
) -> tuple[str, dict]:
    """The version the release serves and its gate verdict."""
    if isinstance(judged, dict):
        return judged["version"], judged["gate"]
    if isinstance(judged, str):
        return judged, registry.metadata(judged).get("gate", {})
    serves = chain.target.serves
    if serves == "champion":
        champion = registry.champion(chain.tenant)
        if champion is None:
            raise dg.Failure("no champion to compute batch lists with: run train_and_promote")
        return champion, {"passed": True, "results": [], "detail": "serves champion"}
    if serves not in registry.versions():
        raise dg.Failure(f"model {serves} is not in the registry")
    return serves, {"passed": True, "results": [], "detail": f"serves {serves}"}


def _promote(
    context: dg.AssetExecutionContext, registry: Registry, version: str
) -> dg.MaterializeResult:
    """Make `version` its tenant's champion; the metadata says what changed, or that
    nothing did."""
    tenant = registry.tenant_of(version)
    previous = registry.champion(tenant)
    if previous == version:
        change = f"unchanged: {version} (the same content as the champion) is already serving"
    else:
        registry.promote(version, reason=f"gates passed in run {context.run.run_id}")
        change = f"promoted {version}, replacing {previous}" if previous else f"promoted {version}"
    context.log.info(change)
    return dg.MaterializeResult(
        metadata={
            "change": change,
            "tenant": tenant,
            "champion": version,
            "previous_champion": previous or "none",
            "promoted": previous != version,
            "promotions": len(registry.history(tenant)),
        }
    )


def _push_batch_lists(recloop: RecloopResource, chain: ModelChain, version: str) -> dict:
    """Every known user's top-k list, pushed to Feast's batch_lists view and kept on disk."""
    target, layout, store = chain.target, recloop.layout(), recloop.feature_store()
    loaded = recloop.registry().load(version)
    model, tenant = servable(loaded), model_tenant(loaded.metadata, version)
    users = sorted(model.user_index)
    now = datetime.now(UTC)
    features = online_user_features(store, tenant, users, now) if model.needs_features else None
    rows = batch_list_rows(model, version, tenant, users, features, chain.label, target.k, now)
    store.push(BATCH_LISTS_PUSH_SOURCE, rows, to=PushMode.ONLINE)
    path = write_parquet_atomic(rows, layout.batch_lists(target.experiment, target.variant))
    return {"users": len(rows), "k": target.k, "pushed_at": now.isoformat(), "path": str(path)}
