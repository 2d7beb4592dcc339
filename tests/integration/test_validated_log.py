"""Reads of the validated event log with real DuckDB over parquet (recloop.data.validated_log)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from recloop.data.ingest import VALID_FILE
from recloop.data.layout import DataLayout, write_parquet_atomic
from recloop.data.validated_log import (
    engagements_of,
    events_after,
    logged_events,
    newest_validated_event,
    served_events,
)

DAY = date(2024, 3, 1)


def event(n: int, tenant: str, kind: str, hour: int, **extra: object) -> dict[str, object]:
    return {
        "event_id": f"e{n}",
        "tenant_id": tenant,
        "user_id": "u1",
        "item_id": f"i{n}",
        "event_type": kind,
        "value": 1.0,
        "event_timestamp": pd.Timestamp(datetime(2024, 3, 1, hour, tzinfo=UTC)),
        "request_id": extra.get("request_id"),
        "model_version": extra.get("model_version"),
        "variant": extra.get("variant"),
        "position": extra.get("position"),
        "propensity": extra.get("propensity"),
    }


def write(layout: DataLayout, tenant: str, rows: list[dict[str, object]]) -> None:
    frame = pd.DataFrame(rows).astype({"position": "Int64", "propensity": "float64"})
    write_parquet_atomic(frame, layout.validated_events_partition(tenant, DAY) / VALID_FILE)


def test_an_empty_log_reads_as_nothing(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    assert newest_validated_event(layout, "shop") is None
    assert events_after(layout, "shop", pd.Timestamp("2000-01-01", tz="UTC")) == 0
    assert served_events(layout, "shop").empty
    assert logged_events(layout, datetime(2000, 1, 1, tzinfo=UTC)).empty
    assert engagements_of(layout, ["u1"]).empty


def test_reads_filter_by_tenant_time_request_and_variant(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    served = {"request_id": "r1", "model_version": "tt-1", "variant": "ab:a", "position": 0}
    write(
        layout,
        "shop",
        [
            event(1, "shop", "rating", 8),
            event(2, "shop", "impression", 9, propensity=0.5, **served),
            event(3, "shop", "click", 10, **served),
        ],
    )
    write(layout, "other", [event(4, "other", "click", 23)])
    assert newest_validated_event(layout, "shop") == pd.Timestamp("2024-03-01 10:00", tz="UTC")
    assert events_after(layout, "shop", pd.Timestamp("2024-03-01 08:00", tz="UTC")) == 2
    assert served_events(layout, "shop")["event_id"].tolist() == ["e2", "e3"]
    since = datetime(2024, 3, 1, tzinfo=UTC)
    assert sorted(logged_events(layout, since)["event_id"]) == ["e2", "e3"]
    assert logged_events(layout, since, variant_prefix="other:").empty
    engaged = engagements_of(layout, ["u1"])
    assert sorted(engaged["event_id"]) == ["e1", "e3", "e4"]
    assert set(engaged["tenant_id"]) == {"shop", "other"}
