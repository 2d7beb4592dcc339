"""Tenants share user and item ids, as independent customers do: each keeps its own
feature values, offline and online, a model trains on one tenant's labels and catalog
only, and each tenant's partition of the training chain promotes that tenant's
champion without touching the other's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import dagster as dg
import numpy as np
import pytest

from assets.definitions import build_definitions
from assets.monitoring import nightly_retrain
from assets.resources import RecloopResource
from feature_repo.definitions import TENANT_KEY, build_feature_objects
from feature_repo.store import count_online_entities, open_feature_store, read_online
from feature_repo.training import build_training_inputs
from recloop.data.layout import DataLayout
from recloop.data.validated_log import interactions, training_tenant
from recloop.features.parity import compare_parity, latest_offline_rows
from recloop.registry.model_registry import PromotionError, Registry
from recloop.settings import Settings
from recloop.training.chain import labels_only_inputs
from tests.conftest import write_tiny_log
from tests.integration.test_pipeline import tiny_features_run
from tests.two_tenants import TENANTS, TwoTenants, two_tenant_system


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Two tenants with the same ids ("1", "2", ...) and different activity, through
    validation, dbt and Feast; every check passed (tiny_features_run asserts it)."""
    data_dir = tmp_path_factory.mktemp("tenants") / "data"
    write_tiny_log(data_dir, "books", seed=11)
    write_tiny_log(data_dir, "shop", seed=7)
    settings = Settings(data_dir=data_dir, partitions_start=date(2024, 1, 1))
    with dg.instance_for_test() as instance:
        tiny_features_run(settings, instance, TENANTS)
        yield settings


@pytest.fixture(scope="module")
def two_trainable_tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoTenants]:
    with two_tenant_system(tmp_path_factory.mktemp("trainable")) as system:
        yield system


def test_tenants_with_colliding_ids_each_read_their_own_online_values(two_tenants) -> None:
    marts = DataLayout(two_tenants.data_dir).marts
    store = open_feature_store(two_tenants)
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


def test_a_training_set_holds_one_tenants_labels_and_catalog(two_tenants: Settings) -> None:
    layout = DataLayout(two_tenants.data_dir)
    with pytest.raises(ValueError, match=r"2 tenants \(books, shop\): name the one"):
        training_tenant(layout, None)
    with pytest.raises(ValueError, match="'nope' has no labels"):
        training_tenant(layout, "nope")
    books = interactions(layout, "books")
    labels = labels_only_inputs(layout, training_tenant(layout, "books"), 0.2, 0.2)
    assert set(labels.examples["tenant_id"]) == {"books"}
    assert len(labels.examples) == int(books["label"].sum())

    store = open_feature_store(two_tenants)
    embeddings = books.drop_duplicates("item_id")[["tenant_id", "item_id"]].assign(
        text_key="", embedding=[np.ones(2, dtype=np.float32)] * books["item_id"].nunique()
    )
    _, inputs = build_training_inputs(layout, "books", store, embeddings, 0.2, 0.2)
    assert set(inputs.examples["tenant_id"]) == {"books"}
    assert len(inputs.examples) == len(labels.examples)
    # Books' catalog, with books' own text embeddings (shop's items share these ids).
    assert inputs.items["item_id"].tolist() == labels.items["item_id"].tolist()
    assert inputs.text_embeddings.shape == (len(inputs.items), 2)


def _nightly(system: TwoTenants) -> list[dg.RunRequest]:
    with dg.build_schedule_context(
        instance=system.instance,
        resources={"recloop": RecloopResource.from_settings(system.settings)},
        repository_def=build_definitions(system.settings).get_repository_def(),
        scheduled_execution_time=datetime(2026, 11, 23, 3, tzinfo=UTC),
    ) as context:
        return list(nightly_retrain.evaluate_tick(context).run_requests or [])


def test_each_tenant_partition_promotes_its_own_champion(two_trainable_tenants) -> None:
    system = two_trainable_tenants
    registry = Registry(DataLayout(system.settings.data_dir).registry)
    # No champion yet: the nightly schedule asks for one training run per tenant partition.
    assert sorted(r.partition_key for r in _nightly(system)) == sorted(TENANTS)

    for tenant in TENANTS:
        result = system.train(tenant, l2=50.0)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
    champions = registry.champions()
    assert set(champions) == set(TENANTS) and champions["books"] != champions["shop"]
    assert {tenant: registry.tenant_of(v) for tenant, v in champions.items()} == {
        t: t for t in TENANTS
    }
    with pytest.raises(PromotionError, match="name the tenant"):
        registry.champion()

    # Shop retrains (another l2, so another model): books' champion and log are untouched.
    books_log = registry.history("books")
    result = system.train("shop", l2=500.0)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert registry.champion("shop") != champions["shop"]
    assert registry.champion("books") == champions["books"]
    assert registry.history("books") == books_log
    # Each champion now holds every event of its tenant: nothing for the schedule to do.
    assert _nightly(system) == []
