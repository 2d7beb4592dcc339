"""The Dagster graph on a tiny fixture: partitions, failures, dbt, Feast and parity."""

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from assets.definitions import FEATURES_JOB, build_definitions
from assets.partitions import TENANTS, event_key
from assets.sensors import (
    VALIDATE_CATALOGS_JOB,
    VALIDATE_EVENTS_JOB,
    tenant_range_tags,
)
from feature_repo.definitions import build_feature_objects
from feature_repo.store import count_online_entities, open_feature_store, read_online
from recloop.data.ingest import VALID_FILE
from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.data.movielens import to_raw_log, write_raw_log
from recloop.features.parity import latest_offline_rows
from recloop.settings import Settings
from tests.conftest import TINY_DAYS, TINY_TENANT, tiny_frames

EVENTS = dg.AssetKey("validated_events")


def run(
    defs: dg.Definitions, job: str, instance: dg.DagsterInstance, **kwargs
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def validate_days(defs, instance, days) -> None:
    for day in days:
        result = run(defs, VALIDATE_EVENTS_JOB, instance, partition_key=event_key(TINY_TENANT, day))
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())


def test_two_consecutive_partitions_without_sensors(tiny_log, tiny_settings, instance) -> None:
    defs = build_definitions(tiny_settings)
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])
    validate_days(defs, instance, TINY_DAYS[:2])
    assert instance.get_materialized_partitions(EVENTS) == {
        event_key(TINY_TENANT, day) for day in TINY_DAYS[:2]
    }
    for day in TINY_DAYS[:2]:
        raw = pd.read_parquet(tiny_log.raw_events_partition(TINY_TENANT, day))
        valid = pd.read_parquet(tiny_log.validated_events_partition(TINY_TENANT, day) / VALID_FILE)
        assert sorted(valid["event_id"]) == sorted(raw["event_id"])
    records = instance.fetch_materializations(EVENTS, limit=10).records
    metadata = {r.partition_key: r.asset_materialization.metadata for r in records}
    first = metadata[event_key(TINY_TENANT, TINY_DAYS[0])]
    assert first["read"].value == first["valid"].value > 0
    assert not tiny_log.validated_events_partition(TINY_TENANT, TINY_DAYS[2]).exists()


