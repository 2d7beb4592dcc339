"""Which time window to copy from the offline marts to the online store.

Windows come from the data, never the clock: Feast's own `materialize_incremental`
starts a first run at now - ttl, which skips historical logs entirely.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb

# Re-materialize the last day again on every run, so late events that changed the
# newest offline row reach the online store too.
MATERIALIZATION_OVERLAP = timedelta(days=1)
# Feast's end bound must lie past the newest row for that row to be copied.
END_MARGIN = timedelta(seconds=1)


def mart_time_range(parquet: Path) -> tuple[datetime, datetime]:
    """Oldest and newest `event_timestamp` of a mart file."""
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        first, last = conn.execute(
            "select min(event_timestamp), max(event_timestamp) from read_parquet($path)",
            {"path": str(parquet)},
        ).fetchone()
    return first, last


def materialization_window(
    first: datetime,
    last: datetime,
    previous_end: datetime | None,
    overlap: timedelta = MATERIALIZATION_OVERLAP,
) -> tuple[datetime, datetime]:
    """All history on the first run; afterwards from the previous end minus `overlap`."""
    start = first if previous_end is None else min(previous_end - overlap, last)
    return start, last + END_MARGIN
