"""Online experiments compiled into Dagster: the specs of `experiments/` become assets.

For each spec (recloop.experiments, experiments/README.md) and each variant that
trains, the factory builds the chain `variant_asset_keys` names, under the asset-key
prefix `experiments/<spec>/<variant>/`:

    training_set -> model -> evaluation (gates: blocking checks) -> deployment | batch_lists

`deployment` (realtime) and `batch_lists` (batch: top-k lists pushed to Feast's
`batch_lists` view) record the variant's model in the registry's deployment log,
which the running service reads: the variant goes live without a restart. Every
spec also gets `experiments/<spec>/readout` (online results, recloop.experiments.readout).

`experiment_specs_sensor` asks for one run of a spec's job per spec content
(run key `<spec>:<sha256>`) while a variant it serves lacks a deployed model for
the spec as now written; each batch variant has a schedule from its `refresh_cron`.
The definitions are rebuilt whenever Dagster reloads the code location (the daemon
does every 60 s), so a new spec file needs no code change.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

# What `dg.define_asset_job` returns; dagster does not export the class by name.
from feast.data_source import PushMode

from assets.dbt import WAREHOUSE_POOL
from assets.plots import ctr_by_variant, ope_table, variant_table
from assets.resources import RecloopResource
from assets.training import CHECK_OF_GATE as CHAMPION_CHECK_OF_GATE
from assets.training import (
    GATE_CHECKS,
    build_training_inputs,
    code_version,
    flat_metrics,
    gate_check_results,
)
from feature_repo.definitions import BATCH_LISTS_PUSH_SOURCE
from feature_repo.store import online_user_features
from feature_repo.training import daily_features_as_of
from recloop.data.layout import DataLayout, write_json_atomic, write_parquet_atomic
from recloop.data.validated_log import logged_events
from recloop.evaluation import gates
from recloop.experiments import (
    ABTest,
    ExperimentSpec,
    SpecError,
    Variant,
    load_spec,
    readout_asset_key,
    variant_asset_keys,
    variant_label,
)
from recloop.experiments.ope_replay import ope_gate_result, ope_next_to_truth
from recloop.experiments.readout import ExperimentReadout, experiment_readout, json_safe
from recloop.experiments.serving import variant_policy
from recloop.experiments.spec import spec_files
from recloop.features.training_set import label_entities, split_summary, temporal_cutoffs
from recloop.inference.policies import Policy
from recloop.inference.retrievers import Servable, servable
from recloop.models.configs import TwoTowerConfig
from recloop.models.popularity_model import PopularityModel, fit_popularity
from recloop.registry.model_registry import PromotionError, Registry
from recloop.training.candidate import (
    Candidate,
    TrainingInputs,
    candidate_gates,
    evaluate_bundle,
    evaluate_popularity,
    evaluation_set,
    fit_candidate,
    load_inputs,
    popularity_metrics,
    save_inputs,
)

logger = logging.getLogger(__name__)

EXPERIMENTS_GROUP = "experiments"
READOUT_GROUP = "experiment_readouts"
# Readouts refresh on their own clock: they read traffic, not a pipeline output.
READOUT_FRESHNESS = dg.AutomationCondition.on_cron("*/10 * * * *")
SPECS_SENSOR = "experiment_specs_sensor"
# Offline split of every experiment variant's training set (as the champion's).
VALID_FRACTION = TEST_FRACTION = 0.1
K = 10

# What `dg.define_asset_job` returns: dagster exports the function but not its result's
# class, and these jobs are only handed back to dagster (Definitions, a sensor's `jobs`).
AssetJob = Any


def experiment_job_name(spec: ExperimentSpec) -> str:
    return f"experiment_{spec.name}"


def _group(spec: ExperimentSpec) -> str:
    return f"{EXPERIMENTS_GROUP}__{spec.name}"


@dataclass(frozen=True)
class ExperimentDefinitions:
    assets: list[dg.AssetsDefinition]
    jobs: list[AssetJob]
    schedules: list[dg.ScheduleDefinition]
    sensors: list[dg.SensorDefinition]

    @property
    def selection(self) -> dg.AssetSelection:
        """Every experiment asset: the pipeline's own jobs leave them out."""
        return dg.AssetSelection.key_prefixes([EXPERIMENTS_GROUP])


