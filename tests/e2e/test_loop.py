"""The closed loop, short: simulated traffic -> drift -> sensors -> retrain -> gate -> hot swap.

Runs `drivers.loop.run_loop` with the inline orchestrator (the real sensors and jobs,
evaluated and executed in this process instead of by a daemon) on MovieLens-100K
moved to end yesterday, with a small drift window so it takes minutes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.definitions import build_definitions
from assets.monitoring import drift_sensor, nightly_retrain, retrain_on_new_data_sensor
from assets.resources import RecloopResource
from drivers.demo import DEMO_TENANT
from drivers.loop import LoopConfig, prepare, run_loop
from recloop.data.layout import DataLayout
from recloop.registry.model_registry import Registry
from recloop.settings import Settings


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> tuple[LoopConfig, dict]:
    root = tmp_path_factory.mktemp("loop")
    config = LoopConfig(
        data_dir=root / "data",
        artifacts=root / "artifacts",
        orchestrator="inline",
        sessions_before_drift=800,
        sessions_after_swap=300,
        rate=50.0,
        drift_window=2_500,
        post_drift_impressions=15_000,
        drift_share=0.6,
        tick_s=3.0,
        timeout_s=900.0,
    )
    return config, run_loop(config)


def test_drift_is_detected_and_retrains_exactly_once(loop) -> None:
    config, result = loop
    assert result["drift_detected_after_events"] is not None, result
    drift_runs = [r for r in result["retrain_runs"] if r["trigger"] == "drift"]
    assert len(drift_runs) == 1, drift_runs
    assert drift_runs[0]["run_key"] == f"drift:{result['champion_before']}"
    assert "CTR fell" in drift_runs[0]["reason"] or "clicked-genre" in drift_runs[0]["reason"]
    assert result["ctr_after_drift"] < result["ctr_before_drift"]


def test_no_request_failed_and_the_service_swapped_to_a_gated_champion(loop) -> None:
    config, result = loop
    assert result["failed_requests"] == 0, result["failures"]
    registry = Registry(DataLayout(config.data_dir.resolve()).registry)
    champion = registry.champion()
    if result["promotions"]:
        assert champion == result["champion_after"] != result["champion_before"]
        assert registry.metadata(champion)["gate"]["passed"] is True
        assert result["swap_after_s"] is not None
    else:  # the gate blocked the retrained candidate: the old champion keeps serving
        assert champion == result["champion_before"]
        blocked = [v for v in registry.versions() if registry.labels(v).get("gate") == "failed"]
        assert blocked


def test_the_drift_retrain_trained_on_most_post_drift_labels(loop) -> None:
    config, result = loop
    registry = Registry(DataLayout(config.data_dir.resolve()).registry)
    (retrained,) = [v for v in registry.versions() if v != result["champion_before"]]
    examples = pd.read_parquet(
        Path(registry.metadata(retrained)["training_set"]) / "examples.parquet"
    )
    drift_run = next(r for r in result["retrain_runs"] if r["trigger"] == "drift")
    since = pd.Timestamp(drift_run["drift_since"])
    after = examples[pd.to_datetime(examples["event_timestamp"], utc=True) >= since]
    shares = after["split"].value_counts(normalize=True)
    assert len(after) > 500, len(after)
    assert shares["train"] > 0.6 and shares["valid"] > 0.1 and shares["test"] > 0.1, shares


def test_the_timeline_is_written_with_its_marks(loop) -> None:
    config, result = loop
    timeline = json.loads(Path(result["timeline"]).read_text())
    kinds = [mark["what"] for mark in timeline["marks"]]
    assert kinds[:2] == ["drift injected", "drift detected"]
    assert any(k.startswith("retrain requested (drift)") for k in kinds)
    assert len(timeline["sessions"]) == result["sessions"]
    # no served list beats the best list the simulator could have shown that user then
    assert all(s["expected_clicks"] <= s["ideal_clicks"] + 1e-9 for s in timeline["sessions"])
    assert all(0 < share < 1.5 for share in result["share_of_ideal"].values()), result
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _evaluate(sensor, settings, instance, cursor=None):
    with (
        dg.partition_loading_context(dynamic_partitions_store=instance),
        dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=build_definitions(settings),
            resources={"recloop": RecloopResource.from_settings(settings)},
        ) as context,
    ):
        return sensor.evaluate_tick(context)


def test_retrain_sensors_ask_for_the_same_run_after_a_restart(loop) -> None:
    config, _ = loop
    settings, instance, *_ = prepare(config)
    first = _evaluate(drift_sensor, settings, instance)
    again = _evaluate(drift_sensor, settings, instance, cursor=first.cursor)
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]

    eager = replace(settings, retrain_after_events=50)
    champion = Registry(DataLayout(settings.data_dir).registry).champion()
    new_data = _evaluate(retrain_on_new_data_sensor, eager, instance)
    restarted = _evaluate(retrain_on_new_data_sensor, eager, instance)
    (request,) = new_data.run_requests
    assert request.run_key.startswith(f"new-data:{champion}:")
    assert request.partition_key == DEMO_TENANT  # a retrain of the champion's tenant only
    assert [r.run_key for r in restarted.run_requests] == [request.run_key]


def _nightly(settings: Settings, instance: dg.DagsterInstance):
    with dg.build_schedule_context(
        instance=instance,
        resources={"recloop": RecloopResource.from_settings(settings)},
        repository_def=build_definitions(settings).get_repository_def(),
        scheduled_execution_time=datetime(2026, 11, 23, 3, tzinfo=UTC),
    ) as context:
        return nightly_retrain.evaluate_tick(context)


def test_nightly_retrain_runs_only_when_events_are_newer_than_the_champion(loop, trained) -> None:
    quiet = _nightly(trained.settings, trained.instance)
    assert not quiet.run_requests and "nothing changed" in quiet.skip_message
    config, _ = loop  # traffic after the last retrain is newer than its champion's data
    settings, instance, *_ = prepare(config)
    busy = _nightly(settings, instance)
    (request,) = busy.run_requests
    assert request.run_key.startswith("nightly:2026-11-23:")
    assert request.partition_key == DEMO_TENANT
