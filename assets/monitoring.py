"""Monitoring and retraining triggers: the drift report, and what requests a retrain.

Everything here is per tenant: each tenant's champion is watched on its own traffic,
and a retrain is a `refresh_and_retrain` run of that tenant's partition only.

- `drift_report` (asset, a partition per tenant): recloop.monitoring.drift_report's
  report on the champion's own traffic, with plots and a per-feature table in the UI.
- `drift_sensor`: the same report every 30 s for every tenant with a champion; past a
  threshold it requests one retrain per champion (run key `drift:<champion>`), tagged
  with why.
- `retrain_on_new_data_sensor`: one run per `retrain_after_events` new validated
  events since a champion's newest label (run key from the champion and the count).
- `nightly_retrain`: a 03:00 UTC safety net for every tenant: it trains a tenant that
  has no champion yet, and retrains one whose log holds events newer than its
  champion's data.

Run keys are built from data only (model version, event counts, tenant), so a daemon
restart or a lost cursor never asks for the same retrain twice.
"""

import json
from datetime import datetime
from pathlib import Path

import dagster as dg

from assets.partitions import TENANTS
from assets.plots import ctr_curve
from assets.resources import RecloopResource
from assets.training import TRAINING_JOB
from recloop.data.layout import write_json_atomic
from recloop.data.validated_log import events_after, labels_by_tenant
from recloop.monitoring.champion_drift import (
    ChampionState,
    CurrentDrift,
    current_drift,
    drift_retrain,
    record_episode,
    summary,
)
from recloop.monitoring.drift_report import MonitoringConfig, ctr_series

MONITORING_GROUP = "monitoring"
RETRAIN_JOB = "refresh_and_retrain"


