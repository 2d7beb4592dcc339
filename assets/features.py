"""Feast: register the feature views and keep the online store fresh and in parity."""

from datetime import timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.automation import FRESH_FEATURES
from assets.resources import RecloopResource
from feature_repo.definitions import STREAM_MART, TENANT_KEY, build_feature_objects
from feature_repo.store import (
    install_monotonic_guard,
    materialize_view,
    read_online_as_of,
)
from recloop.features.parity import compare_as_of

FEATURES_GROUP = "features"
ONLINE_PARITY = "online_offline_parity"
STREAM_PARITY = "stream_batch_parity"


@dg.asset(
    key="feast_feature_views",
    deps=["user_features", "item_features", STREAM_MART],
    group_name=FEATURES_GROUP,
    automation_condition=FRESH_FEATURES,
    description="`feast apply` of feature_repo/definitions.py: entities, sources, views, services.",
)
def feast_feature_views(
    context: dg.AssetExecutionContext, recloop: RecloopResource
) -> dg.MaterializeResult:
    store = recloop.feature_store()
    objects = build_feature_objects(recloop.layout().marts)
    store.apply(list(objects))
    guards = install_monotonic_guard(store, objects.views)
    return dg.MaterializeResult(
        metadata={
            "project": store.config.project,
            "online_store": store.config.online_store.type,
            "feature_views": dg.MetadataValue.json(
                {view.name: [f.name for f in view.features] for view in objects.views}
            ),
            "feature_services": dg.MetadataValue.json(
                [objects.retrieval_v1.name, objects.retrieval_v2.name]
            ),
            "monotonic_guards": dg.MetadataValue.json(guards),
        }
    )


@dg.asset(
    key="feast_online_store",
    deps=[feast_feature_views],
    group_name=FEATURES_GROUP,
    automation_condition=FRESH_FEATURES,
    check_specs=[
        dg.AssetCheckSpec(
            ONLINE_PARITY,
            asset="feast_online_store",
            # A wrong online value reaches users: the features run fails, so `make demo` and
            # `recloop run` stop before training. The retrain sensors do not consult it yet.
            blocking=True,
            description="Every online value equals the latest offline value (per tenant and "
            "id) at materialization time; blocking.",
        )
    ],
    description="Incremental Feast materialization of every feature view into the online store.",
)
def feast_online_store(context: dg.AssetExecutionContext, recloop: RecloopResource):
    store, marts = recloop.feature_store(), recloop.layout().marts
    metadata: dict[str, object] = {"online_store": store.config.online_store.type}
    parity: dict[str, dict[str, object]] = {}
    passed = True
    for definition, join_keys in build_feature_objects(marts).views_with_join_keys:
        done = materialize_view(store, marts, definition.name, join_keys, context.log.info)
        parity[done.view] = {
            "checked": done.parity.checked,
            "mismatches": done.parity.mismatches,
            "missing_online": done.parity.missing_online,
            "examples": done.parity.examples,
        }
        passed = passed and done.parity.passed
        metadata[f"{done.view}_window"] = f"{done.start.isoformat()} .. {done.end.isoformat()}"
        metadata[f"{done.view}_online_rows"] = done.online_rows
    check = dg.AssetCheckResult(
        check_name=ONLINE_PARITY, passed=passed, metadata={"parity": dg.MetadataValue.json(parity)}
    )
    yield dg.MaterializeResult(metadata=metadata, check_results=[check])


class StreamParityConfig(dg.Config):
    sample_size: int = Field(1_000, ge=1, description="users drawn from the mart at most")
    seed: int = Field(0, description="seed of the sample, so a failure can be re-checked")
    recent_hours: float = Field(
        24.0,
        gt=0,
        description="sample users whose mart row is this recent (hours before the newest "
        "row): the stream only sees events while the service runs, not history loaded in batch",
    )
    max_mismatch_rate: float = Field(0.0, ge=0, le=1, description="fail above this rate")


@dg.asset_check(
    asset=STREAM_MART,
    name=STREAM_PARITY,
    # Reads the `user_stream` view, so it runs after `feast apply` registered it.
    additional_deps=["feast_feature_views"],
    description="Values the service pushed to Feast's user_stream equal the batch mart's for a "
    "seeded sample of recently active users (recloop.features.parity.compare_as_of).",
)
def stream_batch_parity(
    recloop: RecloopResource, config: StreamParityConfig
) -> dg.AssetCheckResult:
    marts = recloop.layout().marts
    view = build_feature_objects(marts).user_stream
    # The mart is the features' history; the online store holds each user's latest row.
    history = pd.read_parquet(marts / f"{STREAM_MART}.parquet")
    keys = [TENANT_KEY, "user_id"]
    mart = history.sort_values("event_timestamp", kind="stable").drop_duplicates(keys, keep="last")
    recent = mart[
        mart["event_timestamp"]
        > mart["event_timestamp"].max() - timedelta(hours=config.recent_hours)
    ]
    sample = recent.sample(n=min(config.sample_size, len(recent)), random_state=config.seed)
    online = read_online_as_of(recloop.feature_store(), view, sample[keys])
    report = compare_as_of(sample, online, keys, [f.name for f in view.features])
    return dg.AssetCheckResult(
        passed=report.mismatch_rate <= config.max_mismatch_rate,
        metadata={
            "population": len(recent),
            "checked": report.checked,
            "compared": report.compared,
            "mismatches": report.mismatches,
            "missing_online": report.missing_online,
            "stream_ahead": report.stream_ahead,
            "mismatch_rate": report.mismatch_rate,
            "max_mismatch_rate": config.max_mismatch_rate,
            "seed": config.seed,
            "examples": dg.MetadataValue.json(report.examples),
        },
    )
