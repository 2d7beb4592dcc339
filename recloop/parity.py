"""Online/offline parity: the online value must equal the latest offline value.

Pure comparison logic; reading the stores is the caller's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from recloop.nulls import is_missing


@dataclass(frozen=True)
class ParityReport:
    checked: int
    mismatches: int
    missing_online: int
    examples: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.missing_online == 0

    @property
    def mismatch_rate(self) -> float:
        return (self.mismatches + self.missing_online) / self.checked if self.checked else 0.0


def latest_offline_rows(parquet: Path, join_key: str, as_of: datetime) -> pd.DataFrame:
    """The newest row per entity stamped at or before `as_of`: what materialization wrote."""
    query = f"""
        select * from read_parquet($path)
        where event_timestamp <= $as_of
        qualify row_number() over (partition by "{join_key}" order by event_timestamp desc) = 1
    """
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        return conn.execute(query, {"path": str(parquet), "as_of": as_of}).df()


def values_equal(left: object, right: object, rel_tol: float = 1e-9) -> bool:
    """Equality that treats NaN/None alike, floats with a tolerance and sequences elementwise."""
    if is_missing(left) or is_missing(right):
        return is_missing(left) and is_missing(right)
    if isinstance(left, (list, tuple, np.ndarray)) or isinstance(right, (list, tuple, np.ndarray)):
        left_seq, right_seq = list(left), list(right)
        return len(left_seq) == len(right_seq) and all(
            values_equal(a, b, rel_tol) for a, b in zip(left_seq, right_seq, strict=True)
        )
    if isinstance(left, (float, np.floating)) or isinstance(right, (float, np.floating)):
        return math.isclose(float(left), float(right), rel_tol=rel_tol, abs_tol=1e-12)
    return left == right


def compare_parity(
    offline: pd.DataFrame,
    online: pd.DataFrame,
    join_key: str,
    features: Sequence[str],
    max_examples: int = 5,
) -> ParityReport:
    """Compare feature values per entity; an entity absent online counts as missing."""
    online_by_key = online.set_index(join_key)
    mismatches = missing = 0
    examples: list[dict] = []
    for row in offline.itertuples(index=False):
        key = getattr(row, join_key)
        if key not in online_by_key.index:
            missing += 1
            continue
        online_row = online_by_key.loc[key]
        if all(is_missing(online_row[name]) for name in features):
            missing += 1
            if len(examples) < max_examples:
                examples.append({join_key: key, "problem": "no online value"})
            continue
        differing = [
            name for name in features if not values_equal(getattr(row, name), online_row[name])
        ]
        if differing:
            mismatches += 1
            if len(examples) < max_examples:
                examples.append(
                    {
                        join_key: key,
                        "features": differing,
                        "offline": [_plain(getattr(row, n)) for n in differing],
                        "online": [_plain(online_row[n]) for n in differing],
                    }
                )
    return ParityReport(
        checked=len(offline), mismatches=mismatches, missing_online=missing, examples=examples
    )


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
