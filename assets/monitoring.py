"""Monitoring and retraining triggers: the drift report, and what requests a retrain.

- `drift_report` (asset): recloop.monitoring.drift_report's report on the champion's own
  traffic, with plots and a per-feature table in the Dagster UI.
- `drift_sensor`: the same report every 30 s; past a threshold it requests one
  `refresh_and_retrain` run per champion (run key `drift:<champion>`), tagged with why.
- `retrain_on_new_data_sensor`: one run per `retrain_after_events` new validated
  events since the champion's newest label (run key from the champion and the count).
- `nightly_retrain`: a 03:00 UTC safety net that skips when no event is newer than
  the champion's data.

Run keys are built from data only (model version, event counts), so a daemon
restart or a lost cursor never asks for the same retrain twice.
"""

from datetime import datetime
from pathlib import Path

import dagster as dg

from assets.plots import ctr_curve
from assets.resources import RecloopResource
from recloop.data.layout import write_json_atomic
from recloop.data.validated_log import events_after
from recloop.monitoring.champion_drift import (
    ChampionState,
    CurrentDrift,
    current_drift,
    drift_retrain,
    record_episode,
    summary,
)
from recloop.monitoring.drift_report import MonitoringConfig, ctr_series
from recloop.registry.model_registry import Registry

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
    settings, layout = recloop.settings(), recloop.layout()
    drift = current_drift(layout, recloop.feature_store(), settings.drift_window)
    if drift is None:
        raise dg.Failure("no champion to monitor: run the train_and_promote job first")
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
    description="Retrains once per champion when its drift report finds drift (CTR, scores, "
    "clicked genres, user features), after enough post-drift traffic. Stopped by default.",
)
def drift_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """Retrain once per champion when its drift report says the world moved, after
    `post_drift_impressions` more impressions show the new behaviour
    (recloop.monitoring.champion_drift.drift_retrain decides)."""
    settings, layout = recloop.settings(), recloop.layout()
    drift = current_drift(layout, recloop.feature_store(), settings.drift_window)
    if drift is None:
        return dg.SkipReason("no champion to monitor")
    decision = drift_retrain(
        drift, context.cursor, settings.drift_window, settings.post_drift_impressions
    )
    report = drift.report
    if decision.since is not None:
        record_episode(layout, report, decision.since)
    if not decision.retrain:
        return dg.SensorResult(skip_reason=decision.skip_reason, cursor=decision.cursor)
    context.log.info(f"drift on {report.model_version}: {decision.reasons}")
    holdout = MonitoringConfig.drift_retrain_holdout
    split = {"valid_fraction": holdout, "test_fraction": holdout, "holdout_since": decision.since}
    tags = {
        # ahead of queued validation and freshness runs: the model is stale
        "dagster/priority": "10",
        "recloop/trigger": "drift",
        "recloop/champion": report.model_version,
        "recloop/window": report.window_id,
        "recloop/drift_since": decision.since,
        "recloop/reason": decision.reasons[:1000],
    }
    request = dg.RunRequest(
        run_key=f"drift:{report.model_version}",
        run_config={"ops": {"training_set": {"config": split}}},
        tags=tags,
    )
    return dg.SensorResult(run_requests=[request], cursor=decision.cursor)


@dg.sensor(
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Retrains after every RECLOOP_RETRAIN_AFTER_EVENTS validated events newer "
    "than the champion's data. Stopped by default.",
)
def retrain_on_new_data_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """One retrain per `retrain_after_events` validated events newer than the champion's data."""
    layout = recloop.layout()
    champion = ChampionState.of(Registry(layout.registry))
    if champion.version is None or champion.data_end is None:
        return dg.SkipReason("no champion (or one trained before data_end was recorded)")
    new = events_after(layout, champion.tenant, champion.data_end)
    step = recloop.settings().retrain_after_events
    if new < step:
        return dg.SkipReason(f"{new:,} new events since {champion.data_end}; retrain at {step:,}")
    return dg.RunRequest(
        run_key=f"new-data:{champion.version}:{new // step}",
        tags={
            "recloop/trigger": "new-data",
            "recloop/champion": champion.version,
            "recloop/reason": f"{new:,} events newer than {champion.data_end.isoformat()}",
        },
    )


@dg.schedule(
    cron_schedule="0 3 * * *",
    job_name=RETRAIN_JOB,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrains at 03:00 UTC when validated events newer than the champion's data "
    "exist (a safety net for the sensors). Stopped by default.",
)
def nightly_retrain(context: dg.ScheduleEvaluationContext, recloop: RecloopResource):
    """Retrain at night, but only when some event is newer than the champion's data."""
    layout = recloop.layout()
    champion = ChampionState.of(Registry(layout.registry))
    if champion.version is None or champion.data_end is None:
        return dg.RunRequest(
            run_key=f"nightly:{_day(context)}:bootstrap", tags={"recloop/trigger": "nightly"}
        )
    new = events_after(layout, champion.tenant, champion.data_end)
    if new == 0:
        return dg.SkipReason(f"nothing changed since {champion.version} was trained")
    return dg.RunRequest(
        run_key=f"nightly:{_day(context)}:{champion.version}",
        tags={"recloop/trigger": "nightly", "recloop/reason": f"{new:,} new events"},
    )


def _day(context: dg.ScheduleEvaluationContext) -> str:
    moment: datetime = context.scheduled_execution_time
    return moment.date().isoformat()
