"""What the service showed and what was clicked, written back into the raw event log.

Rows follow the raw event contract (DESIGN.md §3), so the same validation, dbt
models and Feast views read them as any other event. A buffer collects rows and
writes one atomic, fsync'd Parquet batch per (tenant, day) when it fills or when
flushed; a batch file is either complete or absent.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from recloop.layout import DataLayout, write_table_atomic

# The raw event contract (recloop.schemas.EventSchema) as an Arrow schema.
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
    """A response the service gave: kept so feedback can be tied back to it."""

    request_id: str
    tenant_id: str
    user_id: str
    item_ids: tuple[str, ...]
    model_version: str
    variant: str


def impression_rows(served: ServedList, at: datetime) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{served.request_id}:{position}",
            "tenant_id": served.tenant_id,
            "user_id": served.user_id,
            "item_id": item_id,
            "event_type": "impression",
            "value": None,
            "event_timestamp": at,
            "request_id": served.request_id,
            "model_version": served.model_version,
            "variant": served.variant,
            "position": position,
            "propensity": None,
        }
        for position, item_id in enumerate(served.item_ids)
    ]


def feedback_row(
    served: ServedList, item_id: str, event_type: str, value: float | None, at: datetime
) -> dict[str, object]:
    return {
        "event_id": uuid.uuid4().hex,
        "tenant_id": served.tenant_id,
        "user_id": served.user_id,
        "item_id": item_id,
        "event_type": event_type,
        "value": value,
        "event_timestamp": at,
        "request_id": served.request_id,
        "model_version": served.model_version,
        "variant": served.variant,
        "position": served.item_ids.index(item_id),
        "propensity": None,
    }


class EventBuffer:
    """Thread-safe buffer of raw event rows, flushed to the raw log in atomic batches
    by a writer thread (`flush_when_due`), off the request path."""

    def __init__(self, layout: DataLayout, max_rows: int = 5_000, source: str = "serve"):
        self.layout = layout
        self.max_rows = max_rows
        self.source = source
        self._rows: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self._due = threading.Event()
        self.written = 0

    def add(self, rows: Sequence[dict[str, object]]) -> None:
        """Buffer rows; never writes, so a request path can call it. A full buffer only
        wakes `flush_when_due`."""
        with self._lock:
            self._rows.extend(rows)
            if len(self._rows) >= self.max_rows:
                self._due.set()

    def flush_when_due(self, interval_s: float) -> list[Path]:
        """Wait until the buffer is full or `interval_s` has passed, then flush (a writer
        thread's loop body)."""
        self._due.wait(interval_s)
        self._due.clear()
        return self.flush()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> list[Path]:
        """Write buffered rows, one file per (tenant, day); returns the files written."""
        with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return []
            groups: dict[tuple[str, object], list[dict[str, object]]] = {}
            for row in rows:
                key = (str(row["tenant_id"]), row["event_timestamp"].date())
                groups.setdefault(key, []).append(row)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            written = []
            for (tenant, day), part in sorted(groups.items()):
                table = pa.Table.from_pylist(part, schema=EVENT_SCHEMA)
                name = f"{self.source}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
                path = self.layout.raw_events_partition(tenant, day) / name
                written.append(write_table_atomic(table, path))
            self.written += len(rows)
            return written


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
    if event_type == "rating" and value is None:
        return 422, "a rating needs a value"
    return None


class ServedLists:
    """The most recent responses by request id (bounded), to validate feedback."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._lists: OrderedDict[str, ServedList] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, served: ServedList) -> None:
        with self._lock:
            self._lists[served.request_id] = served
            while len(self._lists) > self.capacity:
                self._lists.popitem(last=False)

    def get(self, request_id: str) -> ServedList | None:
        with self._lock:
            return self._lists.get(request_id)
