"""Validate one raw partition and write its valid and quarantined rows.

Outputs are written atomically, quarantine first, then valid rows, then a small
JSON report; a partition that fails leaves every earlier output untouched.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandera.pandas as pa
import pyarrow.parquet as pq

from recloop.data.layout import DataLayout, parquet_files, write_parquet_atomic
from recloop.data.schemas import EventSchema, ItemCatalogSchema, UserCatalogSchema
from recloop.data.validation import (
    ValidationResult,
    read_raw_files,
    validate_catalog,
    validate_events,
)

VALID_FILE = "part.parquet"
QUARANTINE_FILE = "part.parquet"
REPORT_FILE = "_report.json"
CATALOG_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "users": UserCatalogSchema,
    "items": ItemCatalogSchema,
}


@dataclass(frozen=True)
class PartitionReport:
    """What validation read and wrote for one partition."""

    tenant: str
    partition: str
    files: list[str]
    read: int
    valid: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _write_outputs(result: ValidationResult, valid_dir: Path, quarantine_dir: Path) -> None:
    quarantine_path = quarantine_dir / QUARANTINE_FILE
    if result.quarantined_count:
        write_parquet_atomic(result.quarantined, quarantine_path)
    else:
        quarantine_path.unlink(missing_ok=True)
    write_parquet_atomic(result.valid, valid_dir / VALID_FILE)


def _report(
    tenant: str, partition: str, files: list[Path], result: ValidationResult, valid_dir: Path
) -> PartitionReport:
    """Summarise a validation and store the summary beside the valid rows."""
    report = PartitionReport(
        tenant=tenant,
        partition=partition,
        files=[f.name for f in files],
        read=result.read_count,
        valid=result.valid_count,
        quarantined=result.quarantined_count,
        reasons=result.reason_counts(),
    )
    tmp = valid_dir / f".{REPORT_FILE}.tmp"
    tmp.write_text(report.to_json())
    tmp.replace(valid_dir / REPORT_FILE)
    return report


def validate_event_partition(
    layout: DataLayout, tenant: str, day: date, now: datetime
) -> PartitionReport:
    """Validate every raw file of (tenant, day); raises RawFileError on an unusable file."""
    files = parquet_files(layout.raw_events_partition(tenant, day))
    raw = read_raw_files(files, EventSchema)
    result = validate_events(raw, tenant=tenant, day=day, now=now)
    valid_dir = layout.validated_events_partition(tenant, day)
    _write_outputs(result, valid_dir, layout.quarantined_events_partition(tenant, day))
    return _report(tenant, day.isoformat(), files, result, valid_dir)


def validate_catalog_partition(layout: DataLayout, catalog: str, tenant: str) -> PartitionReport:
    """Validate every snapshot of `catalog` ('users' or 'items') for `tenant`."""
    files = parquet_files(layout.raw_catalog(catalog, tenant))
    result = validate_catalog(files, CATALOG_MODELS[catalog], tenant=tenant)
    valid_dir = layout.validated_catalog(catalog, tenant)
    _write_outputs(result, valid_dir, layout.quarantined_catalog(catalog, tenant))
    return _report(tenant, catalog, files, result, valid_dir)


def parquet_rows(paths: list[Path]) -> int:
    """Row count from Parquet footers, without reading the data."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths if path.exists())


@dataclass(frozen=True)
class RowCounts:
    read: int
    valid: int
    quarantined: int

    @property
    def conserved(self) -> bool:
        return self.read == self.valid + self.quarantined

    def __str__(self) -> str:
        relation = "==" if self.conserved else "!="
        return f"read {self.read} {relation} valid {self.valid} + quarantined {self.quarantined}"


def event_partition_counts(layout: DataLayout, tenant: str, day: date) -> RowCounts:
    """Count rows on disk, independently of the validation run that wrote them.

    `read` counts the raw files the last validation's report names: a live partition
    keeps receiving batches from the service, and those wait for the next run. A listed
    file that is gone counts nothing, so the check then fails.
    """
    raw_dir = layout.raw_events_partition(tenant, day)
    report = layout.validated_events_partition(tenant, day) / REPORT_FILE
    raw_files = (
        [raw_dir / name for name in json.loads(report.read_text())["files"]]
        if report.exists()
        else parquet_files(raw_dir)
    )
    return RowCounts(
        read=parquet_rows(raw_files),
        valid=parquet_rows([layout.validated_events_partition(tenant, day) / VALID_FILE]),
        quarantined=parquet_rows(
            [layout.quarantined_events_partition(tenant, day) / QUARANTINE_FILE]
        ),
    )


def pending_event_rows(layout: DataLayout, tenant: str, day: date) -> int:
    """Raw rows no validation has read yet: files the partition's last report does not
    name (every file, when it was never validated), e.g. the service's newest batches."""
    raw_dir = layout.raw_events_partition(tenant, day)
    report = layout.validated_events_partition(tenant, day) / REPORT_FILE
    seen = set(json.loads(report.read_text())["files"]) if report.exists() else set()
    return parquet_rows([path for path in parquet_files(raw_dir) if path.name not in seen])


def catalog_counts(layout: DataLayout, catalog: str, tenant: str) -> RowCounts:
    return RowCounts(
        read=parquet_rows(parquet_files(layout.raw_catalog(catalog, tenant))),
        valid=parquet_rows([layout.validated_catalog(catalog, tenant) / VALID_FILE]),
        quarantined=parquet_rows([layout.quarantined_catalog(catalog, tenant) / QUARANTINE_FILE]),
    )


@dataclass
class IngestTotals:
    """Rows read, valid and quarantined, and rows per failing check, over partitions."""

    partitions: int = 0
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, report: PartitionReport) -> None:
        self.partitions += 1
        self.read += report.read
        self.valid += report.valid
        self.quarantined += report.quarantined
        self.reasons.update(report.reasons)

    def summary(self) -> str:
        return (
            f"validated {self.partitions} partition(s): {self.read:,} read, "
            f"{self.valid:,} valid, {self.quarantined:,} quarantined"
        )


def conservation_violations(
    layout: DataLayout, partitions: Mapping[str, tuple[str, date]]
) -> list[str]:
    """The named (tenant, day) event partitions whose files on disk break
    valid + quarantined == read, each with its counts."""
    broken = []
    for name, (tenant, day) in partitions.items():
        counts = event_partition_counts(layout, tenant, day)
        if not counts.conserved:
            broken.append(f"{name}: {counts}")
    return broken
