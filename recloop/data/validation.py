"""Split raw rows into valid and quarantined ones; every row lands in exactly one.

`read_raw_files` fails loudly on files that cannot be read at all (corrupt
Parquet, missing required columns), because those are not row problems: the
whole partition stops and earlier partitions stay as they were.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow_lib
import pyarrow.parquet as pq

from recloop.data.nulls import is_missing
from recloop.data.schemas import EventSchema, all_columns, required_columns

SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
REASON = "reason"
# Events stamped this far past the validation clock are treated as clock skew, not the future.
FUTURE_TOLERANCE = timedelta(minutes=5)


class RawFileError(ValueError):
    """A raw file cannot be used at all (unreadable, or missing required columns)."""


class ContractError(RuntimeError):
    """Validation produced a result that breaks its own contract (a bug, never bad data)."""


@dataclass(frozen=True)
class ValidationResult:
    """Valid rows typed by the schema; quarantined rows as text with the reasons they failed."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    read_count: int

    @property
    def valid_count(self) -> int:
        return len(self.valid)

    @property
    def quarantined_count(self) -> int:
        return len(self.quarantined)

    @property
    def conserved(self) -> bool:
        return self.valid_count + self.quarantined_count == self.read_count

    def reason_counts(self) -> dict[str, int]:
        """How many rows each check rejected (a row may fail several)."""
        counts: Counter[str] = Counter()
        for reasons in self.quarantined.get(REASON, pd.Series(dtype=str)):
            counts.update(reasons.split("; "))
        return dict(sorted(counts.items()))


def read_raw_files(files: list[Path], model: type[pa.DataFrameModel]) -> pd.DataFrame:
    """Concatenate raw Parquet files, tagging each row with its file and row number."""
    required = required_columns(model)
    frames = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (pyarrow_lib.ArrowInvalid, OSError) as exc:
            raise RawFileError(f"{path}: not a readable Parquet file ({exc})") from exc
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise RawFileError(
                f"{path}: missing required column(s) {missing}; found {table.column_names}"
            )
        frame = table.to_pandas()
        frame[SOURCE_FILE] = path.name
        frame[SOURCE_ROW] = range(len(frame))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*all_columns(model), SOURCE_FILE, SOURCE_ROW])
    return pd.concat(frames, ignore_index=True)


def _with_optional_columns(frame: pd.DataFrame, model: type[pa.DataFrameModel]) -> pd.DataFrame:
    frame = frame.copy()
    for column in all_columns(model):
        if column not in frame.columns:
            # None (not pd.NA) so that float and string coercion keep it a null.
            frame[column] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame


