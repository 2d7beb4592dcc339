"""Served lists and feedback become raw events that pass the pipeline's own validation."""

import time
from datetime import UTC, datetime

import pandas as pd

from recloop.event_log import (
    EventBuffer,
    ServedList,
    ServedLists,
    feedback_problem,
    feedback_row,
    impression_rows,
)
from recloop.layout import DataLayout, parquet_files
from recloop.validation import validate_events

SERVED = ServedList("r1", "shop", "u1", ("i1", "i2", "i3"), "tt-1", "champion")
AT = datetime(2024, 3, 4, 12, tzinfo=UTC)


def test_impressions_and_feedback_validate_against_the_raw_contract(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    buffer = EventBuffer(layout)
    buffer.add(impression_rows(SERVED, AT))
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
    assert set(impressions["model_version"]) == {"tt-1"}
    click = valid.loc[valid["event_type"] == "click"].iloc[0]
    assert (click["request_id"], click["position"]) == ("r1", 1)


def test_a_full_buffer_wakes_its_writer_and_files_never_mix_days(tmp_path) -> None:
    layout = DataLayout(tmp_path)
    buffer = EventBuffer(layout, max_rows=4)
    buffer.add(impression_rows(SERVED, AT))
    assert buffer.written == 0
    next_day = AT.replace(day=5)
    buffer.add(
        impression_rows(ServedList("r2", "shop", "u1", ("i1",), "tt-1", "champion"), next_day)
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
    assert feedback_problem(SERVED, "r1", "u1", "i2", "rating", None) == (
        422,
        "a rating needs a value",
    )
    assert feedback_problem(SERVED, "r1", "u1", "i2", "rating", 4.0) is None
