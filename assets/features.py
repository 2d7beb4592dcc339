"""Feast: register the feature views and keep the online store fresh and in parity."""

from datetime import datetime, timedelta

import dagster as dg
import duckdb

from assets.resources import RecloopResource
from feature_repo.definitions import build_feature_objects
from feature_repo.store import count_online_entities, install_monotonic_guard, read_online
from recloop.parity import compare_parity, latest_offline_rows

FEATURES_GROUP = "features"
ONLINE_PARITY = "online_offline_parity"
# Re-materialize the last day again on every run, so late events that changed the
# newest offline row reach the online store too.
MATERIALIZATION_OVERLAP = timedelta(days=1)
JOIN_KEYS = {"user_features": "user_id", "item_features": "item_id"}


def mart_time_range(parquet_path: str) -> tuple[datetime, datetime]:
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        start, end = conn.execute(
            "select min(event_timestamp), max(event_timestamp) from read_parquet($path)",
            {"path": parquet_path},
        ).fetchone()
    return start, end


@dg.asset(
    key="feast_feature_views",
    deps=["user_features", "item_features"],
    group_name=FEATURES_GROUP,
    description="`feast apply` of feature_repo/definitions.py: entities, sources, views, services.",
)
def feast_feature_views(
    context: dg.AssetExecutionContext, recloop: RecloopResource
) -> dg.MaterializeResult:
    store = recloop.feature_store()
    objects = build_feature_objects(recloop.layout().marts)
    store.apply(list(objects))
    guards = install_monotonic_guard(store, [objects.user_features, objects.item_features])
    return dg.MaterializeResult(
        metadata={
            "project": store.config.project,
            "online_store": store.config.online_store.type,
            "feature_views": dg.MetadataValue.json(
                {
                    view.name: [f.name for f in view.features]
                    for view in (objects.user_features, objects.item_features)
                }
            ),
            "feature_services": objects.retrieval_v1.name,
            "monotonic_guards": dg.MetadataValue.json(guards),
        }
    )


@dg.asset(
    key="feast_online_store",
    deps=[feast_feature_views],
    group_name=FEATURES_GROUP,
    check_specs=[
        dg.AssetCheckSpec(
            ONLINE_PARITY,
            asset="feast_online_store",
            description="Every online value equals the latest offline value at materialization time.",
        )
    ],
    description="Incremental Feast materialization of every feature view into the online store.",
)
def feast_online_store(context: dg.AssetExecutionContext, recloop: RecloopResource):
    store = recloop.feature_store()
    marts = recloop.layout().marts
    metadata: dict[str, object] = {"online_store": store.config.online_store.type}
    parity: dict[str, dict[str, object]] = {}
    passed = True
    for view_name, join_key in JOIN_KEYS.items():
        view = store.get_feature_view(view_name)
        first, last = mart_time_range(str(marts / f"{view_name}.parquet"))
        previous_end = view.most_recent_end_time
        start = first if previous_end is None else min(previous_end - MATERIALIZATION_OVERLAP, last)
        end = last + timedelta(seconds=1)
        context.log.info(f"materializing {view_name} from {start} to {end}")
        store.materialize(start_date=start, end_date=end, feature_views=[view_name])
        offline = latest_offline_rows(marts / f"{view_name}.parquet", join_key, end)
        online = read_online(store, view, join_key, offline[join_key].tolist())
        report = compare_parity(offline, online, join_key, [f.name for f in view.features])
        passed = passed and report.passed
        parity[view_name] = {
            "checked": report.checked,
            "mismatches": report.mismatches,
            "missing_online": report.missing_online,
            "examples": report.examples,
        }
        metadata[f"{view_name}_window"] = f"{start.isoformat()} .. {end.isoformat()}"
        metadata[f"{view_name}_online_rows"] = count_online_entities(store, view)
    yield dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=ONLINE_PARITY,
                passed=passed,
                metadata={"parity": dg.MetadataValue.json(parity)},
            )
        ],
    )