# --- helpers the assets call -----------------------------------------------------------


def _catalog(recloop: RecloopResource) -> np.ndarray:
    with duckdb.connect(str(recloop.layout().warehouse), read_only=True) as warehouse:
        rows = warehouse.execute("select item_id from int_items order by item_id").fetchall()
    return np.asarray([str(row[0]) for row in rows])


def popularity_training_set(recloop: RecloopResource) -> tuple[Path, pd.DataFrame]:
    """Labels split by time, without features (popularity reads none), saved like the
    two-tower inputs so every variant is evaluated on the same kind of test part."""
    layout = recloop.layout()
    interactions = pd.read_parquet(layout.marts / "user_item_interactions.parquet")
    labels = label_entities(interactions)
    cutoffs = temporal_cutoffs(labels["event_timestamp"], VALID_FRACTION, TEST_FRACTION)
    labels["split"] = cutoffs.part_of(labels["event_timestamp"]).to_numpy()
    catalog = _catalog(recloop)
    inputs = TrainingInputs(
        examples=labels,
        user_snapshots=pd.DataFrame(
            {"user_id": pd.Series(dtype=str), "as_of": pd.Series(dtype="datetime64[us, UTC]")}
        ),
        items=pd.DataFrame({"item_id": catalog}),
        text_embeddings=np.zeros((len(catalog), 0), dtype=np.float32),
        cutoffs=cutoffs,
    )
    return save_inputs(inputs, layout.training), labels


def _evaluate(
    recloop: RecloopResource, variant: Variant, version: str, inputs: TrainingInputs
) -> dict:
    """Offline metrics on the test part and the gate verdict, for either model kind; a
    challenger (not the popularity baseline) also faces the off-policy gate."""
    registry = Registry(recloop.layout().registry)
    model = registry.load(version)
    test = evaluation_set(inputs, "test", inputs.cutoffs.test_start)
    baseline = popularity_metrics(test)
    if isinstance(model, PopularityModel):
        metrics, lengths = evaluate_popularity(model, test, K)
        results = [gates.full_lists(lengths, K)]
    else:
        metrics = evaluate_bundle(model, test)
        candidate = Candidate(model, metrics, baseline, test)
        # No champion comparison: the online test is where the variant meets the champion.
        config = gates.GateConfig()
        results = [
            *(
                r
                for r in candidate_gates(candidate, None, config)
                if r.name != "no_regression_vs_champion"
            ),
            ope_gate_result(
                recloop.layout(),
                daily_features_as_of(recloop.feature_store()),
                servable(model),
                variant_policy(variant),
                config.ope_min_ess,
                config.ope_tolerance,
            ),
        ]
    passed = gates.verdict(results)
    return {
        "version": version,
        "metrics": metrics,
        "popularity": baseline,
        "gate": {"passed": passed, "results": [r.to_dict() for r in results]},
    }


def _gate_checks(spec: ExperimentSpec, variant: Variant) -> dict[str, str]:
    """Blocking checks on a variant's evaluation: the gates of its kind."""
    if variant.algorithm == "popularity":
        return {"full_lists": "Every test user gets k items."}
    # the champion's gates but its comparison with the champion: the online test decides
    return {name: text for name, text in GATE_CHECKS.items() if name != "no_regression_vs_champion"}


CHECK_OF_GATE = {**CHAMPION_CHECK_OF_GATE, "full_lists": "full_lists"}


def batch_list_rows(
    recloop: RecloopResource, version: str, label: str, k: int, now: datetime
) -> pd.DataFrame:
    """Every known user's top-k list from the model, as rows of Feast's batch_lists view."""
    registry = Registry(recloop.layout().registry)
    model = servable(registry.load(version))
    users = sorted(model.user_index)
    features = (
        online_user_features(recloop.feature_store(), users, now) if model.needs_features else None
    )
    rows = []
    for n, user in enumerate(users):
        row = {name: [values[n]] for name, values in features.items()} if features else None
        result = model.recommend(user, row, k)
        rows.append((user, result.item_ids, result.scores))
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "list_id": label,
            "item_ids": [r[1] for r in rows],
            "scores": [r[2] for r in rows],
            "model_version": version,
            "event_timestamp": pd.Timestamp(now),
        }
    )


