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

from recloop.data.nulls import is_missing


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


def latest_offline_rows(parquet: Path, keys: Sequence[str], as_of: datetime) -> pd.DataFrame:
    """The newest row per entity (the `keys` columns, e.g. tenant and user) stamped at or
    before `as_of`: what materialization wrote."""
    partition = ", ".join(f'"{key}"' for key in keys)
    query = f"""
        select * from read_parquet($path)
        where event_timestamp <= $as_of
        qualify row_number() over (partition by {partition} order by event_timestamp desc) = 1
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
    keys: Sequence[str],
    features: Sequence[str],
    max_examples: int = 5,
) -> ParityReport:
    """Compare feature values per entity (the `keys` columns); an entity absent online
    counts as missing."""
    online_by_key = online.set_index(list(keys))
    mismatches = missing = 0
    examples: list[dict] = []
    for row in offline.itertuples(index=False):
        key = _entity(row, keys)
        named = dict(zip(keys, key if len(keys) > 1 else (key,), strict=True))
        if key not in online_by_key.index:
            missing += 1
            continue
        online_row = online_by_key.loc[key]
        if all(is_missing(online_row[name]) for name in features):
            missing += 1
            if len(examples) < max_examples:
                examples.append({**named, "problem": "no online value"})
            continue
        differing = [
            name for name in features if not values_equal(getattr(row, name), online_row[name])
        ]
        if differing:
            mismatches += 1
            if len(examples) < max_examples:
                examples.append(
                    {
                        **named,
                        "features": differing,
                        "offline": [_plain(getattr(row, n)) for n in differing],
                        "online": [_plain(online_row[n]) for n in differing],
                    }
                )
    return ParityReport(
        checked=len(offline), mismatches=mismatches, missing_online=missing, examples=examples
    )


def _entity(row: tuple, keys: Sequence[str]) -> object:
    """A row's entity as pandas indexes it: the value of one key, a tuple of several."""
    values = tuple(_plain(getattr(row, key)) for key in keys)
    return values if len(values) > 1 else values[0]


@dataclass(frozen=True)
class AsOfParityReport:
    """Batch rows against online rows that carry the time they are as of.

    An online row as of the batch row's time must hold the same values; one older than
    it missed events the batch saw (a mismatch). One newer is the stream ahead of a
    batch that has not yet seen its latest events: neither right nor wrong, so it is
    counted apart, as are entities with no online row at all (the stream never saw
    them, e.g. history loaded in batch).
    """

    checked: int
    mismatches: int
    missing_online: int
    stream_ahead: int
    examples: list[dict] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.checked - self.missing_online - self.stream_ahead

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.compared if self.compared else 0.0


def compare_as_of(
    batch: pd.DataFrame,
    online: pd.DataFrame,
    keys: Sequence[str],
    features: Sequence[str],
    max_examples: int = 5,
) -> AsOfParityReport:
    """Compare per entity; both frames have `event_timestamp` (NaT online: no row).

    Times are compared to the whole second, the online store's resolution: a stream
    ahead of the batch by events within the same second shows as a value mismatch.
    """
    keys = list(keys)
    online = online[online["event_timestamp"].notna()].drop_duplicates(keys)
    joined = batch.merge(
        online[[*keys, "event_timestamp"]].rename(columns={"event_timestamp": "online_as_of"}),
        on=keys,
        how="left",
    )
    batch_as_of = joined["event_timestamp"].dt.floor("s")
    online_as_of = joined["online_as_of"].dt.floor("s")
    missing = online_as_of.isna()
    ahead = online_as_of > batch_as_of
    stale = joined[online_as_of < batch_as_of]
    same_time = online_as_of == batch_as_of
    values = compare_parity(batch[same_time.to_numpy()], online, keys, features, max_examples)
    examples = list(values.examples)
    for row in stale.head(max(0, max_examples - len(examples))).itertuples(index=False):
        examples.append(
            {
                **{key: _plain(getattr(row, key)) for key in keys},
                "problem": "online row older than the batch row",
                "online_as_of": row.online_as_of.isoformat(),
                "batch_as_of": row.event_timestamp.isoformat(),
            }
        )
    return AsOfParityReport(
        checked=len(batch),
        mismatches=values.mismatches + values.missing_online + len(stale),
        missing_online=int(missing.sum()),
        stream_ahead=int(ahead.sum()),
        examples=examples,
    )


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