def _feature_table(features: list) -> str:
    lines = [
        "| feature | PSI | JS | Wasserstein | missing ref | missing now | drifted |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in features:
        lines.append(
            f"| {f.feature} | {f.psi:.3f} | {f.jensen_shannon:.3f} | {f.wasserstein:.3f} | "
            f"{f.reference_missing:.0%} | {f.current_missing:.0%} | {'yes' if f.drifted else ''} |"
        )
    return "\n".join(lines)


@dg.asset(
    key="drift_report",
    deps=["validated_events"],
    group_name=MONITORING_GROUP,
    partitions_def=TENANTS,
    check_specs=[
        dg.AssetCheckSpec(
            "no_drift",
            asset="drift_report",
            description="The champion's CTR, scores, clicked genres and user features are stable.",
        )
    ],
    description="Drift of the champion's online CTR, score distribution, clicked genres and user features.",
)
def drift_report_asset(context: dg.AssetExecutionContext, recloop: RecloopResource):
    settings, layout, tenant = recloop.settings(), recloop.layout(), context.partition_key
    drift = current_drift(
        layout, recloop.registry(), recloop.feature_store(), settings.drift_window, tenant
    )
    if drift is None:
        raise dg.Failure(
            f"tenant {tenant} has no champion to monitor: run the train_and_promote job first"
        )
    report = drift.report
    path = write_json_atomic(report.to_dict(), layout.drift_report_file(report.window_id))
    check = dg.AssetCheckResult(
        check_name="no_drift",
        passed=not report.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reasons": dg.MetadataValue.json(list(report.reasons))},
    )
    metadata = _drift_metadata(drift, settings.drift_window, path)
    yield dg.MaterializeResult(metadata=metadata, check_results=[check])


def _drift_metadata(drift: CurrentDrift, window: int, path: Path) -> dict[str, object]:
    """The report in the Dagster UI: verdict, feature tables, CTR numbers and plot."""
    report = drift.report
    metadata: dict[str, object] = {
        "summary": summary(report, window),
        "drifted": report.drifted,
        "reasons": dg.MetadataValue.json(list(report.reasons)),
        "report": dg.MetadataValue.path(str(path)),
        "feature_statistics": dg.MetadataValue.md(_feature_table(list(report.features))),
        "training_serving_skew": dg.MetadataValue.md(_feature_table(drift.skew)),
    }
    if report.enough_data:
        mine = drift.events.loc[drift.events["model_version"] == report.model_version]
        bucket = max(len(mine) // 40, 100)
        metadata.update(
            ctr_reference=report.reference.ctr,
            ctr_recent=report.recent.ctr,
            ctr_relative_drop=report.ctr_relative_drop,
            score_psi=report.score_psi,
            click_genre_js=report.click_genre_js,
            ctr_plot=ctr_curve(ctr_series(mine, bucket), bucket),
        )
    return metadata


@dg.sensor(
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Retrains a tenant once per champion when its drift report finds drift (CTR, "
    "scores, clicked genres, user features), after enough post-drift traffic. Stopped by "
    "default.",
)
def drift_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """Retrain a tenant once per champion when its drift report says the world moved,
    after `post_drift_impressions` more impressions show the new behaviour
    (recloop.monitoring.champion_drift.drift_retrain decides). The cursor keeps each
    watched tenant's state apart; a tenant's entry goes with its last champion."""
    settings, layout, registry = recloop.settings(), recloop.layout(), recloop.registry()
    tenants = registry.champion_tenants()
    if not tenants:
        return dg.SkipReason("no champion to monitor")
    previous: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    cursors: dict[str, str] = {}
    requests, skipped = [], []
    store = recloop.feature_store()
    for tenant in tenants:
        drift = current_drift(layout, registry, store, settings.drift_window, tenant)
        if drift is None:
            skipped.append(f"{tenant}: no champion")
            continue
        decision = drift_retrain(
            drift, previous.get(tenant), settings.drift_window, settings.post_drift_impressions
        )
        cursors[tenant] = decision.cursor
        report = drift.report
        if decision.since is not None:
            record_episode(layout, report, decision.since)
        if not decision.retrain:
            skipped.append(f"{tenant}: {decision.skip_reason}")
            continue
        context.log.info(f"drift on {tenant}'s {report.model_version}: {decision.reasons}")
        requests.append(_drift_retrain_request(tenant, drift, decision.since, decision.reasons))
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else "; ".join(skipped),
        cursor=json.dumps(cursors, sort_keys=True),
    )


def _drift_retrain_request(
    tenant: str, drift: CurrentDrift, since: str, reasons: str
) -> dg.RunRequest:
    """A retrain of `tenant` whose test window starts at the drift, so the gates judge the
    candidate on the world after it."""
    report = drift.report
    holdout = MonitoringConfig.drift_retrain_holdout
    split = {"valid_fraction": holdout, "test_fraction": holdout, "holdout_since": since}
    tags = {
        # ahead of queued validation and freshness runs: the model is stale
        "dagster/priority": "10",
        "recloop/trigger": "drift",
        "recloop/champion": report.model_version,
        "recloop/window": report.window_id,
        "recloop/drift_since": since,
        "recloop/reason": reasons[:1000],
    }
    return dg.RunRequest(
        run_key=f"drift:{report.model_version}",
        partition_key=tenant,
        run_config={"ops": {"training_set": {"config": split}}},
        tags=tags,
    )


@dg.sensor(
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Retrains a tenant after every RECLOOP_RETRAIN_AFTER_EVENTS validated events "
    "newer than its champion's data. Stopped by default.",
)
def retrain_on_new_data_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """One retrain per `retrain_after_events` validated events newer than a tenant
    champion's data."""
    layout, registry = recloop.layout(), recloop.registry()
    step = recloop.settings().retrain_after_events
    requests, skipped = [], []
    for tenant in registry.champion_tenants():
        champion = ChampionState.of(registry, tenant)
        if champion.version is None or champion.data_end is None:
            skipped.append(f"{tenant}: no champion (or one trained before data_end was recorded)")
            continue
        new = events_after(layout, tenant, champion.data_end)
        if new < step:
            skipped.append(
                f"{tenant}: {new:,} new events since {champion.data_end}; retrain at {step:,}"
            )
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"new-data:{champion.version}:{new // step}",
                partition_key=tenant,
                tags={
                    "recloop/trigger": "new-data",
                    "recloop/champion": champion.version,
                    "recloop/reason": f"{new:,} events newer than {champion.data_end.isoformat()}",
                },
            )
        )
    if not requests:
        return dg.SkipReason("; ".join(skipped) or "no champion")
    return requests


