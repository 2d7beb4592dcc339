"""A positives-only log through the whole graph: the promoted champion serves every user
with history from the model, none from the popularity fallback. EASE is promoted there
by the default gates; the two-tower, with the gates against popularity relaxed, shows
that its refit knows the users who arrive after the test cut-off.

Issue 14: with only the weights trained on the first 80 % of time served, users whose
history lies after that cut (here the `LATE` cohort, which arrives on the last day) got
popularity. The champion now serves those weights refit on every label, and a user it
has no row for is placed by the user tower from their online features.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.definitions import TRAINING_JOB, build_definitions
from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.data.movielens import MovieLensFrames, to_raw_log, write_raw_log
from recloop.registry.model_registry import Registry
from recloop.settings import Settings
from services.runtime import RecloopRuntime
from tests.conftest import GENRES, TINY_TENANT
from tests.integration.test_pipeline import tiny_features_run

DAYS = 8
# Enough users that the test part (the last day) can tell a model from popularity with
# the default gates' confidence.
EARLY = [str(u) for u in range(1, 49)]  # like two items of their genre every day
LATE = [str(u) for u in range(49, 57)]  # arrive on the last day: all their labels are late
BROWSER = "57"  # only impressions on the last day: features, no label
ITEMS = [str(i) for i in range(1, 41)]  # enough unseen ones left for top-10 lists
# Gates relaxed: random tastes within a genre are not meant to beat popularity; this test is
# about what serves once a champion is promoted.
CANDIDATE = {"epochs": 5, "min_lift_over_popularity": -1.0, "max_popularity_ratio": 100.0}


def positives_only_frames(days: list[date], seed: int = 14) -> MovieLensFrames:
    """Five-star ratings only (every event a positive label), seeded."""
    rng = np.random.default_rng(seed)
    genre_items = {0: ITEMS[0::2], 1: ITEMS[1::2]}
    rows = []
    for n, day in enumerate(days):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        raters = EARLY + (LATE if n == len(days) - 1 else [])
        for user in raters:
            for item in rng.choice(genre_items[int(user) % 2], 2, replace=False):
                second = int(rng.integers(0, 86_400))
                at = int((start + timedelta(seconds=second)).timestamp())
                rows.append({"user_id": user, "item_id": item, "rating": 5.0, "timestamp": at})
    users = [*EARLY, *LATE, BROWSER]
    return MovieLensFrames(
        ratings=pd.DataFrame(rows).drop_duplicates(["user_id", "item_id", "timestamp"]),
        users=pd.DataFrame(
            {
                "user_id": users,
                "age": pd.array([30] * len(users), dtype="Int64"),
                "gender": "F",
                "occupation": "writer",
                "zip_code": "10000",
            }
        ),
        items=pd.DataFrame(
            {
                "item_id": ITEMS,
                "title": [f"Movie {i}" for i in ITEMS],
                "release_year": pd.array([2000] * len(ITEMS), dtype="Int64"),
                "genres": [GENRES[int(i) % 2] for i in ITEMS],
            }
        ),
    )


def write_impressions(layout: DataLayout, day: date) -> None:
    """The browser's impressions: events that make daily features but no label."""
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    events = pd.DataFrame(
        {
            "event_id": [f"imp:{BROWSER}:{item}" for item in ITEMS[:3]],
            "tenant_id": TINY_TENANT,
            "user_id": BROWSER,
            "item_id": ITEMS[:3],
            "event_type": "impression",
            "value": float("nan"),
            "event_timestamp": pd.to_datetime([at] * 3, utc=True),
        }
    )
    write_parquet_atomic(events, layout.raw_events_partition(TINY_TENANT, day) / "browse.parquet")


