"""Feast: register the feature views and keep the online store fresh and in parity."""

import dagster as dg

from assets.resources import RecloopResource
from feature_repo.definitions import build_feature_objects
from feature_repo.store import count_online_entities, install_monotonic_guard, read_online
from recloop.materialization import mart_time_range, materialization_window
from recloop.parity import compare_parity, latest_offline_rows

FEATURES_GROUP = "features"
ONLINE_PARITY = "online_offline_parity"


@dg.asset(
    key="feast_feature_views",
    deps=["user_features", "item_features"],
    group_name=FEATURES_GROUP,
    automation_condition=dg.AutomationCondition.eager(),
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
            "feature_services": objects.retrieval_v1.name,
            "monotonic_guards": dg.MetadataValue.json(guards),
        }
    )


@dg.asset(
    key="feast_online_store",
    deps=[feast_feature_views],
    group_name=FEATURES_GROUP,
    automation_condition=dg.AutomationCondition.eager(),
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
    for definition, join_key in build_feature_objects(marts).views_with_join_keys:
        view_name = definition.name
        view = store.get_feature_view(view_name)
        start, end = materialization_window(
            *mart_time_range(marts / f"{view_name}.parquet"), view.most_recent_end_time
        )
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
