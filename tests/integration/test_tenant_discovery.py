"""A tenant that appears in the raw log runs the whole chain for itself alone: the
discovery sensor adds its partition and validates it, the features are rebuilt (what
`features_automation` does), and `first_champion_sensor` trains, gates and promotes its
first champion, without touching the tenant already served. A tenant whose every event
is rejected stays quarantined, with no training run, while the others keep theirs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import pytest

from assets.definitions import FEATURES_JOB, TRAINING_JOB, build_definitions
from assets.monitoring import first_champion_sensor
from assets.partitions import TENANTS
from assets.resources import RecloopResource
from assets.sensors import VALIDATE_CATALOGS_JOB, VALIDATE_EVENTS_JOB, tenant_discovery_sensor
from recloop.data.ingest import event_partition_counts
from recloop.data.layout import DataLayout
from recloop.data.movielens import to_raw_log, write_raw_log
from recloop.registry.model_registry import Registry
from recloop.settings import Settings
from tests.integration.test_pipeline import tiny_features_run
from tests.integration.test_refit_serving import positives_only_frames
from tests.two_tenants import LOG_DAYS, RELAXED, write_tenant_log


@pytest.fixture(scope="module")
def books_served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, dg.DagsterInstance]]:
    root = tmp_path_factory.mktemp("discovery")
    layout = DataLayout(root / "data")
    write_tenant_log(layout, "books")
    settings = Settings(
        data_dir=layout.root, partitions_start=LOG_DAYS[0], champion_algorithm="ease"
    )
    with dg.instance_for_test(temp_dir=str(root)) as instance:
        defs = tiny_features_run(settings, instance, ("books",))
        trained = defs.resolve_job_def(TRAINING_JOB).execute_in_process(
            instance=instance,
            partition_key="books",
            run_config={"ops": {"model_candidate": {"config": RELAXED}}},
        )
        assert trained.success
        yield settings, instance


def _tick(sensor, settings: Settings, instance: dg.DagsterInstance):
    defs = build_definitions(settings)
    with dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources={"recloop": RecloopResource.from_settings(settings)},
    ) as context:
        return sensor(context)


def _execute(settings: Settings, instance: dg.DagsterInstance, job: str, request: dg.RunRequest):
    """What the daemon does with a run request: one run of the job, with its partition and tags."""
    tags = dict(request.tags)
    result = (
        build_definitions(settings)
        .resolve_job_def(job)
        .execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=tags,
            run_config=request.run_config,
            raise_on_error=False,
        )
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def test_a_new_tenant_directory_runs_the_whole_chain_for_that_tenant(books_served) -> None:
    settings, instance = books_served
    registry = Registry(DataLayout(settings.data_dir).registry)
    books = registry.champion("books")
    assert isinstance(_tick(first_champion_sensor, settings, instance), dg.SkipReason)

    layout = DataLayout(settings.data_dir)
    write_tenant_log(layout, "shop")
    # Events copied before the item catalog: the tenant waits for it.
    items = layout.raw_catalog("items", "shop")
    items.rename(items.with_name(".items-later"))
    waiting = _tick(tenant_discovery_sensor, settings, instance)
    assert waiting.skip_message == "waiting: shop (no items catalog yet)"
    items.with_name(".items-later").rename(items)
    found = _tick(tenant_discovery_sensor, settings, instance)
    (added,) = found.dynamic_partitions_requests
    assert list(added.partition_keys) == ["shop"]
    instance.add_dynamic_partitions(TENANTS.name, ["shop"])
    catalogs, events = found.run_requests
    assert (catalogs.job_name, catalogs.partition_key) == (VALIDATE_CATALOGS_JOB, "shop")
    _execute(settings, instance, VALIDATE_CATALOGS_JOB, catalogs)
    assert events.job_name == VALIDATE_EVENTS_JOB  # every day of shop's log, one run
    validated = _execute(settings, instance, VALIDATE_EVENTS_JOB, events)
    days = {m.partition for m in validated.asset_materializations_for_node("validated_events")}
    assert len(days) == len(LOG_DAYS) and all(day.endswith("|shop") for day in days)

    # Validated but not featurized yet: no training on stale marts.
    waiting = _tick(first_champion_sensor, settings, instance)
    assert isinstance(waiting, dg.SkipReason) and "features" in waiting.skip_message
    features = build_definitions(settings).resolve_job_def(FEATURES_JOB)
    assert features.execute_in_process(instance=instance, raise_on_error=False).success

    (request,) = _tick(first_champion_sensor, settings, instance)
    assert request.partition_key == "shop" and request.run_key.startswith("first-champion:shop:")
    _execute(settings, instance, TRAINING_JOB, request)
    shop = registry.champion("shop")
    assert shop is not None and registry.tenant_of(shop) == "shop"
    assert registry.champion("books") == books
    assert isinstance(_tick(first_champion_sensor, settings, instance), dg.SkipReason)


def test_a_tenant_whose_every_event_is_rejected_stays_blocked_while_the_others_serve(
    books_served,
) -> None:
    settings, instance = books_served
    layout = DataLayout(settings.data_dir)
    registry = Registry(layout.registry)
    before = registry.champions()
    log = to_raw_log(positives_only_frames(LOG_DAYS, seed=16), "broken")
    write_raw_log(replace(log, events=log.events.assign(value=9.0)), layout)  # stars out of range
    found = _tick(tenant_discovery_sensor, settings, instance)
    instance.add_dynamic_partitions(TENANTS.name, ["broken"])
    for request in found.run_requests:
        _execute(settings, instance, request.job_name, request)
    days = [event_partition_counts(layout, "broken", day) for day in layout.event_days("broken")]
    assert sum(c.valid for c in days) == 0  # every row quarantined, none lost
    assert sum(c.quarantined for c in days) == sum(c.read for c in days) == len(log.events)
    features = build_definitions(settings).resolve_job_def(FEATURES_JOB)
    assert features.execute_in_process(instance=instance, raise_on_error=False).success

    blocked = _tick(first_champion_sensor, settings, instance)
    assert isinstance(blocked, dg.SkipReason)
    assert blocked.skip_message == "broken: no labels in the marts yet"
    assert registry.champions() == before
