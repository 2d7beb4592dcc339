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

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from assets.plots import ctr_curve
from assets.resources import RecloopResource
from recloop.data.layout import DataLayout, write_json_atomic, write_parquet_atomic
from recloop.features.feature_vectors import USER_VIEW, activity_columns, feature_refs
from recloop.monitoring.drift import feature_drift
from recloop.monitoring.drift_report import (
    DriftReport,
    MonitoringConfig,
    ctr_series,
    drift_report,
    impressions_since,
    served_windows,
)
from recloop.registry.model_registry import Registry

MONITORING_GROUP = "monitoring"
RETRAIN_JOB = "refresh_and_retrain"
# User features the drift sensor compares: those the world moves (ratings). Click and
# impression counts are left out because the service's own lists drive them (a closed
# loop shifts them by itself), recency because it moves with the clock every midnight.
NUMERIC_USER_FEATURES = [
    f"{USER_VIEW}__{column}"
    for column in activity_columns()
    if column.startswith("rating_count") or column == "mean_rating"
]
FEATURE_SAMPLE = 500


def _validated_events_glob(layout: DataLayout, tenant: str) -> str | None:
    """The DuckDB glob of a tenant's validated events; None when there are none yet
    (read_parquet fails on a glob that matches nothing)."""
    tenant_dir = layout.root / "validated" / "events" / f"tenant={tenant}"
    if not any(tenant_dir.glob("date=*/*.parquet")):
        return None
    return str(tenant_dir / "date=*" / "*.parquet")


def served_events(layout: DataLayout, tenant: str) -> pd.DataFrame:
    """Validated impressions and engagements that a model served (model_version set)."""
    pattern = _validated_events_glob(layout, tenant)
    columns = (
        "event_id, user_id, item_id, event_type, value, event_timestamp, request_id, model_version"
    )
    if pattern is None:
        return pd.DataFrame(columns=columns.split(", "))
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        return conn.execute(
            f"select {columns} from read_parquet($pattern, union_by_name = true) "
            "where model_version is not null and event_type in ('impression', 'click', 'purchase')",
            {"pattern": pattern},
        ).df()


def events_after(layout: DataLayout, tenant: str, after: pd.Timestamp) -> int:
    """Validated events of `tenant` stamped after `after`."""
    pattern = _validated_events_glob(layout, tenant)
    if pattern is None:
        return 0
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        (count,) = conn.execute(
            "select count(*) from read_parquet($pattern, union_by_name = true) "
            "where event_timestamp > $after",
            {"pattern": pattern, "after": after.to_pydatetime()},
        ).fetchone()
    return int(count)


def newest_validated_event(layout: DataLayout, tenant: str) -> pd.Timestamp | None:
    """Time of the newest validated event of `tenant`: what a model trained now has seen."""
    pattern = _validated_events_glob(layout, tenant)
    if pattern is None:
        return None
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        (newest,) = conn.execute(
            "select max(event_timestamp) from read_parquet($pattern, union_by_name = true)",
            {"pattern": pattern},
        ).fetchone()
    return None if newest is None else pd.Timestamp(newest).tz_convert("UTC")


def item_genres(layout: DataLayout, tenant: str) -> dict[str, str]:
    """item_id -> '|'-separated genres from the newest validated item snapshot."""
    pattern = str(layout.validated_catalog("items", tenant) / "*.parquet")
    with duckdb.connect() as conn:
        rows = conn.execute(
            "select item_id, arg_max(genres, snapshot_date) from read_parquet($pattern, "
            "union_by_name = true) group by item_id",
            {"pattern": pattern},
        ).fetchall()
    return {str(item): str(genres or "") for item, genres in rows}


class ChampionState:
    """What the monitors need to know about the current champion."""

    def __init__(self, recloop: RecloopResource):
        layout = recloop.layout()
        registry = Registry(layout.registry)
        self.version = registry.champion()
        metadata = registry.metadata(self.version) if self.version else {}
        manifest = registry.manifest(self.version) if self.version else {}
        self.tenant = str((manifest.get("metadata", {}).get("tenants") or [""])[0])
        self.training_set = metadata.get("training_set")
        self.data_end = pd.Timestamp(metadata["data_end"]) if "data_end" in metadata else None


