"""The single Definitions object of the recloop code location."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

import assets.library_notices  # noqa: F401  (first: filters that later imports must not undo)
from assets.automation import features_automation_sensor
from assets.dbt import dbt_cli_resource, recloop_dbt_models
from assets.experiments import build_experiment_definitions, load_valid_specs
from assets.features import feast_feature_views, feast_online_store, stream_batch_parity
from assets.ingest import build_ingest_assets
from assets.monitoring import (
    MONITORING_GROUP,
    RETRAIN_JOB,
    drift_report_asset,
    drift_sensor,
    first_champion_sensor,
    nightly_retrain,
    retrain_on_new_data_sensor,
)
from assets.partitions import event_partitions
from assets.resources import RecloopResource
from assets.sensors import (
    new_raw_data_sensor,
    tenant_discovery_sensor,
    validate_catalogs_job,
    validate_events_job,
)
from assets.training import (
    TRAINING_GROUP,
    TRAINING_JOB,
    champion_chain_assets,
    item_text_embeddings,
)
from recloop.data.layout import DataLayout
from recloop.settings import Settings

FEATURES_JOB = "build_features"


def partitions_start(settings: Settings) -> date:
    """The first day of the event partitions: the setting, else the first day of the raw
    log (so the UI shows the days the data holds, not decades of empty ones), else today
    (nothing yet: the service's first batches land today)."""
    layout = DataLayout(settings.data_dir)
    return settings.partitions_start or layout.first_event_day() or datetime.now(UTC).date()


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything Dagster loads, for one set of settings (tests pass temporary ones)."""
    events = event_partitions(partitions_start(settings))
    experiments = build_experiment_definitions(load_valid_specs(settings.experiments_dir))
    return dg.Definitions(
        assets=[
            *experiments.assets,
            *build_ingest_assets(events),
            recloop_dbt_models,
            feast_feature_views,
            feast_online_store,
            item_text_embeddings,
            *champion_chain_assets(settings.champion_algorithm),
            drift_report_asset,
        ],
        asset_checks=[stream_batch_parity],
        jobs=[
            validate_events_job,
            validate_catalogs_job,
            dg.define_asset_job(
                FEATURES_JOB,
                description="Build the features from the validated events: dbt models, Feast "
                "feature views and the online store (no training).",
                selection=dg.AssetSelection.all()
                - dg.AssetSelection.assets("validated_events", "validated_users", "validated_items")
                - dg.AssetSelection.groups(TRAINING_GROUP, MONITORING_GROUP)
                - experiments.selection,
            ),
            dg.define_asset_job(
                TRAINING_JOB,
                description="Build the point-in-time training set, train the candidate, run "
                "its gates and promote it if they pass.",
                selection=dg.AssetSelection.groups(TRAINING_GROUP),
            ),
            dg.define_asset_job(
                RETRAIN_JOB,
                description="Refresh features (dbt, Feast) and retrain, gate and maybe promote.",
                selection=dg.AssetSelection.all()
                - dg.AssetSelection.assets("validated_events", "validated_users", "validated_items")
                - dg.AssetSelection.groups(MONITORING_GROUP)
                - experiments.selection,
            ),
            *experiments.jobs,
        ],
        sensors=[
            *experiments.sensors,
            tenant_discovery_sensor,
            new_raw_data_sensor,
            drift_sensor,
            retrain_on_new_data_sensor,
            first_champion_sensor,
            features_automation_sensor,
        ],
        schedules=[nightly_retrain, *experiments.schedules],
        resources={
            "recloop": RecloopResource.from_settings(settings),
            "dbt": dbt_cli_resource(),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
