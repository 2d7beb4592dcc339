"""The on-disk layout of the data directory (ARCHITECTURE.md, "Data contracts").

Raw events are append-only Parquet files partitioned by tenant and day; every
derived file sits in its own tree so a failed step never touches its inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CATALOGS = ("users", "items")


class LayoutError(ValueError):
    """A path or identifier does not follow the data-directory contract."""


def check_tenant_id(tenant: str) -> str:
    """Tenant ids become directory names and Feast/Dagster keys: keep them plain."""
    if not TENANT_PATTERN.match(tenant):
        raise LayoutError(
            f"tenant id {tenant!r} must match {TENANT_PATTERN.pattern} "
            "(lower-case letters, digits, '-' and '_')"
        )
    return tenant


@dataclass(frozen=True)
class DataLayout:
    """Paths below one data directory."""

    root: Path

    @property
    def raw_events(self) -> Path:
        return self.root / "raw" / "events"

    def raw_events_partition(self, tenant: str, day: date) -> Path:
        return self.raw_events / f"tenant={tenant}" / f"date={day.isoformat()}"

    def raw_catalog(self, catalog: str, tenant: str) -> Path:
        return self.root / "raw" / catalog / f"tenant={tenant}"

    def validated_events_partition(self, tenant: str, day: date) -> Path:
        return self.validated_events_of(tenant) / f"date={day.isoformat()}"

    def quarantined_events_partition(self, tenant: str, day: date) -> Path:
        return self.root / "quarantine" / "events" / f"tenant={tenant}" / f"date={day.isoformat()}"

    def validated_catalog(self, catalog: str, tenant: str) -> Path:
        return self.root / "validated" / catalog / f"tenant={tenant}"

    def quarantined_catalog(self, catalog: str, tenant: str) -> Path:
        return self.root / "quarantine" / catalog / f"tenant={tenant}"

    @property
    def marts(self) -> Path:
        return self.root / "marts"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse" / "recloop.duckdb"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def training(self) -> Path:
        """Point-in-time training inputs, one directory per content hash."""
        return self.root / "training"

    @property
    def registry(self) -> Path:
        """The model registry: candidate directories and the promotion log."""
        return self.root / "registry"

    @property
    def validated_events(self) -> Path:
        return self.root / "validated" / "events"

    def validated_events_of(self, tenant: str) -> Path:
        return self.validated_events / f"tenant={tenant}"

    @property
    def interactions_mart(self) -> Path:
        """The dbt mart of labels: one row per user-item interaction."""
        return self.marts / "user_item_interactions.parquet"

    @property
    def item_text_embeddings_cache(self) -> Path:
        return self.cache / "item_text_embeddings.parquet"

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    def serving_features_reference(self, version: str) -> Path:
        """Online features of the users a champion served first, read once (drift reference)."""
        return self.monitoring / f"features-{version}.parquet"

    def drift_report_file(self, window_id: str) -> Path:
        return self.monitoring / f"drift-{window_id.replace('@', '-')}.json"

    def drift_episode(self, champion: str) -> Path:
        """When and why drift was first detected for a champion."""
        return self.monitoring / "episodes" / f"{champion}.json"

    def experiment_readout(self, experiment: str) -> Path:
        return self.root / "experiments" / "readouts" / f"{experiment}.json"

    def batch_lists(self, experiment: str, variant: str) -> Path:
        """The lists last pushed for a batch variant (audit, offline reads)."""
        return self.root / "experiments" / "batch_lists" / f"{experiment}__{variant}.parquet"

    def tenants(self) -> list[str]:
        """Tenants that have a raw event directory, sorted; unknown names are skipped loudly."""
        if not self.raw_events.is_dir():
            return []
        found = []
        for child in sorted(self.raw_events.iterdir()):
            if child.is_dir() and child.name.startswith("tenant="):
                found.append(check_tenant_id(child.name.removeprefix("tenant=")))
        return found

    def first_event_day(self) -> date | None:
        """The earliest day with a raw event file, over every tenant (None: no events)."""
        firsts = [days[0] for tenant in self.tenants() if (days := self.event_days(tenant))]
        return min(firsts, default=None)

    def event_days(self, tenant: str) -> list[date]:
        """Days with at least one raw event file for `tenant`, sorted."""
        tenant_dir = self.raw_events / f"tenant={tenant}"
        if not tenant_dir.is_dir():
            return []
        days = []
        for child in tenant_dir.iterdir():
            if child.is_dir() and child.name.startswith("date=") and any(child.glob("*.parquet")):
                try:
                    days.append(date.fromisoformat(child.name.removeprefix("date=")))
                except ValueError as exc:
                    raise LayoutError(f"{child}: directory name is not date=YYYY-MM-DD") from exc
        return sorted(days)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parquet_files(directory: Path) -> list[Path]:
    """Parquet files in `directory`, by name (batches are named to sort in arrival order)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` so readers see either the old file or the whole new one, never a part.

    The temporary file starts with '.', which `parquet_files` and the dbt globs skip.
    """
    with _atomic_target(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    """`write_parquet_atomic` for an Arrow table (no pandas round trip on hot paths)."""
    with _atomic_target(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_json_atomic(data: object, path: Path) -> Path:
    """`write_parquet_atomic` for a JSON document (reports, timelines)."""
    with _atomic_target(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return path