# --- the factory -----------------------------------------------------------------------


def _variant_assets(spec: ExperimentSpec, variant: Variant) -> list[dg.AssetsDefinition]:
    keys = {
        role: dg.AssetKey(list(key)) for role, key in variant_asset_keys(spec, variant.name).items()
    }
    group = _group(spec)
    label = variant_label(spec.name, variant.name)
    assets: list[dg.AssetsDefinition] = []
    tags = {"recloop/experiment": spec.name, "recloop/variant": variant.name}

    if variant.trains:
        two_tower = variant.algorithm == "two_tower"

        @dg.asset(
            key=keys["training_set"],
            deps=["user_item_interactions", "feast_feature_views"],
            ins={"item_text_embeddings": dg.AssetIn("item_text_embeddings")} if two_tower else {},
            group_name=group,
            pool=WAREHOUSE_POOL,
            tags=tags,
            description=f"{label}: point-in-time examples"
            + (f" with {variant.feature_service}'s features" if two_tower else " (labels only)")
            + ", split by time.",
        )
        def training_set(context: dg.AssetExecutionContext, recloop: RecloopResource, **inputs):
            if two_tower:
                directory, examples, cutoffs = build_training_inputs(
                    recloop,
                    inputs["item_text_embeddings"],
                    VALID_FRACTION,
                    TEST_FRACTION,
                    feature_service=variant.feature_service,
                )
            else:
                directory, examples = popularity_training_set(recloop)
                cutoffs = load_inputs(directory).cutoffs
            summary = split_summary(examples, cutoffs)
            context.add_output_metadata(
                {
                    "path": str(directory),
                    "examples": len(examples),
                    "feature_service": variant.feature_service or "",
                    "split": dg.MetadataValue.json(summary),
                }
            )
            return str(directory)

        @dg.asset(
            key=keys["model"],
            ins={"training_set": dg.AssetIn(keys["training_set"])},
            group_name=group,
            tags=tags,
            description=f"{label}: the {variant.algorithm} model trained with the spec's "
            "parameters, registered in the model registry.",
        )
        def model(context: dg.AssetExecutionContext, recloop: RecloopResource, training_set: str):
            inputs = load_inputs(Path(training_set))
            registry = Registry(recloop.layout().registry)
            common = {
                "experiment": spec.name,
                "variant": variant.name,
                "training_digest": variant.training_digest,
                "training_set": training_set,
                "cutoffs": inputs.cutoffs.to_metadata(),
                "params": dict(variant.params),
                "code_version": code_version(),
            }
            if two_tower:
                config = TwoTowerConfig(**variant.params)
                candidate = fit_candidate(inputs, config, metadata={"training_set": training_set})
                trained = candidate.bundle
                extra = {
                    "feature_service": variant.feature_service,
                    "config": config.to_dict(),
                    "best_epoch": candidate.bundle.metadata["best_epoch"],
                }
            else:
                trained = fit_popularity(
                    inputs.examples,
                    inputs.items["item_id"].to_numpy(),
                    inputs.cutoffs.test_start,
                    variant.params.get("window_days"),
                )
                extra = {"window_days": variant.params.get("window_days")}
            version = registry.register(
                trained,
                labels={"experiment": spec.name, "variant": variant.name},
                metadata={**common, **extra},
            )
            context.add_output_metadata({"model_version": version})
            return version

        checks = _gate_checks(spec, variant)

        @dg.asset(
            key=keys["evaluation"],
            ins={
                "model": dg.AssetIn(keys["model"]),
                "training_set": dg.AssetIn(keys["training_set"]),
            },
            group_name=group,
            tags=tags,
            check_specs=[
                dg.AssetCheckSpec(name, asset=keys["evaluation"], blocking=True, description=text)
                for name, text in checks.items()
            ],
            description=f"{label}: offline metrics on the test part against popularity; "
            "the gates are blocking checks.",
        )
        def evaluation(
            context: dg.AssetExecutionContext,
            recloop: RecloopResource,
            model: str,
            training_set: str,
        ):
            result = _evaluate(recloop, variant, model, load_inputs(Path(training_set)))
            yield dg.Output(
                result,
                metadata={
                    "model_version": model,
                    "gate_passed": result["gate"]["passed"],
                    **flat_metrics(result["metrics"], ""),
                    **flat_metrics({"all": result["popularity"]}, "popularity/"),
                },
            )
            yield from gate_check_results(result["gate"]["results"], checks, CHECK_OF_GATE)

        assets += [training_set, model, evaluation]

    if variant.inference == "batch":
        upstream = {"evaluation": dg.AssetIn(keys["evaluation"])} if variant.trains else {}

        @dg.asset(
            key=keys["batch_lists"],
            ins=upstream,
            deps=[] if variant.trains else ["feast_online_store"],
            group_name=group,
            tags=tags,
            description=f"{label}: every known user's top-{variant.batch.k} list, pushed to "
            f"Feast's batch_lists view (refreshed {variant.batch.refresh_cron} UTC); puts the "
            "variant live.",
        )
        def batch_lists(context: dg.AssetExecutionContext, recloop: RecloopResource, **inputs):
            registry = Registry(recloop.layout().registry)
            if variant.trains:
                version, gate = inputs["evaluation"]["version"], inputs["evaluation"]["gate"]
            else:
                version = _existing_model(registry, variant)
                gate = {"passed": True, "results": [], "detail": f"serves {variant.model}"}
            now = datetime.now(UTC)
            rows = batch_list_rows(recloop, version, label, variant.batch.k, now)
            recloop.feature_store().push(BATCH_LISTS_PUSH_SOURCE, rows, to=PushMode.ONLINE)
            path = batch_lists_path(recloop.layout().root, spec, variant)
            write_parquet_atomic(rows, path)
            _deploy(registry, spec, variant, version, gate, context)
            return dg.MaterializeResult(
                metadata={
                    "model_version": version,
                    "users": len(rows),
                    "k": variant.batch.k,
                    "pushed_at": now.isoformat(),
                    "path": str(path),
                }
            )

        assets.append(batch_lists)
    elif variant.trains:

        @dg.asset(
            key=keys["deployment"],
            ins={"evaluation": dg.AssetIn(keys["evaluation"])},
            group_name=group,
            tags=tags,
            description=f"{label}: puts the gated model live for the variant "
            "(registry/experiments.jsonl, read by the running service).",
        )
        def deployment(
            context: dg.AssetExecutionContext, recloop: RecloopResource, evaluation: dict
        ) -> dg.MaterializeResult:
            registry = Registry(recloop.layout().registry)
            _deploy(registry, spec, variant, evaluation["version"], evaluation["gate"], context)
            return dg.MaterializeResult(metadata={"model_version": evaluation["version"]})

        assets.append(deployment)
    return assets


