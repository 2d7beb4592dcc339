"""Tenants share user and item ids, as independent customers do: each keeps its own
feature values, offline and online."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

from feature_repo.definitions import TENANT_KEY, build_feature_objects
from feature_repo.store import count_online_entities, open_feature_store, read_online
from recloop.data.layout import DataLayout
from recloop.features.parity import compare_parity, latest_offline_rows
from recloop.settings import Settings
from tests.conftest import write_tiny_log
from tests.integration.test_pipeline import tiny_features_run

TENANTS = ("books", "shop")


def test_tenants_with_colliding_ids_each_read_their_own_online_values(
    data_dir, instance: dg.DagsterInstance
) -> None:
    # The same ids ("1", "2", ...) in both tenants, with different activity.
    write_tiny_log(data_dir, "books", seed=11)
    write_tiny_log(data_dir, "shop", seed=7)
    settings = Settings(data_dir=data_dir, partitions_start=date(2024, 1, 1))
    # Runs the features job and asserts that every check, online parity included, passed.
    tiny_features_run(settings, instance, TENANTS)

    marts = DataLayout(data_dir).marts
    store = open_feature_store(settings)
    objects = build_feature_objects(marts)
    for view, key in ((objects.user_features, "user_id"), (objects.item_features, "item_id")):
        keys = [TENANT_KEY, key]
        latest = latest_offline_rows(
            marts / f"{view.name}.parquet", keys, datetime(2100, 1, 1, tzinfo=UTC)
        )
        by_tenant = {t: set(latest.loc[latest[TENANT_KEY] == t, key]) for t in TENANTS}
        shared = by_tenant["books"] & by_tenant["shop"]
        assert shared, f"the fixture must make {key}s collide"
        assert count_online_entities(store, view) == len(latest)

        online = read_online(store, view, latest[keys])
        report = compare_parity(latest, online, keys, [f.name for f in view.features])
        assert report.passed and report.checked == len(latest), report.examples

        # The colliding ids hold different values per tenant, so a mix-up would show above.
        counts = latest.set_index(keys)["rating_count_total"]
        assert any(counts[("books", i)] != counts[("shop", i)] for i in shared)