def _schema_failures(frame: pd.DataFrame, model: type[pa.DataFrameModel]) -> dict[int, set[str]]:
    reasons: dict[int, set[str]] = defaultdict(set)
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        unplaced = cases[cases["index"].isna()]
        if not unplaced.empty:
            raise RawFileError(
                "schema errors that name no row: "
                + "; ".join(f"{r.column}: {r.check}" for r in unplaced.itertuples())
            ) from exc
        failed_coercion = {
            (int(case.index), case.column)
            for case in cases.itertuples()
            if str(case.check).startswith("coerce_dtype")
        }
        for case in cases.itertuples():
            index = int(case.index)
            if case.schema_context != "Column":
                reasons[index].add(str(case.check))
            elif not (
                str(case.check).startswith("dtype(") and (index, case.column) in failed_coercion
            ):
                # A value that could not be cast also fails the dtype check: say it once.
                reasons[index].add(f"{case.column}: {case.check}")
    return reasons


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Quarantine keeps rows as text so that no failing value is lost to a cast."""
    text = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        series = frame[column]
        text[column] = series.map(lambda v: None if is_missing(v) else str(v)).astype("string")
    return text


def validate_frame(
    raw: pd.DataFrame,
    model: type[pa.DataFrameModel],
    row_checks: Mapping[str, pd.Series] | None = None,
) -> ValidationResult:
    """Validate `raw` against `model` plus extra boolean row checks (True = row passes)."""
    frame = _with_optional_columns(raw, model).reset_index(drop=True)
    reasons = _schema_failures(
        frame.drop(columns=[SOURCE_FILE, SOURCE_ROW], errors="ignore"), model
    )
    for name, passed in (row_checks or {}).items():
        for index in frame.index[~passed.reset_index(drop=True).fillna(True).astype(bool)]:
            reasons[int(index)].add(name)
    bad = sorted(reasons)
    kept = frame.drop(index=bad).drop(columns=[SOURCE_FILE, SOURCE_ROW], errors="ignore")
    try:
        valid = model.validate(kept).reset_index(drop=True)[all_columns(model)]
    except pa.errors.SchemaError as exc:
        raise ContractError(f"rows that passed row checks failed re-validation: {exc}") from exc
    quarantined = _as_text(frame.loc[bad])
    quarantined[REASON] = ["; ".join(sorted(reasons[i])) for i in bad]
    result = ValidationResult(
        valid=valid, quarantined=quarantined.reset_index(drop=True), read_count=len(frame)
    )
    if not result.conserved:
        raise ContractError(
            f"row counts do not conserve: {result.valid_count} valid + "
            f"{result.quarantined_count} quarantined != {result.read_count} read"
        )
    return result


def day_bounds(day: date) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(datetime.combine(day, time.min, tzinfo=UTC))
    return start, start + pd.Timedelta(days=1)


def validate_events(
    raw: pd.DataFrame, *, tenant: str, day: date, now: datetime
) -> ValidationResult:
    """Validate one (tenant, day) partition of raw events.

    Beyond the schema, a row must belong to the partition it was filed under and
    must not be stamped in the future (`now` is passed in so tests can fix the clock).
    """
    frame = _with_optional_columns(raw, EventSchema)
    stamps = pd.to_datetime(frame["event_timestamp"], errors="coerce", utc=True, format="mixed")
    start, end = day_bounds(day)
    latest = pd.Timestamp(now).tz_convert("UTC") + FUTURE_TOLERANCE
    checks = {
        f"tenant_id matches partition tenant={tenant}": frame["tenant_id"].isna()
        | (frame["tenant_id"].astype("string") == tenant),
        f"event_timestamp within partition date={day.isoformat()}": stamps.isna()
        | ((stamps >= start) & (stamps < end)),
        "event_timestamp not in the future": stamps.isna() | (stamps <= latest),
    }
    return validate_frame(frame, EventSchema, checks)


def snapshot_date(path: Path) -> date:
    """Catalog snapshots are named `<YYYY-MM-DD>.parquet`: the day they describe."""
    try:
        return date.fromisoformat(path.stem)
    except ValueError as exc:
        raise RawFileError(f"{path}: catalog snapshot must be named YYYY-MM-DD.parquet") from exc


def validate_catalog(
    files: list[Path], model: type[pa.DataFrameModel], *, tenant: str
) -> ValidationResult:
    """Validate every snapshot file of one catalog; valid rows gain `snapshot_date`."""
    valid_parts, quarantined_parts, read = [], [], 0
    for path in files:
        day = snapshot_date(path)
        raw = _with_optional_columns(read_raw_files([path], model), model)
        result = validate_frame(
            raw,
            model,
            {
                f"tenant_id matches partition tenant={tenant}": raw["tenant_id"].isna()
                | (raw["tenant_id"].astype("string") == tenant)
            },
        )
        valid_parts.append(result.valid.assign(snapshot_date=pd.Timestamp(day)))
        quarantined_parts.append(result.quarantined)
        read += result.read_count
    columns = [*all_columns(model), "snapshot_date"]
    valid = (
        pd.concat(valid_parts, ignore_index=True) if valid_parts else pd.DataFrame(columns=columns)
    )
    quarantined = (
        pd.concat(quarantined_parts, ignore_index=True) if quarantined_parts else pd.DataFrame()
    )
    return ValidationResult(valid=valid, quarantined=quarantined, read_count=read)