def sampled_activity_features(recloop: RecloopResource, user_ids: list[str]) -> pd.DataFrame:
    """Online activity features of a seeded sample of `user_ids`, one row per user."""
    users = sorted(set(user_ids))
    sample = sorted(
        np.random.default_rng(0).choice(users, min(FEATURE_SAMPLE, len(users)), replace=False)
    )
    online = (
        recloop.feature_store()
        .get_online_features(
            features=feature_refs(USER_VIEW, activity_columns()),
            entity_rows=[{"user_id": user} for user in sample],
            full_feature_names=True,
        )
        .to_dict()
    )
    return pd.DataFrame(
        {
            name: pd.to_numeric(pd.Series(online[name], dtype=object))
            for name in NUMERIC_USER_FEATURES
        }
    )


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy(float) for name in NUMERIC_USER_FEATURES}


def serving_feature_reference(
    recloop: RecloopResource, version: str, reference_users: list[str]
) -> pd.DataFrame:
    """The online features of the users the champion served in its reference window,
    read once and kept (monitoring/features-<version>.parquet): later windows compare
    with what serving saw then, not with today's values of the same users."""
    path = recloop.layout().root / "monitoring" / f"features-{version}.parquet"
    if not path.exists():
        write_parquet_atomic(sampled_activity_features(recloop, reference_users), path)
    return pd.read_parquet(path)


def training_serving_skew(training_set: str | None, current: pd.DataFrame) -> list:
    """Training examples' user features (as of each label) against what serving reads now.
    Reported, never a retraining trigger: on MovieLens most labels fall on a user's first
    day, so 75 % of training rows have no features while served users all do."""
    if not training_set:
        return []
    examples = pd.read_parquet(
        Path(training_set) / "examples.parquet", columns=[*NUMERIC_USER_FEATURES, "split"]
    )
    train = examples.loc[examples["split"] == "train"]
    return feature_drift(_columns(train), _columns(current))


def current_drift(recloop: RecloopResource) -> tuple[DriftReport, pd.DataFrame, list] | None:
    """The champion's drift report on the validated log, its served events and the
    training/serving skew table (None without a champion)."""
    champion = ChampionState(recloop)
    if champion.version is None:
        return None
    layout = recloop.layout()
    config = MonitoringConfig(window=recloop.drift_window)
    events = served_events(layout, champion.tenant)
    windows = served_windows(events, champion.version, config.window)
    features, skew = (None, None), []
    if windows is not None:
        reference_users, recent_users = (w["user_id"].astype(str).tolist() for w in windows)
        reference = serving_feature_reference(recloop, champion.version, reference_users)
        current = sampled_activity_features(recloop, recent_users)
        features = (_columns(reference), _columns(current))
        skew = training_serving_skew(champion.training_set, current)
    report = drift_report(
        events, champion.version, item_genres(layout, champion.tenant), config, *features
    )
    return report, events, skew


def episode_path(layout: DataLayout, champion: str) -> Path:
    return layout.root / "monitoring" / "episodes" / f"{champion}.json"


def record_episode(layout: DataLayout, report: DriftReport, since: str) -> None:
    """Write when and why drift was first detected for this champion (once; kept for
    audits and the loop's timeline)."""
    path = episode_path(layout, report.model_version)
    if not path.exists():
        write_json_atomic(
            {
                "champion": report.model_version,
                "detected_at": datetime.now(UTC).isoformat(),
                "drift_since": since,
                "window": report.window_id,
                "reasons": list(report.reasons),
            },
            path,
        )


def _summary(report: DriftReport, window: int) -> str:
    if not report.enough_data:
        return f"{report.model_version}: waiting for 2 x {window:,} impressions to compare"
    return (
        f"{report.model_version}: CTR {report.reference.ctr:.4f} -> {report.recent.ctr:.4f}, "
        f"score PSI {report.score_psi:.3f}, click-genre JS {report.click_genre_js:.3f}"
    )


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
    evaluated = current_drift(recloop)
    if evaluated is None:
        raise dg.Failure("no champion to monitor: run the train_and_promote job first")
    report, events, skew = evaluated
    path = recloop.layout().root / "monitoring" / f"drift-{report.window_id.replace('@', '-')}.json"
    write_json_atomic(report.to_dict(), path)
    mine = events.loc[events["model_version"] == report.model_version]
    bucket = max(len(mine) // 40, 100)
    metadata: dict[str, object] = {
        "summary": _summary(report, recloop.drift_window),
        "drifted": report.drifted,
        "reasons": dg.MetadataValue.json(list(report.reasons)),
        "report": dg.MetadataValue.path(str(path)),
        "feature_statistics": dg.MetadataValue.md(_feature_table(list(report.features))),
        "training_serving_skew": dg.MetadataValue.md(_feature_table(skew)),
    }
    if report.enough_data:
        metadata.update(
            ctr_reference=report.reference.ctr,
            ctr_recent=report.recent.ctr,
            ctr_relative_drop=report.ctr_relative_drop,
            score_psi=report.score_psi,
            click_genre_js=report.click_genre_js,
            ctr_plot=ctr_curve(ctr_series(mine, bucket), bucket),
        )
    yield dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="no_drift",
                passed=not report.drifted,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"reasons": dg.MetadataValue.json(list(report.reasons))},
            )
        ],
    )