def experiment_events(root: Path, spec: ExperimentSpec) -> pd.DataFrame:
    """The spec's validated impressions and engagements (every tenant), by its label."""
    return logged_events(DataLayout(root), spec.start, variant_prefix=f"{spec.name}:")


def experiment_readout_of(spec: ExperimentSpec, events: pd.DataFrame) -> ExperimentReadout:
    """recloop.experiments.readout on the spec's own events, labels and allocation."""
    labels = [variant_label(spec.name, name) for name in spec.test.served]
    if isinstance(spec.test, ABTest):
        allocation = {
            variant_label(spec.name, name): share / 100
            for name, share in spec.test.allocation.items()
        }
        control = variant_label(spec.name, spec.test.control)
        return experiment_readout(events, "ab", labels, allocation, control)
    return experiment_readout(events, "interleaving", labels)


def _readout_asset(spec: ExperimentSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=dg.AssetKey(list(readout_asset_key(spec))),
        deps=["validated_events"],
        group_name=READOUT_GROUP,
        automation_condition=READOUT_FRESHNESS,
        tags={"recloop/experiment": spec.name},
        description=f"Online results of {spec.name} ({spec.test.kind}): per-variant CTR with "
        "intervals, the difference and its significance, the sample-ratio check, or the "
        "interleaving preference with its sign test.",
    )
    def readout(context: dg.AssetExecutionContext, recloop: RecloopResource):
        events = experiment_events(recloop.layout().root, spec)
        result = experiment_readout_of(spec, events)
        report = result.to_dict()
        ope = []
        if isinstance(spec.test, ABTest):
            ope = ope_next_to_truth(
                recloop.layout(),
                daily_features_as_of(recloop.feature_store()),
                events,
                _ope_targets(recloop, spec),
            )
        report["ope"] = json_safe(ope)
        path = recloop.layout().root / "experiments" / "readouts" / f"{spec.name}.json"
        write_json_atomic(report, path)
        metadata: dict[str, object] = {
            "summary": result.summary,
            "events": len(events),
            "report": dg.MetadataValue.path(str(path)),
        }
        if result.variants:
            metadata["variants"] = dg.MetadataValue.md(variant_table(result))
            metadata["ctr_by_variant"] = ctr_by_variant(result)
            for summary in result.variants:
                name = summary.variant.split(":", 1)[1]
                metadata[f"{name}/ctr"] = _number(summary.ctr.value)
                metadata[f"{name}/impressions"] = summary.impressions
        if ope:
            metadata["ope"] = dg.MetadataValue.md(ope_table(ope))
        if result.sample_ratio is not None:
            metadata["sample_ratio_mismatch"] = result.sample_ratio.mismatch
            metadata["sample_ratio_p"] = _number(result.sample_ratio.p_value)
        if result.interleaving is not None:
            metadata["preference_delta"] = _number(result.interleaving.delta.value)
            metadata["sign_test_p"] = _number(result.interleaving.sign_test_p_value)
            metadata["winner"] = result.interleaving.winner or ""
        return dg.MaterializeResult(metadata=metadata)

    return readout


