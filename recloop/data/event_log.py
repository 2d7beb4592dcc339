"""What the service showed and what was clicked, written back into the raw event log.

Rows follow the raw event contract (ARCHITECTURE.md, "Data contracts"), so the same validation, dbt
models and Feast views read them as any other event. A buffer collects rows and
writes one atomic, fsync'd Parquet batch per (tenant, day) when it fills or when
flushed; a batch file is either complete or absent. Every buffered row gets a
sequence number and the buffer knows the highest one on disk, so a caller can wait
until its row is durable (group commit: one fsync'd batch answers every waiter).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recloop.data.layout import DataLayout, parquet_files, write_table_atomic
from recloop.data.schemas import RATING_SCALE

# The raw event contract (recloop.data.schemas.EventSchema) as an Arrow schema.
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("model_version", pa.string()),
        ("variant", pa.string()),
        ("position", pa.int64()),
        ("propensity", pa.float64()),
    ]
)
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)


@dataclass(frozen=True)
class ServedList:
    """A response the service gave: kept so feedback can be tied back to it.

    `model_version` and `variant` describe the response; a list merged from several
    models (an experiment's fallback or interleaving) says per position which model
    and which variant supplied each item (`item_versions`, `item_variants`), and a list
    drawn by an exploration policy carries each item's propensity.
    """

    request_id: str
    tenant_id: str
    user_id: str
    item_ids: tuple[str, ...]
    model_version: str
    variant: str
    item_versions: tuple[str, ...] | None = None
    item_variants: tuple[str, ...] | None = None
    propensities: tuple[float | None, ...] | None = None

    def version_at(self, position: int) -> str:
        return self.item_versions[position] if self.item_versions else self.model_version

    def variant_at(self, position: int) -> str:
        return self.item_variants[position] if self.item_variants else self.variant

    def propensity_at(self, position: int) -> float | None:
        return self.propensities[position] if self.propensities else None


def impression_rows(
    served: ServedList, scores: Sequence[float], at: datetime
) -> list[dict[str, object]]:
    """One row per shown item; `value` is the model's score, so the pipeline can watch
    the score distribution (dbt sums `value` for ratings only)."""
    return [
        {
            "event_id": f"{served.request_id}:{position}",
            "tenant_id": served.tenant_id,
            "user_id": served.user_id,
            "item_id": item_id,
            "event_type": "impression",
            "value": float(score),
            "event_timestamp": at,
            "request_id": served.request_id,
            "model_version": served.version_at(position),
            "variant": served.variant_at(position),
            "position": position,
            "propensity": served.propensity_at(position),
        }
        for position, (item_id, score) in enumerate(zip(served.item_ids, scores, strict=True))
    ]


def feedback_row(
    served: ServedList, item_id: str, event_type: str, value: float | None, at: datetime
) -> dict[str, object]:
    """Feedback on a shown item carries that position's model, variant and propensity,
    so a click is credited to what showed the item."""
    position = served.item_ids.index(item_id)
    return {
        "event_id": uuid.uuid4().hex,
        "tenant_id": served.tenant_id,
        "user_id": served.user_id,
        "item_id": item_id,
        "event_type": event_type,
        "value": value,
        "event_timestamp": at,
        "request_id": served.request_id,
        "model_version": served.version_at(position),
        "variant": served.variant_at(position),
        "position": position,
        "propensity": served.propensity_at(position),
    }


@dataclass(frozen=True)
class BufferStats:
    """Row counts since the buffer was created: accepted == written + pending when healthy."""

    accepted: int
    written: int
    durable_seq: int
    pending: int
    failed_flushes: int
    last_error: str | None


class EventBuffer:
    """Thread-safe buffer of raw event rows, flushed to the raw log in atomic batches
    by a writer thread (`flush_when_due`), off the request path.

    Row sequence numbers start at 1 and follow `add` order. A flush that fails leaves
    its unwritten rows in the buffer for the next one, so an accepted row is written
    exactly once or stays pending (and `last_error` says why).
    """

    def __init__(
        self,
        layout: DataLayout,
        max_rows: int = 5_000,
        source: str = "serve",
        on_written: Callable[[int], None] | None = None,
    ):
        self.layout = layout
        self.max_rows = max_rows
        self.source = source
        self.on_written = on_written
        self._rows: list[dict[str, object]] = []
        self._accepted = 0
        self._lock = threading.Lock()  # guards the rows and the accepted count
        self._write_lock = threading.Lock()  # one flush at a time, so files follow sequence
        self._durable = threading.Condition()
        self._durable_seq = 0
        self._due = threading.Event()
        self.written = 0
        self.failed_flushes = 0
        self.last_error: str | None = None

    def add(self, rows: Sequence[dict[str, object]]) -> int:
        """Buffer rows and return the sequence number of the last one; never writes, so a
        request path can call it. A full buffer only wakes `flush_when_due`."""
        with self._lock:
            self._rows.extend(rows)
            self._accepted += len(rows)
            if len(self._rows) >= self.max_rows:
                self._due.set()
            return self._accepted

    def wait_durable(self, seq: int, timeout_s: float) -> bool:
        """Wake the writer and block until row `seq` is on disk (fsync'd and renamed);
        False after `timeout_s`. Needs a thread running `flush_when_due`."""
        self._due.set()
        with self._durable:
            return self._durable.wait_for(lambda: self._durable_seq >= seq, timeout_s)

    def flush_when_due(self, interval_s: float) -> list[Path]:
        """Wait until the buffer is full, a caller waits for durability or `interval_s`
        has passed, then flush (a writer thread's loop body)."""
        self._due.wait(interval_s)
        self._due.clear()
        return self.flush()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def stats(self) -> BufferStats:
        with self._lock:
            accepted, pending = self._accepted, len(self._rows)
        return BufferStats(
            accepted=accepted,
            written=self.written,
            durable_seq=self._durable_seq,
            pending=pending,
            failed_flushes=self.failed_flushes,
            last_error=self.last_error,
        )

    def flush(self) -> list[Path]:
        """Write buffered rows, one file per (tenant, day); returns the files written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                upto = self._accepted
            groups: dict[tuple[str, date], list[dict[str, object]]] = {}
            for row in rows:
                key = (str(row["tenant_id"]), row["event_timestamp"].date())
                groups.setdefault(key, []).append(row)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            ordered = sorted(groups.items())
            written = []
            for done, ((tenant, day), part) in enumerate(ordered):
                name = f"{self.source}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
                path = self.layout.raw_events_partition(tenant, day) / name
                try:
                    written.append(
                        write_table_atomic(pa.Table.from_pylist(part, schema=EVENT_SCHEMA), path)
                    )
                except Exception as exc:
                    self._requeue([row for _, rest in ordered[done:] for row in rest], exc)
                    raise
                self.written += len(part)
                if self.on_written is not None:
                    self.on_written(len(part))
            with self._durable:
                self._durable_seq = upto
                self._durable.notify_all()
            return written

    def _requeue(self, rows: list[dict[str, object]], exc: Exception) -> None:
        """Put unwritten rows back in front of newer ones and record why."""
        with self._lock:
            self._rows[:0] = rows
        self.failed_flushes += 1
        self.last_error = f"{type(exc).__name__}: {exc}"


def feedback_problem(
    served: ServedList | None,
    request_id: str,
    user_id: str,
    item_id: str,
    event_type: str,
    value: float | None,
) -> tuple[int, str] | None:
    """Why feedback cannot be accepted, as (HTTP status, message); None when it can."""
    if served is None:
        return 404, f"unknown request_id {request_id!r}: feedback must answer a /recommend response"
    if served.user_id != user_id:
        return 422, f"request {request_id} was served to another user, not {user_id!r}"
    if item_id not in served.item_ids:
        return 422, f"item {item_id!r} was not in the response to request {request_id}"
    return value_problem(event_type, value)


def value_problem(event_type: str, value: float | None) -> tuple[int, str] | None:
    """Why `value` does not fit `event_type`, as (422, message); None when it does."""
    low, high = RATING_SCALE
    if event_type == "rating" and (value is None or not low <= value <= high):
        return 422, f"a rating needs a value in [{low:g}, {high:g}], got {value}"
    if event_type == "purchase" and value is not None and not 0 <= value < math.inf:
        return 422, f"a purchase's value is an amount >= 0, got {value}"
    if event_type in ("click", "view") and value is not None:
        return 422, f"a {event_type} carries no value, got {value}"
    return None


FeedbackKey = tuple[str, str, str, float | None]  # request_id, item_id, event_type, value


class ServedLists:
    """The most recent responses by request id (bounded), to validate feedback, and the
    feedback each one was given, so that a repeat is acknowledged, not logged twice.
    One process's memory: several workers share `recloop.data.shared_state.RedisServedLists`."""

    shared = False

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._lists: OrderedDict[str, ServedList] = OrderedDict()
        self._feedback: dict[str, dict[FeedbackKey, int]] = {}
        self._lock = threading.Lock()

    def problem(self) -> str | None:
        """Why the lists cannot be read or written: never, in memory."""
        return None

    def remember(self, served: ServedList) -> None:
        with self._lock:
            self._lists[served.request_id] = served
            while len(self._lists) > self.capacity:
                forgotten, _ = self._lists.popitem(last=False)
                self._feedback.pop(forgotten, None)

    def claim_feedback(self, key: FeedbackKey) -> int | None:
        """The event sequence number the same feedback was logged under; None when it was
        not (the caller logs it and calls `record_feedback`)."""
        with self._lock:
            return self._feedback.get(key[0], {}).get(key)

    def record_feedback(self, key: FeedbackKey, seq: int) -> None:
        with self._lock:
            if key[0] in self._lists:
                self._feedback.setdefault(key[0], {}).setdefault(key, seq)

    def get(self, request_id: str) -> ServedList | None:
        with self._lock:
            return self._lists.get(request_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lists)


SERVED_COLUMNS = [
    "event_type",
    "request_id",
    "user_id",
    "item_id",
    "position",
    "model_version",
    "variant",
    "propensity",
]


def logged_served_lists(
    layout: DataLayout, tenant: str, days: Sequence[date], limit: int, source: str = "serve"
) -> list[ServedList]:
    """The newest `limit` responses the service logged as impressions on `days`, oldest
    first: what a restarted service needs to accept feedback on its earlier answers.

    Reads the newest batch files first and only the columns a `ServedList` needs.
    """
    found: list[list[ServedList]] = []
    count = 0
    files = [
        path
        for day in sorted(days)
        for path in parquet_files(layout.raw_events_partition(tenant, day))
        if path.name.startswith(f"{source}-")
    ]
    for path in reversed(files):
        if count >= limit:
            break
        lists = _served_in(pq.read_table(path, columns=SERVED_COLUMNS), tenant)
        found.append(lists)
        count += len(lists)
    ordered = [served for lists in reversed(found) for served in lists]
    return ordered[max(len(ordered) - limit, 0) :]


def _served_in(table: pa.Table, tenant: str) -> list[ServedList]:
    """One ServedList per request id among a batch's impression rows, grouped in Arrow
    (a Python loop over rows is ten times slower)."""
    table = table.filter(pc.equal(table["event_type"], "impression"))
    table = table.sort_by([("request_id", "ascending"), ("position", "ascending")])
    # Without threads, "list" keeps the sorted order: items by position.
    grouped = table.group_by("request_id", use_threads=False).aggregate(
        [
            ("item_id", "list"),
            ("user_id", "first"),
            ("model_version", "list"),
            ("variant", "list"),
            ("propensity", "list"),
        ]
    )
    columns = grouped.to_pydict()
    return [
        ServedList(
            request_id,
            tenant,
            user_id,
            tuple(items),
            versions[0],
            variants[0],
            tuple(versions) if len(set(versions)) > 1 else None,
            tuple(variants) if len(set(variants)) > 1 else None,
            tuple(propensities) if any(p is not None for p in propensities) else None,
        )
        for request_id, items, user_id, versions, variants, propensities in zip(
            columns["request_id"],
            columns["item_id_list"],
            columns["user_id_first"],
            columns["model_version_list"],
            columns["variant_list"],
            columns["propensity_list"],
            strict=True,
        )
    ]