@dg.sensor(
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def drift_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """Retrain once per champion when its drift report says the world moved, after
    `post_drift_impressions` more impressions show the new behaviour: retraining at
    the moment of detection would learn from data from before the drift."""
    evaluated = current_drift(recloop)
    if evaluated is None:
        return dg.SkipReason("no champion to monitor")
    report, events = evaluated[0], evaluated[1]
    previous = json.loads(context.cursor) if context.cursor else {}
    if not report.drifted:
        cursor = json.dumps({"champion": report.model_version, "window": report.window_id})
        return dg.SensorResult(skip_reason=_summary(report, recloop.drift_window), cursor=cursor)
    same_episode = previous.get("champion") == report.model_version and previous.get("drift_since")
    since = previous["drift_since"] if same_episode else report.recent.first_event
    cursor = json.dumps(
        {"champion": report.model_version, "window": report.window_id, "drift_since": since}
    )
    reasons = "; ".join(report.reasons)
    record_episode(recloop.layout(), report, since)
    collected = impressions_since(events, report.model_version, pd.Timestamp(since))
    needed = recloop.post_drift_impressions
    if collected < needed:
        return dg.SensorResult(
            skip_reason=f"drift on {report.model_version} since {since} ({reasons}); "
            f"collecting post-drift data: {collected:,} of {needed:,} impressions",
            cursor=cursor,
        )
    context.log.info(f"drift on {report.model_version}: {reasons}")
    holdout = MonitoringConfig.drift_retrain_holdout
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift:{report.model_version}",
                run_config={
                    "ops": {
                        "training_set": {
                            "config": {
                                "valid_fraction": holdout,
                                "test_fraction": holdout,
                                "holdout_since": since,
                            }
                        }
                    }
                },
                tags={
                    # ahead of queued validation and freshness runs: the model is stale
                    "dagster/priority": "10",
                    "recloop/trigger": "drift",
                    "recloop/champion": report.model_version,
                    "recloop/window": report.window_id,
                    "recloop/drift_since": since,
                    "recloop/reason": reasons[:1000],
                },
            )
        ],
        cursor=cursor,
    )


@dg.sensor(
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def retrain_on_new_data_sensor(context: dg.SensorEvaluationContext, recloop: RecloopResource):
    """One retrain per `retrain_after_events` validated events newer than the champion's data."""
    champion = ChampionState(recloop)
    if champion.version is None or champion.data_end is None:
        return dg.SkipReason("no champion (or one trained before data_end was recorded)")
    new = events_after(recloop.layout(), champion.tenant, champion.data_end)
    step = recloop.retrain_after_events
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
)
def nightly_retrain(context: dg.ScheduleEvaluationContext, recloop: RecloopResource):
    """Retrain at night, but only when some event is newer than the champion's data."""
    champion = ChampionState(recloop)
    if champion.version is None or champion.data_end is None:
        return dg.RunRequest(
            run_key=f"nightly:{_day(context)}:bootstrap", tags={"recloop/trigger": "nightly"}
        )
    new = events_after(recloop.layout(), champion.tenant, champion.data_end)
    if new == 0:
        return dg.SkipReason(f"nothing changed since {champion.version} was trained")
    return dg.RunRequest(
        run_key=f"nightly:{_day(context)}:{champion.version}",
        tags={"recloop/trigger": "nightly", "recloop/reason": f"{new:,} new events"},
    )


def _day(context: dg.ScheduleEvaluationContext) -> str:
    moment: datetime = context.scheduled_execution_time
    return moment.date().isoformat()
