"""The one definition of the streaming user features, and the service's state that reuses it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.features.stream_features import (
    KEY_COLUMNS,
    ROW_COLUMNS,
    StreamState,
    recent_engagement_events,
    stream_feature_history,
    stream_feature_rows,
    stream_features_as_of,
)

NOON = datetime(2024, 3, 1, 12, tzinfo=UTC)


def event(
    event_id: str,
    minutes: float,
    item: str = "i",
    event_type: str = "click",
    user: str = "u",
    tenant: str = "t",
) -> dict[str, object]:
    """An event `minutes` after noon (negative: before)."""
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "user_id": user,
        "item_id": item,
        "event_type": event_type,
        "event_timestamp": NOON + timedelta(minutes=minutes),
    }


def rows_of(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return stream_feature_rows(pd.DataFrame(events)).to_dict("records")


def test_the_window_is_the_hour_up_to_and_including_the_latest_engagement() -> None:
    (row,) = rows_of(
        [
            event("a", -60, "exactly-an-hour-before"),
            event("b", -59.99, "just-inside"),
            event("c", 0, "latest"),
            event("d", 5, "impression-after", event_type="impression"),
            event("e", 6, "view-after", event_type="view"),
        ]
    )
    assert row == {
        "tenant_id": "t",
        "user_id": "u",
        "event_timestamp": pd.Timestamp(NOON),
        "engagements_1h": 2,
        "last_items": ["latest", "just-inside"],
    }


def test_last_items_are_the_five_most_recent_with_repeats_and_ties_broken_by_event_id() -> None:
    events = [
        event("e1", -50, "a", "rating"),
        event("e2", -40, "b", "purchase"),
        event("e3", -30, "c"),
        event("e4", -20, "a"),
        event("e6", -10, "e"),
        event("e5", -10, "d"),
    ]
    (row,) = rows_of(events)
    assert row["engagements_1h"] == 6
    assert row["last_items"] == ["e", "d", "a", "c", "b"]
    assert row["event_timestamp"] == pd.Timestamp(NOON - timedelta(minutes=10))


def test_one_row_per_tenant_and_user_and_none_without_engagement() -> None:
    rows = rows_of(
        [
            event("a", 0, user="u", tenant="shop"),
            event("a", 1, user="u", tenant="news"),
            event("b", 0, user="w", event_type="impression"),
        ]
    )
    assert [(r["tenant_id"], r["user_id"], r["engagements_1h"]) for r in rows] == [
        ("news", "u", 1),
        ("shop", "u", 1),
    ]
    empty = stream_feature_rows(pd.DataFrame([event("x", 0, event_type="view")]))
    assert list(empty.columns) == ROW_COLUMNS and empty.empty


def random_stream(seed: int, events: int, lateness: timedelta) -> list[dict[str, object]]:
    """Users of one or two tenants engaging over a few hours, bursts and idle spells, with
    arrival order jittered by up to `lateness`, and some events delivered twice."""
    rng = np.random.default_rng(seed)
    clock = NOON
    stream = []
    for index in range(events):
        clock += timedelta(
            seconds=int(rng.choice([0, 1, 30, 600, 2_400], p=[0.1, 0.4, 0.3, 0.15, 0.05]))
        )
        stream.append(
            {
                "event_id": f"e{index:05d}",
                "tenant_id": str(rng.choice(["shop", "news"], p=[0.8, 0.2])),
                "user_id": f"u{rng.integers(0, 12)}",
                "item_id": f"i{rng.integers(0, 30)}",
                "event_type": str(
                    rng.choice(["click", "purchase", "rating", "impression", "view"])
                ),
                "event_timestamp": clock,
            }
        )
    jitter = rng.uniform(0, lateness.total_seconds(), len(stream))
    arrival = np.argsort(
        [e["event_timestamp"].timestamp() + j for e, j in zip(stream, jitter, strict=True)]
    )
    ordered = [stream[i] for i in arrival]
    repeats = rng.choice(len(ordered), size=len(ordered) // 20, replace=False)
    for position in sorted(repeats, reverse=True):
        ordered.insert(position + 3, ordered[position])
    return ordered


def naive_history(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """The definition read literally: for every user and engagement time t, the events
    of (t - 1 h, t] in (time, event id) order."""
    engaged = {
        (e["tenant_id"], e["user_id"], e["event_id"]): e
        for e in events
        if e["event_type"] in ("click", "purchase", "rating")
    }
    by_user: dict[tuple[str, str], list[dict[str, object]]] = {}
    for e in engaged.values():
        by_user.setdefault((e["tenant_id"], e["user_id"]), []).append(e)
    rows = []
    for (tenant, user), mine in sorted(by_user.items()):
        mine.sort(key=lambda e: (e["event_timestamp"], e["event_id"]))
        for at in sorted({e["event_timestamp"] for e in mine}):
            window = [e for e in mine if at - timedelta(hours=1) < e["event_timestamp"] <= at]
            rows.append(
                {
                    "tenant_id": tenant,
                    "user_id": user,
                    "event_timestamp": pd.Timestamp(at),
                    "engagements_1h": len(window),
                    "last_items": [e["item_id"] for e in reversed(window)][:5],
                }
            )
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_history_holds_a_row_as_of_every_engagement_time(seed: int) -> None:
    stream = random_stream(seed, 800, timedelta(minutes=5))
    history = stream_feature_history(pd.DataFrame(stream))
    assert history.to_dict("records") == naive_history(stream)
    assert len(history) > 200
    # The latest row per user is what the service pushes.
    latest = history.groupby(KEY_COLUMNS).tail(1).reset_index(drop=True)
    pd.testing.assert_frame_equal(latest, stream_feature_rows(pd.DataFrame(stream)))


def test_history_rows_of_tied_events_see_every_tie() -> None:
    rows = stream_feature_history(
        pd.DataFrame([event("b", 0, "second"), event("a", 0, "first"), event("c", 1, "third")])
    ).to_dict("records")
    assert [(r["engagements_1h"], r["last_items"]) for r in rows] == [
        (2, ["second", "first"]),
        (3, ["third", "second", "first"]),
    ]
    empty = stream_feature_history(pd.DataFrame([event("x", 0, event_type="view")]))
    assert list(empty.columns) == ROW_COLUMNS and empty.empty


def test_a_request_sees_only_its_own_tenants_user() -> None:
    # Tenants share ids: user "u" of tenant "other" has engaged with nothing.
    events = pd.DataFrame([event("a", -30, "first"), event("b", -10, "second")])
    requests = pd.DataFrame(
        {"tenant_id": ["t", "other"], "user_id": ["u", "u"], "event_timestamp": [NOON, NOON]}
    )
    seen = stream_features_as_of(events, requests)
    assert seen.loc[0].tolist() == [2, ["second", "first"]]
    assert seen.loc[1].isna().all()


def test_a_request_sees_the_features_as_of_just_before_it_and_at_most_an_hour_old() -> None:
    events = pd.DataFrame([event("a", -30, "first"), event("b", -10, "second")])
    requests = pd.DataFrame(
        {
            "tenant_id": "t",
            "user_id": ["u", "u", "u", "u", "stranger"],
            "event_timestamp": [NOON + timedelta(minutes=m) for m in (0, -10, -40, 51, 0)],
        }
    )
    seen = stream_features_as_of(events, requests)
    assert list(seen.columns) == ["engagements_1h", "last_items"]
    assert seen.loc[0].tolist() == [2, ["second", "first"]]
    # a request stamped with an engagement does not see it yet
    assert seen.loc[1].tolist() == [1, ["first"]]
    # before any engagement, an hour after the last one, and for an unknown user: nothing
    assert seen.loc[[2, 3, 4], "engagements_1h"].isna().all()
    assert seen.loc[[2, 3, 4], "last_items"].isna().all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_fed_event_by_event_drains_exactly_the_batch_rows(seed: int) -> None:
    lateness = timedelta(minutes=5)
    stream = random_stream(seed, 1_000, lateness)
    state = StreamState(max_lateness=lateness)
    rng = np.random.default_rng(seed)
    drained_rows = 0
    for count, item in enumerate(stream, start=1):
        state.add([item])
        if rng.random() < 0.05 or count == len(stream):
            drained = state.drain()
            batch = stream_feature_rows(pd.DataFrame(stream[:count]))
            expected = batch.merge(drained[KEY_COLUMNS], on=KEY_COLUMNS)
            pd.testing.assert_frame_equal(drained, expected)
            drained_rows += len(drained)
    assert drained_rows > 100
    # Bounded: only users active within the last hour and lateness are kept.
    newest = max(e["event_timestamp"] for e in stream)
    recent = {
        (e["tenant_id"], e["user_id"])
        for e in stream
        if e["event_type"] in ("click", "purchase", "rating")
        and e["event_timestamp"] > newest - timedelta(hours=1) - lateness
    }
    assert state.users() <= len(recent)


def engaged(features: dict[str, object]) -> tuple[int, list[str]] | None:
    """(engagements in the hour, last items), None for no engagement: nulls compared alike."""
    count = features["engagements_1h"]
    return None if count is None or pd.isna(count) else (int(count), list(features["last_items"]))


@pytest.mark.parametrize("seed", [0, 1])
def test_state_answers_a_request_as_the_log_replay_does(seed: int) -> None:
    """What the service reads for a request (the state, before any flush or push) equals
    what off-policy replay and training rebuild from the log for the same moment."""
    stream = random_stream(seed, 600, timedelta(0))  # the service stamps events in order
    state = StreamState(max_lateness=timedelta(0))
    rng = np.random.default_rng(seed)
    seen: list[dict[str, object]] = []
    compared = fresh = 0
    for item in stream:
        if seen and rng.random() < 0.3:
            # a request stamped with the last event's time, or up to 70 minutes later
            at = seen[-1]["event_timestamp"] + timedelta(minutes=float(rng.choice([0, 1, 70])))
            tenant, user = str(item["tenant_id"]), str(item["user_id"])
            request = pd.DataFrame(
                {"tenant_id": [tenant], "user_id": [user], "event_timestamp": [at]}
            )
            mine = [e for e in seen if (e["tenant_id"], e["user_id"]) == (tenant, user)]
            expected = stream_features_as_of(
                pd.DataFrame(mine or seen[:0], columns=list(stream[0])), request
            ).to_dict("records")[0]
            answer = state.features_as_of(tenant, user, at) or {"engagements_1h": None}
            assert engaged(answer) == engaged(expected), (answer, expected, at)
            fresh += engaged(answer) is not None
            compared += 1
        state.add([item])
        seen.append(item)
    assert compared > 100 and fresh > 30


def test_a_user_idle_for_over_an_hour_starts_afresh() -> None:
    state = StreamState(max_lateness=timedelta(0))
    state.add([event("a", 0, "old", user="u"), event("b", 0, user="w")])
    state.drain()
    state.add([event("c", 61, user="w")])
    state.drain()
    assert state.users() == 1
    state.add([event("d", 200, "new", user="u")])
    (row,) = state.drain().to_dict("records")
    assert (row["user_id"], row["engagements_1h"], row["last_items"]) == ("u", 1, ["new"])


def test_requeued_rows_come_back_unless_a_fresher_row_replaces_them() -> None:
    state = StreamState()
    state.add([event("a", 0, "x", user="u"), event("b", 0, "y", user="w")])
    failed = state.drain()
    state.requeue(failed)
    state.add([event("c", 1, "z", user="w")])
    again = state.drain().set_index("user_id")
    assert again.loc["u", "last_items"] == ["x"]
    assert again.loc["w", "last_items"] == ["z", "y"]
    assert state.drain().empty


def test_recent_engagement_events_reads_the_last_hour_of_the_given_partitions(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    now = datetime(2024, 3, 2, 0, 30, tzinfo=UTC)
    yesterday = layout.raw_events_partition("t", date(2024, 3, 1))
    today = layout.raw_events_partition("t", date(2024, 3, 2))
    frame = pd.DataFrame(
        [
            {**event("old", 11 * 60 - 31), "value": None},
            {**event("late-yesterday", 11 * 60 + 50), "value": None},
            {**event("shown", 12 * 60 + 10, event_type="impression"), "value": None},
            {**event("today", 12 * 60 + 20, event_type="rating"), "value": 4.0},
            {**event("future", 12 * 60 + 40), "value": None},
        ]
    )
    write_parquet_atomic(frame.iloc[:2], yesterday / "a.parquet")
    write_parquet_atomic(frame.iloc[2:], today / "b.parquet")
    events = recent_engagement_events([yesterday, today, layout.raw_events / "missing"], now)
    assert events["event_id"].tolist() == ["late-yesterday", "today"]
