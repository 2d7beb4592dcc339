"""Fresh per-user features from engagement events: the one definition for stream and batch.

Engagement events are clicks, purchases and ratings (any rating: rating a film is
engaging with it); impressions and views are not, since the user need not act.
As of a moment t at which a (tenant_id, user_id) has an engagement event:

- `event_timestamp`: t;
- `engagements_1h`: engagement events in the hour up to and including t, i.e. with
  a timestamp in (t - 1 h, t];
- `last_items`: the item ids of the last 5 of those events, most recent first
  (an item engaged with twice appears twice).

An event id counts once per user. Events are ordered by (event_timestamp, event_id),
so ties break alike, and events stamped alike are taken together. A row only looks
at the hour before its own time, so it is a fact about that moment:

- `stream_feature_history` gives a row as of every distinct engagement time: the
  feature's history, what the dbt mart `user_stream_features` holds and Feast's
  point-in-time join reads for training labels;
- `stream_feature_rows` gives each user's latest row: what the service (a
  `StreamState` fed event by event) pushes to Feast's online store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recloop.data.layout import parquet_files
from recloop.data.schemas import ENGAGEMENT_TYPES

WINDOW = timedelta(hours=1)
LAST_ITEMS = 5
KEY_COLUMNS = ["tenant_id", "user_id"]
FEATURE_COLUMNS = ["engagements_1h", "last_items"]
ROW_COLUMNS = [*KEY_COLUMNS, "event_timestamp", *FEATURE_COLUMNS]
EVENT_COLUMNS = ["event_id", "tenant_id", "user_id", "item_id", "event_type", "event_timestamp"]
TIMESTAMP_DTYPE = "datetime64[us, UTC]"
# A request (or a training label) sees the features as of just before its own time: its
# own engagement, and any stamped with it, is not yet in them.
LOOKUP_BEFORE = timedelta(microseconds=1)


def _engagements(events: pd.DataFrame) -> pd.DataFrame:
    """The engagement events of `events`, once per (key, event id), in (key, time, id) order."""
    engaged = events.loc[events["event_type"].isin(ENGAGEMENT_TYPES), EVENT_COLUMNS]
    # A replayed or re-sent event counts once.
    engaged = engaged.drop_duplicates([*KEY_COLUMNS, "event_id"]).copy()
    engaged["event_timestamp"] = pd.to_datetime(engaged["event_timestamp"], utc=True).astype(
        TIMESTAMP_DTYPE
    )
    return engaged.sort_values(
        [*KEY_COLUMNS, "event_timestamp", "event_id"], kind="stable", ignore_index=True
    )


def stream_feature_history(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (tenant_id, user_id, distinct engagement time) in `events` (columns
    EVENT_COLUMNS; others ignored): the features as of that time. Sorted by key and
    time; columns ROW_COLUMNS.

    Vectorized: each event's window start is one binary search over (user, time rank)
    keys, and the last items are gathered from the sorted item column.
    """
    engaged = _engagements(events)
    if engaged.empty:
        return pd.DataFrame(
            {
                "tenant_id": pd.Series(dtype=object),
                "user_id": pd.Series(dtype=object),
                "event_timestamp": pd.Series(dtype=TIMESTAMP_DTYPE),
                "engagements_1h": pd.Series(dtype="int64"),
                "last_items": pd.Series(dtype=object),
            }
        )
    group = engaged.groupby(KEY_COLUMNS, sort=False).ngroup().to_numpy(dtype=np.int64)
    stamps = (
        engaged["event_timestamp"].dt.tz_localize(None).to_numpy("datetime64[us]").astype(np.int64)
    )
    window_us = int(WINDOW / timedelta(microseconds=1))
    # Ranks of the distinct times keep (group, time) keys small enough for int64.
    times = np.unique(stamps)
    rank = np.searchsorted(times, stamps)
    first_inside = np.searchsorted(times, stamps - window_us, side="right")
    stride = len(times) + 1
    keys = group * stride + rank
    start = np.searchsorted(keys, group * stride + first_inside, side="left")
    # A row is as of a time: the last event of each (group, time) run sees every tie.
    position = np.arange(len(engaged))
    last_of_run = np.r_[keys[1:] != keys[:-1], True]
    rows = position[last_of_run]
    counts = rows - start[last_of_run] + 1
    lengths = np.minimum(counts, LAST_ITEMS)
    offsets = np.r_[0, np.cumsum(lengths)]
    # Positions rows[r], rows[r] - 1, ... for each row r, most recent first.
    gathered = np.repeat(rows, lengths) - (
        np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    )
    items = pa.ListArray.from_arrays(
        pa.array(offsets, type=pa.int32()),
        pa.array(engaged["item_id"].astype(str).to_numpy()[gathered], type=pa.string()),
    )
    history = engaged.loc[rows, [*KEY_COLUMNS, "event_timestamp"]].reset_index(drop=True)
    history["engagements_1h"] = counts.astype("int64")
    history["last_items"] = items.to_pylist()
    return history[ROW_COLUMNS]


