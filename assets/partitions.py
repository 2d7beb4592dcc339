"""Partitions: events by (UTC day, tenant); catalogs by tenant.

Tenants are a dynamic dimension, added by `tenant_discovery_sensor` (or the demo)
when a `tenant=<id>` directory appears in the raw log, so a new tenant needs no
code change and no reload.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

TENANTS = dg.DynamicPartitionsDefinition(name="tenants")


def event_partitions(start: date) -> dg.MultiPartitionsDefinition:
    """Daily partitions from `start` (today's included, for live logs) times tenants."""
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=1),
            "tenant": TENANTS,
        }
    )


def split_event_key(key: str) -> tuple[str, date]:
    """'1997-09-20|ml100k' -> ('ml100k', date(1997, 9, 20))."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["tenant"], date.fromisoformat(dims["date"])
    # Multi-partition keys join dimension values in dimension-name order: date, tenant.
    day_text, tenant = key.split("|")
    return tenant, date.fromisoformat(day_text)


def event_key(tenant: str, day: date) -> str:
    return str(dg.MultiPartitionKey({"date": day.isoformat(), "tenant": tenant}))
