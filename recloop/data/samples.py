"""A labelled batch of malformed events: the demo shows quarantine at work with it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pandas as pd

BAD_BATCH_NAME = "zz-demo-malformed.parquet"


def malformed_events(tenant: str, day: date, duplicate_of: str) -> pd.DataFrame:
    """One row per kind of defect; `duplicate_of` is an event_id already in the partition.

    `expected_reason` names the check that must reject the row; it is not part of
    the event contract, so validation drops the column.
    """
    noon = datetime.combine(day, time(12), tzinfo=UTC)
    rows = [
        ("null user_id", {"user_id": None}, "user_id: not_nullable"),
        ("unknown event type", {"event_type": "rage_click"}, "event_type: isin"),
        (
            "event from another day",
            {"event_timestamp": noon - timedelta(days=3)},
            f"event_timestamp within partition date={day.isoformat()}",
        ),
        ("duplicate event_id", {"event_id": duplicate_of}, "event_id is unique"),
        ("non-numeric value", {"value": "five stars"}, "value: coerce_dtype"),
        (
            "wrong tenant",
            {"tenant_id": "someone-else"},
            f"tenant_id matches partition tenant={tenant}",
        ),
        ("negative position", {"position": -3}, "position: greater_than_or_equal_to(0)"),
    ]
    records = []
    for number, (label, override, reason) in enumerate(rows):
        record = {
            "event_id": f"demo-malformed-{number}",
            "tenant_id": tenant,
            "user_id": "1",
            "item_id": "1",
            "event_type": "rating",
            "value": "4.0",
            "event_timestamp": noon,
            "request_id": None,
            "model_version": None,
            "variant": None,
            "position": 0,
            "propensity": None,
            "defect": label,
            "expected_reason": reason,
        }
        record.update(override)
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    frame["value"] = frame["value"].astype("string")
    frame["position"] = frame["position"].astype("Int64")
    frame["propensity"] = frame["propensity"].astype("float64")
    for column in ("request_id", "model_version", "variant", "user_id"):
        frame[column] = frame[column].astype("string")
    return frame