def _ope_targets(
    recloop: RecloopResource, spec: ExperimentSpec
) -> dict[str, tuple[Servable, Policy]]:
    """The realtime variants' models and policies, as the service serves them now."""
    registry = Registry(recloop.layout().registry)
    targets = {}
    for name in spec.test.served:
        variant = spec.variants[name]
        if variant.inference == "batch":
            continue
        if variant.trains:
            version = registry.deployed_version(spec.name, name, variant.training_digest)
        else:
            version = registry.champion() if variant.model == "champion" else variant.model
        if version is not None:
            model = servable(registry.load(version))
            targets[variant_label(spec.name, name)] = (model, variant_policy(variant))
    return targets


def _number(value: float) -> float:
    """Metadata floats must be finite to plot; NaN (no data yet) becomes -1."""
    return float(value) if np.isfinite(value) else -1.0


def batch_lists_path(root: Path, spec: ExperimentSpec, variant: Variant) -> Path:
    """Where the lists last pushed for a batch variant are kept (audit, offline reads)."""
    return root / "experiments" / "batch_lists" / f"{spec.name}__{variant.name}.parquet"


def _existing_model(registry: Registry, variant: Variant) -> str:
    if variant.model == "champion":
        champion = registry.champion()
        if champion is None:
            raise dg.Failure("no champion to compute batch lists with: run train_and_promote")
        return champion
    if variant.model not in registry.versions():
        raise dg.Failure(f"model {variant.model} is not in the registry")
    return variant.model


def _deploy(
    registry: Registry,
    spec: ExperimentSpec,
    variant: Variant,
    version: str,
    gate: dict,
    context: dg.AssetExecutionContext,
) -> None:
    try:
        registry.deploy_variant(
            spec.name,
            variant.name,
            version,
            variant.training_digest,
            gate,
            reason=f"run {context.run.run_id}",
        )
    except PromotionError as exc:
        raise dg.Failure(str(exc)) from exc


def _needs_run(registry: Registry, spec: ExperimentSpec) -> list[str]:
    """The variants of `spec` that train or run in batch and have no deployed model for
    the spec as now written."""
    return [
        name
        for name, variant in spec.variants.items()
        if (variant.trains or variant.inference == "batch")
        and registry.deployed_version(spec.name, name, variant.training_digest) is None
    ]


