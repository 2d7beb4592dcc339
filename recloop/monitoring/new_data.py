"""Which raw event partitions hold batches not processed yet (issue #4 groundwork).

A snapshot maps each partition ("<tenant>/<YYYY-MM-DD>") to the sha256 of its
sorted batch file names. Batch files are append-only and written atomically, so a
partition whose digest changed has new data, and (partition, digest) names that
data exactly: a run key built from it is the same however often, or after however
many restarts, the same files are seen. No clocks or mtimes are involved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import date

from recloop.data.ingest import REPORT_FILE
from recloop.data.layout import DataLayout, parquet_files

Snapshot = dict[str, str]


def partition_name(tenant: str, day_iso: str) -> str:
    return f"{tenant}/{day_iso}"


def names_digest(names: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def raw_snapshot(layout: DataLayout, tenants: Iterable[str]) -> Snapshot:
    """Digest of the batch file names of every raw event partition of `tenants`."""
    snapshot: Snapshot = {}
    for tenant in sorted(tenants):
        for day in layout.event_days(tenant):
            files = parquet_files(layout.raw_events_partition(tenant, day))
            snapshot[partition_name(tenant, day.isoformat())] = names_digest(p.name for p in files)
    return snapshot


def validated_digest(layout: DataLayout, partition: str) -> str | None:
    """Digest of the batch names the partition's last validation read (its report), or
    None when it was never validated."""
    tenant, day_iso = partition.split("/")
    report = layout.validated_events_partition(tenant, date.fromisoformat(day_iso)) / REPORT_FILE
    if not report.exists():
        return None
    return names_digest(json.loads(report.read_text())["files"])


def unvalidated(layout: DataLayout, candidates: Mapping[str, str]) -> Snapshot:
    """The candidates whose current batches are not what validation last read: a lost
    cursor then costs a look at each report, never a second validation of the same files."""
    return {
        key: digest for key, digest in candidates.items() if validated_digest(layout, key) != digest
    }


def changed_partitions(previous: Mapping[str, str], current: Mapping[str, str]) -> Snapshot:
    """Partitions that are new or whose batch files changed since `previous`."""
    return {key: digest for key, digest in current.items() if previous.get(key) != digest}


def run_key(partition: str, digest: str) -> str:
    """One run key per (partition, set of batch files)."""
    return f"{partition}@{digest[:16]}"
