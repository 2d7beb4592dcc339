"""Served lists and feedback become raw events that pass the pipeline's own validation."""

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recloop.data.event_log import (
    EventBuffer,
    ServedList,
    ServedLists,
    feedback_problem,
    feedback_row,
    impression_rows,
    logged_served_lists,
)
from recloop.data.layout import DataLayout, parquet_files
from recloop.data.validation import validate_events

SERVED = ServedList("r1", "shop", "u1", ("i1", "i2", "i3"), "tt-1", "champion")
SCORES = (0.9, 0.5, 0.25)
AT = datetime(2024, 3, 4, 12, tzinfo=UTC)


def test_impressions_and_feedback_validate_against_the_raw_contract(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    buffer = EventBuffer(layout)
    buffer.add(impression_rows(SERVED, SCORES, AT))
    buffer.add([feedback_row(SERVED, "i2", "click", None, AT)])
    assert buffer.pending() == 4
    files = buffer.flush()
    assert buffer.pending() == 0 and buffer.written == 4
    assert len(files) == 1 and files[0].parent == layout.raw_events_partition("shop", AT.date())
    frame = pd.read_parquet(files[0])
    result = validate_events(frame, tenant="shop", day=AT.date(), now=AT)
    valid = result.valid
    assert len(valid) == 4 and result.quarantined.empty
    impressions = valid.loc[valid["event_type"] == "impression"].sort_values("position")
    assert impressions["item_id"].tolist() == ["i1", "i2", "i3"]
    assert impressions["value"].tolist() == list(SCORES)
    assert set(impressions["model_version"]) == {"tt-1"}
    click = valid.loc[valid["event_type"] == "click"].iloc[0]
    assert (click["request_id"], click["position"]) == ("r1", 1)


def test_a_full_buffer_wakes_its_writer_and_files_never_mix_days(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    buffer = EventBuffer(layout, max_rows=4)
    buffer.add(impression_rows(SERVED, SCORES, AT))
    assert buffer.written == 0
    next_day = AT.replace(day=5)
    buffer.add(
        impression_rows(
            ServedList("r2", "shop", "u1", ("i1",), "tt-1", "champion"), [0.5], next_day
        )
    )
    assert buffer.written == 0 and buffer.pending() == 4  # add() never writes
    started = time.perf_counter()
    buffer.flush_when_due(interval_s=60)  # full: returns at once
    assert time.perf_counter() - started < 5
    assert buffer.written == 4 and buffer.pending() == 0
    for day in (AT, next_day):
        assert len(parquet_files(layout.raw_events_partition("shop", day.date()))) == 1


def test_served_lists_forget_the_oldest_beyond_capacity() -> None:
    lists = ServedLists(capacity=2)
    for request in ("a", "b", "c"):
        lists.remember(ServedList(request, "shop", "u", ("i",), "v", "champion"))
    assert lists.get("a") is None and lists.get("c") is not None


def test_feedback_must_answer_what_was_shown_to_that_user() -> None:
    assert feedback_problem(SERVED, "r1", "u1", "i2", "click", None) is None
    assert feedback_problem(None, "r9", "u1", "i2", "click", None)[0] == 404
    assert feedback_problem(SERVED, "r1", "u2", "i2", "click", None)[0] == 422
    status, message = feedback_problem(SERVED, "r1", "u1", "i9", "click", None)
    assert status == 422 and "'i9' was not in the response" in message
    assert feedback_problem(SERVED, "r1", "u1", "i2", "rating", 4.0) is None


@pytest.mark.parametrize(
    ("event_type", "value", "problem"),
    [
        ("rating", None, "a rating needs a value in [0.5, 5], got None"),
        ("rating", 99.0, "a rating needs a value in [0.5, 5], got 99.0"),
        ("rating", float("nan"), "a rating needs a value in [0.5, 5], got nan"),
        ("purchase", -3.0, "a purchase's value is an amount >= 0, got -3.0"),
        ("purchase", float("inf"), "a purchase's value is an amount >= 0, got inf"),
        ("click", 1.0, "a click carries no value, got 1.0"),
        ("view", 0.0, "a view carries no value, got 0.0"),
        ("rating", 0.5, None),
        ("rating", 5.0, None),
        ("purchase", 12.5, None),
        ("purchase", None, None),
    ],
)
def test_feedback_values_are_checked_by_event_type(event_type, value, problem) -> None:
    answer = feedback_problem(SERVED, "r1", "u1", "i2", event_type, value)
    assert answer == (None if problem is None else (422, problem))


def test_the_same_feedback_is_acknowledged_once_and_forgotten_with_its_list() -> None:
    lists = ServedLists(capacity=1)
    lists.remember(SERVED)
    key = ("r1", "i2", "click", None)
    assert lists.claim_feedback(key) is None
    lists.record_feedback(key, 7)
    lists.record_feedback(key, 8)  # a racing repeat keeps the first
    assert lists.claim_feedback(key) == 7
    assert lists.claim_feedback(("r1", "i2", "rating", 4.0)) is None
    lists.remember(replace(SERVED, request_id="r2"))  # capacity 1: r1 is forgotten
    assert lists.claim_feedback(key) is None


def test_rows_get_sequence_numbers_and_a_waiter_returns_once_its_row_is_on_disk(
    tmp_path,
) -> None:
    written: list[int] = []
    buffer = EventBuffer(DataLayout(tmp_path), on_written=written.append)
    assert buffer.add(impression_rows(SERVED, SCORES, AT)) == 3
    seq = buffer.add([feedback_row(SERVED, "i2", "click", None, AT)])
    assert seq == 4 and buffer.stats().durable_seq == 0
    assert buffer.wait_durable(seq, timeout_s=0.05) is False  # no writer thread yet
    writer = threading.Thread(target=buffer.flush_when_due, args=(60,))
    started = time.perf_counter()
    writer.start()
    assert buffer.wait_durable(seq, timeout_s=10) is True  # woke the writer: no 60 s wait
    writer.join()
    assert time.perf_counter() - started < 5
    stats = buffer.stats()
    assert (stats.accepted, stats.written, stats.durable_seq, stats.pending) == (4, 4, 4, 0)
    assert written == [4]
    (path,) = parquet_files(DataLayout(tmp_path).raw_events_partition("shop", AT.date()))
    assert len(pd.read_parquet(path)) == 4


def test_a_failed_write_keeps_its_rows_for_the_next_flush_and_says_why(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    buffer = EventBuffer(layout)
    seq = buffer.add(impression_rows(SERVED, SCORES, AT))
    blocker = layout.raw_events / "tenant=shop"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the tenant directory should be")
    with pytest.raises(OSError):
        buffer.flush()
    stats = buffer.stats()
    assert (stats.pending, stats.written, stats.durable_seq, stats.failed_flushes) == (3, 0, 0, 1)
    assert stats.last_error.startswith(("FileExistsError", "NotADirectoryError"))
    later = buffer.add([feedback_row(SERVED, "i1", "click", None, AT)])
    blocker.unlink()
    buffer.flush()
    stats = buffer.stats()
    assert (stats.pending, stats.written, stats.durable_seq) == (0, 4, later) and later > seq
    (path,) = parquet_files(layout.raw_events_partition("shop", AT.date()))
    assert pd.read_parquet(path)["event_id"].is_unique


def _log_batch(layout: DataLayout, name: str, served: list[ServedList], at: datetime) -> Path:
    buffer = EventBuffer(layout, source=name)
    for one in served:
        buffer.add(impression_rows(one, [1.0] * len(one.item_ids), at))
        buffer.add([feedback_row(one, one.item_ids[0], "click", None, at)])
    (path,) = buffer.flush()
    return path


def test_served_lists_are_rebuilt_from_the_newest_logged_impressions(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    yesterday = AT - timedelta(days=1)
    old = [
        ServedList(f"a{i}", "shop", "u1", ("i3", "i1", "i2"), "tt-1", "champion") for i in range(3)
    ]
    new = [ServedList(f"b{i}", "shop", "u2", ("i2",), "tt-2", "champion") for i in range(2)]
    _log_batch(layout, "serve", old, yesterday)
    _log_batch(layout, "serve", new, AT)
    _log_batch(layout, "other", [ServedList("c0", "shop", "u", ("i1",), "v", "x")], AT)
    days = [yesterday.date(), AT.date()]
    everything = logged_served_lists(layout, "shop", days, limit=100)
    assert everything == old + new  # same items in the same order, oldest first
    newest = logged_served_lists(layout, "shop", days, limit=3)
    assert [s.request_id for s in newest] == ["a2", "b0", "b1"]
    assert logged_served_lists(layout, "shop", [AT.date()], limit=100) == new
    assert logged_served_lists(layout, "other-tenant", days, limit=100) == []