def test_a_bad_file_fails_its_partition_and_leaves_earlier_outputs(
    tiny_log, tiny_settings, instance
) -> None:
    defs = build_definitions(tiny_settings)
    instance.add_dynamic_partitions(TENANTS.name, [TINY_TENANT])
    validate_days(defs, instance, TINY_DAYS[:2])
    outputs = [
        tiny_log.validated_events_partition(TINY_TENANT, d) / VALID_FILE for d in TINY_DAYS[:2]
    ]
    before = [digest(p) for p in outputs]
    (tiny_log.raw_events_partition(TINY_TENANT, TINY_DAYS[1]) / "late-batch.parquet").write_bytes(
        b"garbage"
    )
    result = run(
        defs, VALIDATE_EVENTS_JOB, instance, partition_key=event_key(TINY_TENANT, TINY_DAYS[1])
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert (
        "late-batch.parquet: not a readable Parquet file" in failure.step_failure_data.error.message
    )
    assert [digest(p) for p in outputs] == before


def tiny_features_run(
    settings: Settings, instance: dg.DagsterInstance, tenants: tuple[str, ...] = (TINY_TENANT,)
) -> dg.Definitions:
    defs = build_definitions(settings)
    instance.add_dynamic_partitions(TENANTS.name, list(tenants))
    layout = DataLayout(settings.data_dir)
    for tenant in tenants:
        assert run(defs, VALIDATE_CATALOGS_JOB, instance, partition_key=tenant).success
        days = layout.event_days(tenant)
        result = run(
            defs,
            VALIDATE_EVENTS_JOB,
            instance,
            tags=tenant_range_tags(tenant, days),
        )
        assert result.success
        progress = [record.user_message for record in instance.all_logs(result.run_id)]
        assert any(line.startswith(f"{len(days)}/{len(days)} partitions: ") for line in progress)
    validated = sum(len(layout.event_days(tenant)) for tenant in tenants)
    assert len(instance.get_materialized_partitions(EVENTS)) == validated
    features = run(defs, FEATURES_JOB, instance)
    assert features.success, [e.message for e in features.all_events if e.is_failure]
    failed = [c.check_name for c in features.get_asset_check_evaluations() if not c.passed]
    assert failed == []
    return defs


@pytest.mark.parametrize("online_store", ["sqlite", "redis"])
def test_full_graph_then_an_increment(online_store, tiny_log, data_dir, instance, request) -> None:
    settings = Settings(
        data_dir=data_dir, partitions_start=date(2024, 1, 1), online_store=online_store
    )
    if online_store == "redis":
        settings = Settings(
            data_dir=data_dir,
            partitions_start=date(2024, 1, 1),
            online_store="redis",
            redis_url=request.getfixturevalue("redis_url"),
            feast_project=request.getfixturevalue("redis_project"),
        )
    tiny_features_run(settings, instance)
    layout = DataLayout(data_dir)
    store = open_feature_store(settings)
    objects = build_feature_objects(layout.marts)
    users = pd.read_parquet(layout.marts / "user_features.parquet")
    items = pd.read_parquet(layout.marts / "item_features.parquet")
    assert count_online_entities(store, objects.user_features) == users["user_id"].nunique()
    # Every catalog item has features, rated or not (cold items).
    assert count_online_entities(store, objects.item_features) == 9
    for view, frame, key in (
        (objects.user_features, users, "user_id"),
        (objects.item_features, items, "item_id"),
    ):
        assert set(frame.columns) == {"tenant_id", key, "feature_date", "event_timestamp"} | {
            f.name for f in view.features
        }

    # A fourth day arrives: validate only that partition, rebuild features, online follows.
    next_day = date(2024, 3, 4)
    frames = tiny_frames(days=(next_day,), ratings_per_day=30, seed=99)
    write_raw_log(to_raw_log(frames, TINY_TENANT), DataLayout(data_dir / "incoming"))
    incoming = DataLayout(data_dir / "incoming").raw_events_partition(TINY_TENANT, next_day)
    write_parquet_atomic(
        pd.read_parquet(incoming / "movielens.parquet"),
        layout.raw_events_partition(TINY_TENANT, next_day) / "movielens.parquet",
    )
    defs = build_definitions(settings)
    validate_days(defs, instance, [next_day])
    keys = users[["tenant_id", "user_id"]].drop_duplicates().sort_values("user_id")
    before = read_online(store, objects.user_features, keys)
    assert run(defs, FEATURES_JOB, instance).success
    after = read_online(store, objects.user_features, keys)
    with duckdb.connect() as conn:
        expected = (
            conn.execute(
                "select user_id, count(*) from read_parquet($p) where event_type = 'rating' group by user_id",
                {"p": str(layout.root / "validated" / "events" / "**" / "*.parquet")},
            )
            .df()
            .set_index("user_id")
            .iloc[:, 0]
        )
    online_totals = after.set_index("user_id")["rating_count_total"]
    assert (online_totals == expected.reindex(online_totals.index)).all()
    assert (after["rating_count_total"] >= before["rating_count_total"]).all()
    assert (after["rating_count_total"] > before["rating_count_total"]).any()


def test_parity_check_fails_when_an_online_value_drifts(tiny_log, tiny_settings, instance) -> None:
    defs = tiny_features_run(tiny_settings, instance)
    layout = DataLayout(tiny_settings.data_dir)
    store = open_feature_store(tiny_settings)
    view = build_feature_objects(layout.marts).user_features
    latest = latest_offline_rows(
        layout.marts / "user_features.parquet",
        ["tenant_id", "user_id"],
        datetime(2100, 1, 1, tzinfo=UTC),
    )
    drifted = latest.iloc[[0]][
        ["tenant_id", "user_id", "event_timestamp", *[f.name for f in view.features]]
    ]
    drifted = drifted.assign(
        rating_count_total=999, event_timestamp=drifted["event_timestamp"] + pd.Timedelta(hours=1)
    )
    store.write_to_online_store("user_features", df=drifted)

    result = defs.resolve_job_def(FEATURES_JOB).execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("feast_online_store")], raise_on_error=False
    )
    (parity,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "online_offline_parity"
    ]
    assert not parity.passed
    # Blocking: the run fails, so nothing downstream runs on the wrong value.
    assert not result.success
    report = parity.metadata["parity"].value["user_features"]
    assert (report["mismatches"], report["missing_online"]) == (1, 0)
    assert report["examples"][0]["user_id"] == drifted["user_id"].iloc[0]
    assert report["examples"][0]["features"] == ["rating_count_total"]
