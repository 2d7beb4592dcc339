"""Streaming features end to end over HTTP: feedback -> StreamState -> Feast push, across a
restart; then the batch mart from the same (validated) events, and the parity check.

The service runs on a data directory of its own (the trained registry and Feast stores,
no raw events), so the raw log, the mart and the check see only this test's feedback.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.definitions import FEATURES_JOB, build_definitions
from assets.features import StreamParityConfig, stream_batch_parity
from assets.resources import RecloopResource
from drivers.launcher import serve
from feature_repo.definitions import STREAM_VIEW, build_feature_objects
from feature_repo.store import open_feature_store, read_online_as_of
from recloop.data.ingest import validate_event_partition
from recloop.data.layout import DataLayout
from recloop.settings import Settings
from tests.trained_system import API_KEY, TrainedSystem, call

HEADERS = {"X-API-Key": API_KEY}


def serving_copy(trained: TrainedSystem, target: Path) -> Settings:
    for part in ("registry", "feast"):
        shutil.copytree(trained.settings.data_dir / part, target / part)
    return replace(trained.settings, data_dir=target)


def engage(url: str, user: str, event_type: str, position: int = 0) -> str:
    """Recommend to `user`, then send feedback on the item at `position`; the item id."""
    status, shown = call(f"{url}/recommend", {"user_id": user, "k": 5}, HEADERS)
    assert status == 200, shown
    item = shown["items"][position]["item_id"]
    body = {
        "request_id": shown["request_id"],
        "user_id": user,
        "item_id": item,
        "event_type": event_type,
        "value": 4.0 if event_type == "rating" else None,
    }
    status, answer = call(f"{url}/feedback", body, HEADERS)
    assert status == 200 and answer["accepted"], answer
    return item


def wait_online(
    settings: Settings, tenant: str, expected: dict[str, list[str]], timeout_s: float = 30
) -> float:
    """Seconds until every one of `tenant`'s users' online `last_items` equals `expected`."""
    store = open_feature_store(settings)
    view = build_feature_objects(settings.data_dir / "marts").user_stream
    keys = pd.DataFrame({"tenant_id": tenant, "user_id": list(expected)})
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        online = read_online_as_of(store, view, keys)
        if {
            u: list(i or []) for u, i in zip(online["user_id"], online["last_items"], strict=True)
        } == expected:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise AssertionError(f"online user_stream never became {expected}: {online.to_dict('records')}")


def check(settings: Settings) -> dg.AssetCheckResult:
    return stream_batch_parity(
        recloop=RecloopResource.from_settings(settings), config=StreamParityConfig()
    )


def test_pushed_stream_features_match_the_batch_mart_across_a_restart(
    trained: TrainedSystem, tmp_path: Path
) -> None:
    settings = serving_copy(trained, tmp_path / "data")
    bundle = trained.registry.load(trained.registry.champion())
    tenant = str(bundle.metadata["tenants"][0])
    a, b, c, d = (str(user) for user in bundle.user_ids[:4])

    with serve(settings, {"RECLOOP_API_KEY": API_KEY}) as url:
        clicked = [engage(url, a, "click", 0), engage(url, a, "click", 1)]
        bought = engage(url, b, "purchase")
        rated = engage(url, c, "rating")
        engage(url, d, "view")
        latency = wait_online(settings, tenant, {a: clicked[::-1], b: [bought], c: [rated], d: []})
    print(f"feedback to online value: {latency:.2f} s")

    # A new process rebuilds its state from the raw log: A's next click counts the others.
    with serve(settings, {"RECLOOP_API_KEY": API_KEY}) as url:
        again = engage(url, a, "click", 2)
        wait_online(settings, tenant, {a: [again, *clicked[::-1]]})

    layout = DataLayout(settings.data_dir)
    for day in layout.event_days(tenant):
        validate_event_partition(layout, tenant, day, now=datetime.now(UTC))
    result = (
        build_definitions(settings)
        .resolve_job_def(FEATURES_JOB)
        .execute_in_process(
            instance=trained.instance,
            asset_selection=[dg.AssetKey("stg_events"), dg.AssetKey("user_stream_features")],
            raise_on_error=False,
        )
    )
    assert result.success
    (parity,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "stream_batch_parity"
    ]
    metadata = {key: value.value for key, value in parity.metadata.items()}
    print(f"stream_batch_parity: {metadata}")
    assert parity.passed
    assert (metadata["checked"], metadata["compared"], metadata["mismatches"]) == (3, 3, 0)
    assert metadata["mismatch_rate"] == 0.0
    history = pd.read_parquet(settings.data_dir / "marts" / "user_stream_features.parquet")
    assert history.loc[history["user_id"] == a, "engagements_1h"].tail(3).tolist() == [1, 2, 3]
    mart = history.drop_duplicates("user_id", keep="last")
    assert mart.set_index("user_id").loc[a, "engagements_1h"] == 3

    store = open_feature_store(settings)
    tampered = mart[mart["user_id"] == b].assign(last_items=[["not-what-was-bought"]])
    store.write_to_online_store(STREAM_VIEW, df=tampered)
    failed = check(settings)
    assert not failed.passed
    assert failed.metadata["mismatch_rate"].value == pytest.approx(1 / 3)
    (example,) = failed.metadata["examples"].value
    assert (example["user_id"], example["features"]) == (b, ["last_items"])
