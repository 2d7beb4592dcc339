"""Declarative freshness: newly validated events make dbt and Feast eligible, training not."""

from __future__ import annotations

import dagster as dg

from assets.definitions import build_definitions
from assets.partitions import TENANTS, event_key
from assets.sensors import VALIDATE_CATALOGS_JOB, VALIDATE_EVENTS_JOB
from tests.conftest import TINY_DAYS, TINY_TENANT


def test_validated_events_make_features_eligible_and_nothing_else(
    tiny_log, tiny_settings, instance
) -> None:
    defs = build_definitions(tiny_settings)
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])
    defs.resolve_job_def(VALIDATE_CATALOGS_JOB).execute_in_process(
        instance=instance, partition_key=TINY_TENANT
    )
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert quiet.total_requested == 0  # nothing new since the first look

    events_job = defs.resolve_job_def(VALIDATE_EVENTS_JOB)
    events_job.execute_in_process(
        instance=instance, partition_key=event_key(TINY_TENANT, TINY_DAYS[0])
    )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
    requested = {
        key.to_user_string()
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        if result.get_num_requested(key)
    }
    assert {"stg_events", "user_features", "item_features", "user_item_interactions"} <= requested
    assert {"feast_feature_views", "feast_online_store"} <= requested
    assert not requested & {"training_set", "model_candidate", "champion_model", "drift_report"}

    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert again.total_requested == 0  # one request per change, not one per tick
