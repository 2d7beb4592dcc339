"""Point-in-time training examples: labels from the interaction mart, split by time.

The feature join itself is Feast's (`feature_repo.training`); this module decides
which rows are examples and where the time cut-offs fall, and records both so a
model's metadata says exactly what it was trained and tested on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLIT_PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class TemporalCutoffs:
    """Train is before `valid_start`, validation up to `test_start`, test from there on."""

    valid_start: pd.Timestamp
    test_start: pd.Timestamp

    def part_of(self, timestamps: pd.Series) -> pd.Series:
        stamps = pd.to_datetime(timestamps, utc=True)
        part = np.where(
            stamps < self.valid_start, "train", np.where(stamps < self.test_start, "valid", "test")
        )
        return pd.Series(part, index=timestamps.index, name="split")

    def to_metadata(self) -> dict[str, str]:
        return {
            "valid_start": self.valid_start.isoformat(),
            "test_start": self.test_start.isoformat(),
        }


def temporal_cutoffs(
    timestamps: pd.Series | np.ndarray,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    holdout_since: pd.Timestamp | None = None,
) -> TemporalCutoffs:
    """Cut-offs at the time quantiles that leave `valid_fraction` and `test_fraction` of rows.

    With `holdout_since`, the fractions are of the rows stamped at or after it, and
    everything before it trains: after a drift, the post-drift labels are few beside the
    history, and a model must both learn from most of them and be judged on them.
    """
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(
            f"split fractions must be positive and sum below 1, got valid={valid_fraction}, test={test_fraction}"
        )
    series = pd.to_datetime(pd.Series(timestamps), utc=True)
    if holdout_since is not None:
        series = series[series >= pd.Timestamp(holdout_since).tz_convert("UTC")]
    stamps = np.sort(series.to_numpy())
    if len(stamps) < 3:
        since = f" since {holdout_since.isoformat()}" if holdout_since is not None else ""
        raise ValueError(f"a temporal split needs at least 3 examples{since}, got {len(stamps)}")
    n = len(stamps)
    return TemporalCutoffs(
        valid_start=pd.Timestamp(stamps[int(n * (1 - valid_fraction - test_fraction))]).tz_convert(
            "UTC"
        ),
        test_start=pd.Timestamp(stamps[int(n * (1 - test_fraction))]).tz_convert("UTC"),
    )


def label_entities(interactions: pd.DataFrame) -> pd.DataFrame:
    """Positive labels of the interaction mart as a Feast entity frame (µs UTC timestamps).

    Feast's DuckDB offline store cannot cast nanosecond time zones,
    so timestamps are truncated to microseconds here, once.
    """
    positives = interactions.loc[interactions["label"] == 1]
    columns = ["event_id", "tenant_id", "user_id", "item_id", "event_timestamp", "model_version"]
    frame = positives.reindex(columns=columns).copy()
    frame["model_version"] = frame["model_version"].astype("string")
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    return frame.sort_values(["event_timestamp", "event_id"], kind="stable").reset_index(drop=True)


def split_summary(frame: pd.DataFrame, cutoffs: TemporalCutoffs) -> dict[str, object]:
    """Rows, users and items per part, plus the cut-offs: the split's metadata."""
    parts = {}
    for part in SPLIT_PARTS:
        rows = frame.loc[frame["split"] == part]
        parts[part] = {
            "rows": len(rows),
            "users": int(rows["user_id"].nunique()),
            "items": int(rows["item_id"].nunique()),
        }
    return {**cutoffs.to_metadata(), "parts": parts}
