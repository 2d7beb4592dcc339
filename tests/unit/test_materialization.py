from datetime import UTC, datetime, timedelta

from recloop.features.materialization import materialization_window

FIRST = datetime(1997, 9, 21, tzinfo=UTC)
LAST = datetime(1998, 4, 23, tzinfo=UTC)


def test_first_run_takes_all_history_whatever_the_clock() -> None:
    assert materialization_window(FIRST, LAST, None) == (FIRST, LAST + timedelta(seconds=1))


def test_later_runs_overlap_the_previous_end_by_a_day() -> None:
    previous = datetime(1998, 4, 20, tzinfo=UTC)
    start, end = materialization_window(FIRST, LAST, previous)
    assert start == previous - timedelta(days=1)
    assert end == LAST + timedelta(seconds=1)


def test_no_new_data_still_rereads_the_newest_rows() -> None:
    start, end = materialization_window(FIRST, LAST, LAST + timedelta(seconds=1))
    assert start == LAST - timedelta(days=1) + timedelta(seconds=1)
    assert start < end