def stream_feature_rows(events: pd.DataFrame) -> pd.DataFrame:
    """Each (tenant_id, user_id)'s latest row of `stream_feature_history`, sorted by key."""
    history = stream_feature_history(events)
    latest = history.drop_duplicates(KEY_COLUMNS, keep="last")
    return latest.sort_values(KEY_COLUMNS, ignore_index=True)


def stream_features_as_of(events: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """The features each request (`tenant_id`, `user_id`, `event_timestamp`) saw: its
    user's latest `stream_feature_history` row of `events` as of LOOKUP_BEFORE before the
    request and at most WINDOW old, else nulls. Columns FEATURE_COLUMNS, in the requests'
    order. Users are matched by tenant and id: tenants share ids."""
    rows = stream_feature_history(events)
    keys = {key: requests[key].astype(str) for key in KEY_COLUMNS}
    asked = requests.assign(
        **keys,
        at=requests["event_timestamp"].astype(TIMESTAMP_DTYPE) - LOOKUP_BEFORE,
        order=np.arange(len(requests)),
    ).sort_values("at")
    rows = rows.assign(**{key: rows[key].astype(str) for key in KEY_COLUMNS}).sort_values(
        "event_timestamp"
    )
    joined = pd.merge_asof(
        asked,
        rows[[*KEY_COLUMNS, "event_timestamp", *FEATURE_COLUMNS]].rename(
            columns={"event_timestamp": "row_time"}
        ),
        left_on="at",
        right_on="row_time",
        by=KEY_COLUMNS,
        tolerance=WINDOW,
        direction="backward",
    )
    return joined.sort_values("order")[FEATURE_COLUMNS].reset_index(drop=True)


class StreamState:
    """What the service keeps to compute `stream_feature_rows` as feedback arrives.

    Per (tenant, user) it retains only the engagement events inside the hour up to
    the user's latest one: all the function reads, whatever order events come in. A
    user whose latest event is `WINDOW + max_lateness` older than the newest event seen
    is dropped, since their next event opens a fresh window; so the state holds about
    one hour of engagement events. Exact for events at most `max_lateness` older than
    the newest seen (the service stamps events as it accepts them, so they arrive in
    order). `drain` returns the rows of users touched since the last drain, computed
    by the function itself on the retained events. Thread-safe: the request path adds,
    a background thread drains.
    """

    def __init__(self, max_lateness: timedelta = timedelta(minutes=10)) -> None:
        self.max_lateness = max_lateness
        self._events: dict[tuple[str, str], dict[str, tuple[pd.Timestamp, str, str]]] = {}
        self._latest: dict[tuple[str, str], pd.Timestamp] = {}
        # Each user's row as of all their retained events (`features_as_of`'s cache).
        self._rows: dict[tuple[str, str], dict[str, object]] = {}
        self._additions = 0  # `add` calls so far: a row computed before one is not cached
        self._touched: set[tuple[str, str]] = set()
        self._requeued: pd.DataFrame | None = None
        self._newest: pd.Timestamp | None = None
        self._lock = threading.Lock()

    def add(self, events: Iterable[Mapping[str, object]]) -> None:
        """Take raw event rows (the raw log's columns); non-engagement events are ignored,
        an event id seen before for the same user counts once."""
        with self._lock:
            self._additions += 1
            for event in events:
                if event["event_type"] not in ENGAGEMENT_TYPES:
                    continue
                key = (str(event["tenant_id"]), str(event["user_id"]))
                at = as_utc(event["event_timestamp"])
                retained = self._events.setdefault(key, {})
                retained[str(event["event_id"])] = (at, str(event["item_id"]), event["event_type"])
                self._rows.pop(key, None)
                latest = max(at, self._latest.get(key, at))
                self._latest[key] = latest
                self._newest = latest if self._newest is None else max(self._newest, latest)
                for event_id in [i for i, (t, _, _) in retained.items() if t <= latest - WINDOW]:
                    del retained[event_id]
                self._touched.add(key)

    def add_frame(self, events: pd.DataFrame) -> None:
        """`add` for a frame of raw events (a replay of the log)."""
        self.add(events[EVENT_COLUMNS].to_dict("records"))

    def drain(self) -> pd.DataFrame:
        """Rows for the users touched since the last drain (and rows given back by
        `requeue` that no fresher row replaces); forgets users idle for an hour and
        `max_lateness`."""
        with self._lock:
            touched, self._touched = self._touched, set()
            requeued, self._requeued = self._requeued, None
            events = [
                (event_id, tenant, user, item, event_type, at)
                for tenant, user in sorted(touched)
                for event_id, (at, item, event_type) in self._events[(tenant, user)].items()
            ]
            if self._newest is not None:
                idle_before = self._newest - WINDOW - self.max_lateness
                for key in [k for k, t in self._latest.items() if t <= idle_before]:
                    del self._events[key], self._latest[key]
                    self._rows.pop(key, None)
        return with_requeued(
            stream_feature_rows(pd.DataFrame(events, columns=EVENT_COLUMNS)), requeued
        )

    def features_as_of(
        self, tenant_id: str, user_id: str, at: datetime
    ) -> dict[str, object] | None:
        """One user's FEATURE_COLUMNS for a request at `at`, as `stream_features_as_of`
        computes them from the log: the latest row as of LOOKUP_BEFORE before `at` and at
        most WINDOW old, from the retained events; None when the user has none here.
        Fresher than the online store, which gets a row only after its events reach the
        raw log: a click counts in the very next request, as it will in a replay of the
        log (off-policy evaluation) and in a training set's point-in-time join."""
        key = (str(tenant_id), str(user_id))
        cutoff = as_utc(at) - LOOKUP_BEFORE
        with self._lock:
            retained = list(self._events.get(key, {}).items())
            row, additions = self._rows.get(key), self._additions
        if row is None or row["event_timestamp"] > cutoff:
            row = row_as_of(key, retained, cutoff)
            if row is None:
                return None
            if row["event_timestamp"] == max(stamp for _, (stamp, _, _) in retained):
                with self._lock:  # as of all the user's events: reused until another comes
                    if self._additions == additions:
                        self._rows[key] = row
        return features_of_row(row, cutoff)

    def requeue(self, rows: pd.DataFrame) -> None:
        """Give back drained rows that could not be delivered: the next drain returns them
        unless a fresher row for the same user replaces them."""
        with self._lock:
            self._requeued = merge_requeued(self._requeued, rows)

    def users(self) -> int:
        with self._lock:
            return len(self._events)


RetainedEvent = tuple[str, tuple[pd.Timestamp, str, str]]  # event id, (time, item, type)


def row_as_of(
    key: tuple[str, str], retained: Iterable[RetainedEvent], cutoff: pd.Timestamp
) -> dict[str, object] | None:
    """The user's `stream_feature_rows` row from their retained events stamped at or
    before `cutoff`; None when there are none."""
    events = [
        (event_id, *key, item, event_type, stamp)
        for event_id, (stamp, item, event_type) in retained
        if stamp <= cutoff
    ]
    if not events:
        return None
    (row,) = stream_feature_rows(pd.DataFrame(events, columns=EVENT_COLUMNS)).to_dict("records")
    return row


def features_of_row(row: dict[str, object], cutoff: pd.Timestamp) -> dict[str, object]:
    """A row's FEATURE_COLUMNS for a request at `cutoff`: nulls once the row is more than
    WINDOW old."""
    if row["event_timestamp"] < cutoff - WINDOW:
        return {column: None for column in FEATURE_COLUMNS}
    return {column: row[column] for column in FEATURE_COLUMNS}


def merge_requeued(requeued: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows given back, one per user, the newest given back last."""
    if requeued is not None:
        rows = pd.concat([requeued, rows], ignore_index=True)
    return rows.drop_duplicates(KEY_COLUMNS, keep="last")


def with_requeued(fresh: pd.DataFrame, requeued: pd.DataFrame | None) -> pd.DataFrame:
    """Drained rows plus the rows given back that no fresh row replaces, sorted by key."""
    if requeued is None:
        return fresh
    older = requeued.merge(fresh[KEY_COLUMNS], on=KEY_COLUMNS, how="left", indicator=True)
    older = older[older.pop("_merge") == "left_only"]
    return (
        pd.concat([older, fresh], ignore_index=True)
        .sort_values(KEY_COLUMNS, ignore_index=True)
        .astype({"event_timestamp": TIMESTAMP_DTYPE})
    )


def as_utc(value: object) -> pd.Timestamp:
    """A timestamp in UTC; a naive one is taken to be UTC already (as the function does)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def recent_engagement_events(
    partitions: Iterable[Path], now: datetime, window: timedelta = WINDOW
) -> pd.DataFrame:
    """Engagement events stamped in (now - window, now] from the raw-log partition
    directories `partitions`: what a restarted service replays into its StreamState."""
    frames = [
        pd.read_parquet(
            path, columns=EVENT_COLUMNS, filters=[("event_type", "in", list(ENGAGEMENT_TYPES))]
        )
        for partition in partitions
        for path in parquet_files(partition)
    ]
    if not frames:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    # A row missing a column of the contract is quarantined by validation: skip it here too.
    events = pd.concat(frames, ignore_index=True).dropna()
    stamps = pd.to_datetime(events["event_timestamp"], utc=True)
    return events[(stamps > now - window) & (stamps <= now)].reset_index(drop=True)
