"""The streaming features through dbt and Feast on a tiny log: the mart is the function's
output, rows pushed from a StreamState pass the stream_batch_parity check, a tampered
online value fails it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
from feast.data_source import PushMode

from assets.definitions import FEATURES_JOB, build_definitions
from assets.features import StreamParityConfig, stream_batch_parity
from assets.resources import RecloopResource
from feature_repo.definitions import STREAM_PUSH_SOURCE, STREAM_VIEW, build_feature_objects
from feature_repo.store import open_feature_store
from recloop.data.ingest import validate_event_partition
from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.features.stream_features import (
    StreamState,
    stream_feature_history,
    stream_feature_rows,
)
from recloop.settings import Settings
from tests.conftest import TINY_DAYS, TINY_TENANT

MART = dg.AssetKey("user_stream_features")


def burst(day_start: datetime) -> pd.DataFrame:
    """User 1 engages seven times within an hour and a bit (a tie, repeats, a view and an
    impression that do not count); user 2 clicks once."""
    at = day_start + timedelta(hours=22)
    rows = [
        ("b1", "1", "3", "click", at),
        ("b2", "1", "4", "click", at + timedelta(minutes=10)),
        ("b3", "1", "5", "purchase", at + timedelta(minutes=30)),
        ("b5", "1", "6", "click", at + timedelta(minutes=40)),
        ("b4", "1", "7", "click", at + timedelta(minutes=40)),
        ("b6", "1", "3", "click", at + timedelta(minutes=50)),
        ("b7", "1", "8", "click", at + timedelta(minutes=61)),
        ("b8", "1", "9", "view", at + timedelta(minutes=62)),
        ("b9", "1", "2", "impression", at + timedelta(minutes=63)),
        ("b10", "2", "1", "click", at + timedelta(minutes=5)),
    ]
    return pd.DataFrame(
        {
            "event_id": [r[0] for r in rows],
            "tenant_id": TINY_TENANT,
            "user_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "event_type": [r[3] for r in rows],
            "value": None,
            "event_timestamp": pd.to_datetime([r[4] for r in rows], utc=True),
        }
    )


def validated_events(layout: DataLayout) -> pd.DataFrame:
    return pd.concat(
        [
            pd.read_parquet(path)
            for path in sorted((layout.root / "validated" / "events").rglob("*.parquet"))
        ],
        ignore_index=True,
    )


def check(settings: Settings, **config: object) -> dg.AssetCheckResult:
    return stream_batch_parity(
        recloop=RecloopResource.from_settings(settings), config=StreamParityConfig(**config)
    )


def test_mart_equals_the_function_and_pushed_rows_pass_the_parity_check(
    tiny_log: DataLayout, tiny_settings: Settings, instance: dg.DagsterInstance
) -> None:
    last_day = TINY_DAYS[-1]
    day_start = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC)
    write_parquet_atomic(
        burst(day_start), tiny_log.raw_events_partition(TINY_TENANT, last_day) / "burst.parquet"
    )
    for day in tiny_log.event_days(TINY_TENANT):
        validate_event_partition(tiny_log, TINY_TENANT, day, now=day_start + timedelta(days=2))
    objects = build_feature_objects(tiny_log.marts)
    store = open_feature_store(tiny_settings)
    store.apply(list(objects))

    result = (
        build_definitions(tiny_settings)
        .resolve_job_def(FEATURES_JOB)
        .execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("stg_events"), MART],
            raise_on_error=False,
        )
    )
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), checks
    # Nothing was pushed yet: every sampled user is missing online, none compared.
    parity = checks["stream_batch_parity"].metadata
    assert parity["compared"].value == parity["mismatches"].value == 0
    assert parity["missing_online"].value == parity["checked"].value > 0

    mart = pd.read_parquet(tiny_log.marts / "user_stream_features.parquet")
    mart["last_items"] = mart["last_items"].map(list)
    events = validated_events(tiny_log)
    pd.testing.assert_frame_equal(mart, stream_feature_history(events))
    latest = mart.drop_duplicates(["tenant_id", "user_id"], keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(latest, stream_feature_rows(events))
    first = latest.set_index("user_id").loc["1"]
    assert first["engagements_1h"] == 6
    assert first["last_items"] == ["8", "3", "6", "7", "5"]
    assert first["event_timestamp"] == day_start + timedelta(hours=23, minutes=1)
    # The history keeps the rows as of earlier engagements, for point-in-time joins.
    assert (mart["user_id"] == "1").sum() > 1

    state = StreamState()
    state.add_frame(events.sort_values("event_timestamp"))
    store.push(STREAM_PUSH_SOURCE, state.drain(), to=PushMode.ONLINE)
    passed = check(tiny_settings, recent_hours=1_000.0)
    assert passed.passed
    assert passed.metadata["compared"].value == passed.metadata["checked"].value == len(latest)
    assert passed.metadata["mismatch_rate"].value == 0.0

    tampered = latest[latest["user_id"] == "1"].assign(engagements_1h=99)
    store.write_to_online_store(STREAM_VIEW, df=tampered)
    failed = check(tiny_settings, recent_hours=1_000.0)
    assert not failed.passed
    assert failed.metadata["mismatches"].value == 1
    (example,) = failed.metadata["examples"].value
    assert (example["user_id"], example["features"]) == ("1", ["engagements_1h"])
    assert check(tiny_settings, recent_hours=1_000.0, max_mismatch_rate=0.5).passed