def promote_on_positives_only(
    data_dir: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    algorithm: str,
    candidate: dict[str, object],
) -> Settings:
    """The log ending yesterday (so online features are fresh), features, a champion of
    kind `algorithm` trained with `candidate` as its run config."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=DAYS - 1 - n) for n in range(DAYS)]
    layout = DataLayout(data_dir)
    write_raw_log(to_raw_log(positives_only_frames(days), TINY_TENANT), layout)
    write_impressions(layout, days[-1])
    settings = Settings(data_dir=data_dir, partitions_start=days[0], champion_algorithm=algorithm)
    defs = tiny_features_run(settings, instance)
    result = defs.resolve_job_def(TRAINING_JOB).execute_in_process(
        instance=instance,
        partition_key=TINY_TENANT,
        raise_on_error=False,
        run_config={"ops": {"model_candidate": {"config": candidate}}},
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    monkeypatch.setenv("RECLOOP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RECLOOP_PARTITIONS_START", days[0].isoformat())
    monkeypatch.setenv("RECLOOP_EXPERIMENTS_DIR", str(data_dir / "experiments"))
    monkeypatch.setenv("RECLOOP_CHAMPION_ALGORITHM", algorithm)
    return settings


@pytest.fixture
def champion_system(
    data_dir: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return promote_on_positives_only(data_dir, instance, monkeypatch, "two_tower", CANDIDATE)


def test_the_default_gates_promote_ease_on_a_positives_only_log(
    data_dir: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No threshold relaxed: the champion is EASE, and it serves every labelled user."""
    settings = promote_on_positives_only(data_dir, instance, monkeypatch, "ease", {})
    registry = Registry(DataLayout(settings.data_dir).registry)
    champion = registry.champion()
    assert champion is not None and champion.startswith("ease-")
    gate = {r["name"]: r for r in registry.metadata(champion)["gate"]["results"]}
    lift = gate["lift_over_popularity"]
    assert lift["passed"] and lift["threshold"] == -0.1 and gate["coverage"]["passed"]
    runtime = RecloopRuntime()
    assert runtime.reload() == {TINY_TENANT: champion}
    for user in [*EARLY, *LATE]:
        answer = runtime.recommend(TINY_TENANT, user, 10, [], {})
        assert answer.fallback is None and answer.model_version == champion, user
        assert len(answer.items) == 10
    assert runtime.recommend(TINY_TENANT, "never-seen", 3, [], {}).fallback == "popularity"

    # The negative control: labels shuffled across items; the same default gates block it
    # and the champion stays.
    result = (
        build_definitions(settings)
        .resolve_job_def(TRAINING_JOB)
        .execute_in_process(
            instance=instance,
            partition_key=TINY_TENANT,
            raise_on_error=False,
            run_config={"ops": {"model_candidate": {"config": {"label_permutation_seed": 1}}}},
        )
    )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["lift_over_popularity"] is False and checks["sanity"] is True
    assert registry.champion() == champion


def test_every_user_with_history_is_served_by_the_promoted_model(champion_system) -> None:
    registry = Registry(DataLayout(champion_system.data_dir).registry)
    champion = registry.champion()
    assert champion is not None
    bundle = registry.load(champion, with_evaluated=True)
    metadata = registry.metadata(champion)
    assert metadata["refit"]["weights_sha256"] != metadata["evaluated"]["weights_sha256"]
    # The judged weights never saw the late cohort: served alone, as before issue 14, they
    # sent it to popularity. The served refit knows every labelled user.
    judged = dict(zip(bundle.user_ids, bundle.judged().model.known_users.tolist(), strict=True))
    assert not any(judged[user] for user in LATE)
    assert bundle.model.known_users.all() and set(bundle.user_ids) == {*EARLY, *LATE}

    runtime = RecloopRuntime()
    assert runtime.reload() == {TINY_TENANT: champion}
    for user in [*EARLY, *LATE, BROWSER]:
        answer = runtime.recommend(TINY_TENANT, user, 10, [], {})
        assert answer.fallback is None and answer.model_version == champion, user
        assert len(answer.items) == 10
    assert runtime.recommend(TINY_TENANT, "never-seen", 3, [], {}).fallback == "popularity"
