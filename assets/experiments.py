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
import numpy as np
import pandas as pd

from assets.model_chain import (
    POPULARITY_CHECKS,
    VARIANT_CHECKS,
    ChainKeys,
    ModelChain,
    Release,
    VariantTarget,
    model_chain_assets,
)
from assets.plots import ctr_by_variant, ope_table, variant_table
from assets.resources import RecloopResource
from feature_repo.training import daily_features_as_of
from recloop.data.layout import DataLayout, write_json_atomic
from recloop.data.validated_log import logged_events
from recloop.evaluation.gates import GateConfig
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
from recloop.experiments.ope_replay import ope_next_to_truth, ope_targets
from recloop.experiments.readout import ExperimentReadout, experiment_readout, json_safe
from recloop.experiments.serving import variant_policy
from recloop.experiments.spec import spec_files
from recloop.registry.model_registry import Registry
from recloop.training.candidate import K
from recloop.training.chain import POPULARITY, GatePlan, ModelRecipe

logger = logging.getLogger(__name__)

EXPERIMENTS_GROUP = "experiments"
READOUT_GROUP = "experiment_readouts"
# Readouts refresh on their own clock: they read traffic, not a pipeline output.
READOUT_FRESHNESS = dg.AutomationCondition.on_cron("*/10 * * * *")
SPECS_SENSOR = "experiment_specs_sensor"

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


def variant_chain(spec: ExperimentSpec, variant: Variant) -> ModelChain:
    """The variant's model chain: trained and judged like the champion's but its offline
    comparison with the champion (the online test decides), then deployed or served as
    batch lists; a batch variant that trains nothing only pushes its model's lists."""
    keys = {
        role: dg.AssetKey(list(key)) for role, key in variant_asset_keys(spec, variant.name).items()
    }
    label = variant_label(spec.name, variant.name)
    batch = variant.inference == "batch"
    recipe = (
        ModelRecipe(variant.algorithm, variant.params, variant.feature_service)
        if variant.trains
        else None
    )
    if batch:
        release_description = (
            f"{label}: every known user's top-{variant.batch.k} list, pushed to Feast's "
            f"batch_lists view (refreshed {variant.batch.refresh_cron} UTC); puts the variant live."
        )
    else:
        release_description = (
            f"{label}: puts the gated model live for the variant "
            "(registry/experiments.jsonl, read by the running service)."
        )
    return ModelChain(
        keys=ChainKeys(
            release=keys["batch_lists" if batch else "deployment"],
            training_set=keys.get("training_set"),
            model=keys.get("model"),
            evaluation=keys.get("evaluation"),
        ),
        group=_group(spec),
        label=label,
        release=Release.BATCH_LISTS if batch else Release.DEPLOY,
        recipe=recipe,
        plan=GatePlan(GateConfig(), against_champion=False, policy=variant_policy(variant)),
        checks=POPULARITY_CHECKS if variant.algorithm == POPULARITY else VARIANT_CHECKS,
        target=VariantTarget(
            spec.name,
            variant.name,
            variant.training_digest,
            k=variant.batch.k if batch else K,
            serves=variant.model,
        ),
        tags={"recloop/experiment": spec.name, "recloop/variant": variant.name},
        registry_labels={"experiment": spec.name, "variant": variant.name},
        registry_metadata={
            "experiment": spec.name,
            "variant": variant.name,
            "training_digest": variant.training_digest,
            "params": dict(variant.params),
        },
        release_description=release_description,
        tenant=spec.tenant,
    )


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
        layout = recloop.layout()
        events = experiment_events(layout.root, spec)
        result = experiment_readout_of(spec, events)
        ope = []
        if isinstance(spec.test, ABTest):
            targets = ope_targets(recloop.registry(), spec)
            features_as_of = daily_features_as_of(recloop.feature_store())
            ope = ope_next_to_truth(layout, features_as_of, events, targets)
        report = {**result.to_dict(), "ope": json_safe(ope)}
        path = write_json_atomic(report, layout.experiment_readout(spec.name))
        return dg.MaterializeResult(metadata=_readout_metadata(result, len(events), ope, path))

    return readout


def _readout_metadata(
    result: ExperimentReadout, events: int, ope: list[dict[str, object]], path: Path
) -> dict[str, object]:
    """What the readout shows in the Dagster UI: summary, tables, plot, per-variant numbers."""
    metadata: dict[str, object] = {
        "summary": result.summary,
        "events": events,
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
    return metadata


def _number(value: float) -> float:
    """Metadata floats must be finite to plot; NaN (no data yet) becomes -1."""
    return float(value) if np.isfinite(value) else -1.0


def batch_lists_path(root: Path, spec: ExperimentSpec, variant: Variant) -> Path:
    """Where the lists last pushed for a batch variant are kept (audit, offline reads)."""
    return DataLayout(root).batch_lists(spec.name, variant.name)


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
        spec_assets = [
            a
            for v in spec.variants.values()
            if v.trains or v.inference == "batch"
            for a in model_chain_assets(variant_chain(spec, v))
        ]
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
        registry = recloop.registry()
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