@dg.schedule(
    cron_schedule="0 3 * * *",
    job_name=RETRAIN_JOB,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="At 03:00 UTC, trains every tenant without a champion and retrains every "
    "tenant with validated events newer than its champion's data (a safety net for the "
    "sensors). Stopped by default.",
)
def nightly_retrain(context: dg.ScheduleEvaluationContext, recloop: RecloopResource):
    """A run per tenant that has no champion yet or events newer than its champion's data."""
    layout, registry = recloop.layout(), recloop.registry()
    day = _day(context)
    requests, skipped = [], []
    for tenant in context.instance.get_dynamic_partitions(TENANTS.name):
        champion = ChampionState.of(registry, tenant)
        if champion.version is None or champion.data_end is None:
            requests.append(
                dg.RunRequest(
                    run_key=f"nightly:{day}:{tenant}:bootstrap",
                    partition_key=tenant,
                    tags={"recloop/trigger": "nightly"},
                )
            )
            continue
        new = events_after(layout, tenant, champion.data_end)
        if new == 0:
            skipped.append(f"nothing changed since {champion.version} was trained")
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"nightly:{day}:{champion.version}",
                partition_key=tenant,
                tags={"recloop/trigger": "nightly", "recloop/reason": f"{new:,} new events"},
            )
        )
    if not requests:
        return dg.SkipReason("; ".join(skipped) or "no tenants yet")
    return requests


@dg.sensor(
    job_name=TRAINING_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains, gates and promotes the first champion of each tenant that has none, "
    "once its labels are in the marts and the online store was built after its validation.",
)
def first_champion_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """A `train_and_promote` run for each tenant partition without a champion whose labels
    the features runs have built. Keyed by the tenant and its label count: a run whose gates
    fail (e.g. a tenant whose data is mostly quarantined) is not asked for again until the
    tenant has other labels, and the other tenants keep serving meanwhile."""
    layout = recloop.layout()
    champions = recloop.registry().champions()
    waiting = [
        tenant
        for tenant in context.instance.get_dynamic_partitions(TENANTS.name)
        if tenant not in champions
    ]
    if not waiting:
        return dg.SkipReason("every tenant has a champion")
    if not _features_after_validation(context.instance):
        return dg.SkipReason(
            f"{', '.join(waiting)}: waiting for the features to be built after the last validation"
        )
    labels = labels_by_tenant(layout)
    requests = [
        dg.RunRequest(
            run_key=f"first-champion:{tenant}:{labels[tenant]}",
            partition_key=tenant,
            tags={"recloop/trigger": "first-champion"},
        )
        for tenant in waiting
        if labels.get(tenant)
    ]
    if not requests:
        return dg.SkipReason(f"{', '.join(waiting)}: no labels in the marts yet")
    return requests


def _features_after_validation(instance: dg.DagsterInstance) -> bool:
    """Whether the online store was last materialized after the last validation run."""
    features = instance.get_latest_materialization_event(dg.AssetKey("feast_online_store"))
    validated = instance.get_latest_materialization_event(dg.AssetKey("validated_events"))
    return features is not None and (validated is None or features.timestamp > validated.timestamp)


def _day(context: dg.ScheduleEvaluationContext) -> str:
    moment: datetime = context.scheduled_execution_time
    return moment.date().isoformat()
