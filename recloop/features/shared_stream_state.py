"""`StreamState` for several service workers: the retained engagement events in Redis.

Each worker sees only the feedback it was sent; computed from its own events, a user's
fresh features would count a fraction of their clicks, and two workers would push
rows that disagree. Here every worker writes the engagement events it accepts into one
Redis hash per user (`<namespace>:engagements:<tenant>:<user>`, event id -> time,
item, type), and computes rows with the same function as `StreamState` from the
whole hash: every worker's events. A hash expires `WINDOW + max_lateness` after its
user's latest event, as `StreamState` forgets an idle user; a drain drops the events
that have left the window.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import pandas as pd
import redis

from recloop.data.schemas import ENGAGEMENT_TYPES
from recloop.data.shared_state import RequestStateUnavailable, redis_errors
from recloop.features.stream_features import (
    EVENT_COLUMNS,
    LOOKUP_BEFORE,
    WINDOW,
    RetainedEvent,
    as_utc,
    features_of_row,
    merge_requeued,
    row_as_of,
    stream_feature_rows,
    with_requeued,
)


class SharedStreamState:
    """`StreamState`'s contract (add, drain, features_as_of, requeue) over Redis.

    `drain` returns the rows of the users this worker touched since its last drain,
    computed from every worker's events, so whichever worker pushes a user's row last
    pushes one that counts all of them.
    """

    shared = True

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        max_lateness: timedelta = timedelta(minutes=10),
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl = WINDOW + max_lateness
        self._touched: set[tuple[str, str]] = set()
        self._requeued: pd.DataFrame | None = None
        self._lock = threading.Lock()

    def _key(self, user: tuple[str, str]) -> str:
        return f"{self.namespace}:engagements:{user[0]}:{user[1]}"

    def add(self, events: Iterable[Mapping[str, object]]) -> None:
        """Write the engagement events of raw event rows to their users' hashes; an event
        id seen before for the same user counts once."""
        pipeline = self.client.pipeline(transaction=False)
        touched = set()
        for event in events:
            if event["event_type"] not in ENGAGEMENT_TYPES:
                continue
            user = (str(event["tenant_id"]), str(event["user_id"]))
            stamp = as_utc(event["event_timestamp"]).isoformat()
            value = json.dumps([stamp, str(event["item_id"]), event["event_type"]])
            pipeline.hset(self._key(user), str(event["event_id"]), value)
            pipeline.expire(self._key(user), self.ttl)
            touched.add(user)
        if touched:
            with redis_errors("counting an engagement"):
                pipeline.execute()
            with self._lock:
                self._touched |= touched

    def add_frame(self, events: pd.DataFrame) -> None:
        """`add` for a frame of raw events (a replay of the log)."""
        self.add(events[EVENT_COLUMNS].to_dict("records"))

    def _retained(self, users: list[tuple[str, str]]) -> list[list[RetainedEvent]]:
        pipeline = self.client.pipeline(transaction=False)
        for user in users:
            pipeline.hgetall(self._key(user))
        with redis_errors("reading engagements"):
            results = pipeline.execute()
        found = []
        for stored in results:
            events = []
            for event_id, value in stored.items():
                stamp, item, event_type = json.loads(value)
                events.append((event_id.decode(), (pd.Timestamp(stamp), item, event_type)))
            found.append(events)
        return found

    def drain(self) -> pd.DataFrame:
        """Rows for the users this worker touched since the last drain (and rows given
        back by `requeue` that no fresher row replaces); drops the events that have left
        their user's window."""
        with self._lock:
            touched, self._touched = sorted(self._touched), set()
            requeued, self._requeued = self._requeued, None
        try:
            rows = self._drop_old_and_read(touched)
        except RequestStateUnavailable:
            with self._lock:  # the next drain tries these users again
                self._touched.update(touched)
                if requeued is not None:
                    newer = self._requeued
                    self._requeued = requeued if newer is None else merge_requeued(requeued, newer)
            raise
        return with_requeued(
            stream_feature_rows(pd.DataFrame(rows, columns=EVENT_COLUMNS)), requeued
        )

    def _drop_old_and_read(self, users: list[tuple[str, str]]) -> list[tuple]:
        """Every retained event of `users` as EVENT_COLUMNS tuples; deletes those that
        have left their user's window."""
        rows = []
        expired = self.client.pipeline(transaction=False)
        for user, retained in zip(users, self._retained(users), strict=True):
            if not retained:
                continue
            latest = max(stamp for _, (stamp, _, _) in retained)
            rows += [(event_id, *user, item, kind, at) for event_id, (at, item, kind) in retained]
            old = [event_id for event_id, (at, _, _) in retained if at <= latest - WINDOW]
            if old:
                expired.hdel(self._key(user), *old)
        with redis_errors("dropping old engagements"):
            expired.execute()
        return rows

    def features_as_of(
        self, tenant_id: str, user_id: str, at: datetime
    ) -> dict[str, object] | None:
        """`StreamState.features_as_of` from every worker's events of the user."""
        user = (str(tenant_id), str(user_id))
        cutoff = as_utc(at) - LOOKUP_BEFORE
        (retained,) = self._retained([user])
        row = row_as_of(user, retained, cutoff)
        return None if row is None else features_of_row(row, cutoff)

    def requeue(self, rows: pd.DataFrame) -> None:
        """Give back drained rows that could not be delivered: the next drain returns them
        unless a fresher row for the same user replaces them."""
        with self._lock:
            self._requeued = merge_requeued(self._requeued, rows)

    def users(self) -> int:
        """Users touched by this worker and not yet drained."""
        with self._lock:
            return len(self._touched)