def load_valid_specs(directory: Path) -> list[ExperimentSpec]:
    """The valid specs of `directory`; an invalid file is left out and its problems logged,
    so one bad file never takes the code location (and the drift loop) down with it.
    CI (`recloop experiments validate`) is where invalid files are stopped."""
    if not directory.is_dir():
        return []
    specs = []
    for file in spec_files(directory):
        try:
            specs.append(load_spec(file))
        except SpecError as error:
            logger.warning("experiment spec left out of the definitions:\n%s", error)
    return specs


def build_experiment_definitions(specs: Iterable[ExperimentSpec]) -> ExperimentDefinitions:
    """Assets, jobs, schedules and the spec sensor for every spec (nothing for none)."""
    specs = sorted(specs, key=lambda spec: spec.name)
    assets: list[dg.AssetsDefinition] = []
    jobs: list[AssetJob] = []
    schedules: list[dg.ScheduleDefinition] = []
    for spec in specs:
        spec_assets = [a for v in spec.variants.values() for a in _variant_assets(spec, v)]
        assets += [*spec_assets, _readout_asset(spec)]
        if spec_assets:
            jobs.append(
                dg.define_asset_job(
                    experiment_job_name(spec),
                    selection=dg.AssetSelection.groups(_group(spec)),
                    description=f"Train, gate and put live the variants of {spec.source.name}.",
                    tags={"recloop/experiment": spec.name},
                )
            )
        for variant in spec.variants.values():
            if variant.inference != "batch":
                continue
            key = dg.AssetKey(list(variant_asset_keys(spec, variant.name)["batch_lists"]))
            job = dg.define_asset_job(
                f"refresh_{spec.name}__{variant.name}", selection=dg.AssetSelection.assets(key)
            )
            jobs.append(job)
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"refresh_{spec.name}__{variant.name}_schedule",
                    cron_schedule=variant.batch.refresh_cron,
                    execution_timezone="UTC",
                    job=job,
                    default_status=dg.DefaultScheduleStatus.RUNNING,
                    description=f"Recompute the batch lists of {variant_label(spec.name, variant.name)}.",
                )
            )
    built = [spec for spec in specs if any(variant_asset_keys(spec, n) for n in spec.variants)]
    sensors = [_specs_sensor(built, jobs)] if built else []
    if specs:
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                "experiment_readouts_automation",
                target=dg.AssetSelection.groups(READOUT_GROUP),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=60,
                description="Refreshes every running experiment's readout every 10 minutes.",
            )
        )
    return ExperimentDefinitions(assets, jobs, schedules, sensors)


def _specs_sensor(specs: list[ExperimentSpec], jobs: list[AssetJob]) -> dg.SensorDefinition:
    by_name = {experiment_job_name(spec): spec for spec in specs}

    @dg.sensor(
        name=SPECS_SENSOR,
        jobs=[job for job in jobs if job.name in by_name],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Trains, gates and deploys a spec's variants once per spec content, "
        "while the spec has not ended and some variant lacks a deployed model.",
    )
    def experiment_specs_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
        registry = Registry(recloop.layout().registry)
        now = datetime.now(UTC)
        requests, waiting = [], []
        for job_name, spec in by_name.items():
            if now >= spec.stop:
                continue
            missing = _needs_run(registry, spec)
            if not missing:
                continue
            waiting.append(f"{spec.name}: {', '.join(missing)}")
            requests.append(
                dg.RunRequest(
                    run_key=f"{spec.name}:{spec.digest}",
                    job_name=job_name,
                    tags={
                        "recloop/experiment": spec.name,
                        "recloop/spec_digest": spec.digest[:16],
                        "recloop/variants": ",".join(missing),
                    },
                )
            )
        if not requests:
            return dg.SkipReason("every spec's variants are deployed as written")
        context.log.info("specs to build: " + "; ".join(waiting))
        return dg.SensorResult(run_requests=requests)

    return experiment_specs_sensor
