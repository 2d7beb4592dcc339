"""Feast feature columns -> the dense vectors the two-tower model reads.

The one implementation of this transformation: training applies it to the
point-in-time frame from `get_historical_features`, serving to the dict from
`get_online_features` (both with `full_feature_names=True`). What it learned from
the training data (the genre vocabulary, the vector widths) is a `FeatureSpec`
stored with the model, so serving reproduces training exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from recloop.data.nulls import is_missing
from recloop.features.stream_features import FEATURE_COLUMNS, LAST_ITEMS

USER_VIEW = "user_features"
ITEM_VIEW = "item_features"
# Pushed by the service as feedback arrives (recloop.features.stream_features); the mart holds its history.
STREAM_VIEW = "user_stream"
STREAM_COLUMNS = tuple(FEATURE_COLUMNS)
# Must match `activity_windows()` in dbt_project/macros/activity_features.sql.
ACTIVITY_WINDOWS_DAYS = (7, 30, 90)
ACTIVITY_MEASURES = ("rating", "click", "impression")
# Recency saturates after a year; log scale keeps "yesterday" and "last week" apart.
RECENCY_SCALE = float(np.log1p(365.0))


def activity_columns() -> list[str]:
    """Windowed counts, running total, mean rating and recency: the activity_features macro."""
    counts = [
        f"{measure}_count_{days}d"
        for days in ACTIVITY_WINDOWS_DAYS
        for measure in ACTIVITY_MEASURES
    ]
    return [*counts, "rating_count_total", "mean_rating", "days_since_last_event"]


USER_COLUMNS = (*activity_columns(), "genre_affinity", "top_genre")
ITEM_COLUMNS = (*activity_columns(), "release_year", "years_since_release", "genres")


def feature_refs(view: str, columns: Sequence[str]) -> list[str]:
    """Feast references ("view:feature") for the columns the model reads."""
    return [f"{view}:{column}" for column in columns]


# Columns by Feast's full feature name: a DataFrame (training) or the dict of lists
# that `get_online_features(...).to_dict()` returns (serving, no DataFrame built).
FeatureColumns = pd.DataFrame | Mapping[str, Sequence[object]]


USER_TOWER_NAMES = (
    *(f"{USER_VIEW}__{column}" for column in USER_COLUMNS),
    *(f"{STREAM_VIEW}__{column}" for column in STREAM_COLUMNS),
)


def _column(frame: FeatureColumns, view: str, column: str) -> Sequence[object]:
    return frame[f"{view}__{column}"]


def empty_user_row() -> dict[str, list[None]]:
    """One user with no row in any user view: what Feast answers for an unknown user."""
    return {name: [None] for name in USER_TOWER_NAMES}


RECENT_ITEMS = f"{STREAM_VIEW}__last_items"


def recent_item_ids(frame: FeatureColumns) -> list[str]:
    """The first row's streaming last items, most recent first; none when the frame has no
    such column (a labels-only evaluation set) or it is null (no engagement in the hour,
    or a stale row). For models that read no other feature."""
    if RECENT_ITEMS not in frame:
        return []
    value = next(iter(frame[RECENT_ITEMS]))
    return [] if is_missing(value) else [str(item) for item in value]


def describes_user(frame: FeatureColumns) -> bool:
    """Whether the first row holds any user feature or recent item, by which the user
    tower can place a user whose history the model does not know."""
    return any(
        not is_missing(next(iter(frame[name]))) for name in USER_TOWER_NAMES if name in frame
    )


def _numbers(values: Sequence[object]) -> np.ndarray:
    """float64 with NaN for missing; the common all-numeric case skips pandas."""
    array = np.asarray(values)
    if array.dtype.kind in "fiub":
        return array.astype(np.float64)
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


def _activity_block(frame: FeatureColumns, view: str) -> np.ndarray:
    """log1p counts, mean rating / 5, log recency, and a 'no feature row' indicator."""
    counts = np.column_stack(
        [_numbers(_column(frame, view, name)) for name in activity_columns()[:-2]]
    )
    counts = np.log1p(np.nan_to_num(counts, nan=0.0))
    mean_rating = np.nan_to_num(_numbers(_column(frame, view, "mean_rating")), nan=0.0) / 5.0
    recency_raw = _numbers(_column(frame, view, "days_since_last_event"))
    missing = np.isnan(recency_raw).astype(np.float64)
    recency = np.log1p(np.clip(np.nan_to_num(recency_raw, nan=365.0), 0, None)) / RECENCY_SCALE
    return np.column_stack([counts, mean_rating, recency, missing])


def _lists(values: Sequence[object], width: int) -> np.ndarray:
    out = np.zeros((len(values), width), dtype=np.float64)
    for row, value in enumerate(values):
        if not is_missing(value) and len(value) == width:
            out[row] = np.asarray(value, dtype=np.float64)
    return out


def _genre_hot(values: Sequence[object], vocabulary: Sequence[str]) -> np.ndarray:
    index = {genre: i for i, genre in enumerate(vocabulary)}
    out = np.zeros((len(values), len(vocabulary)), dtype=np.float64)
    for row, value in enumerate(values):
        if is_missing(value):
            continue
        for genre in str(value).split("|"):
            if genre in index:
                out[row, index[genre]] = 1.0
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """What the transformation learned from training data; saved in the model manifest."""

    genre_vocabulary: tuple[str, ...]
    affinity_width: int
    text_dim: int
    recent_width: int = LAST_ITEMS
    # User-vector columns that never varied in the training set, and their one value. A
    # weight learned on a constant input means nothing for other values: MovieLens has
    # no impressions or clicks, so a model trained on it saw zero counts only, and the
    # counts the service's own traffic adds put served users off the training
    # distribution (in the grounded simulation, such a user tower's top-10 CTR fell from
    # 0.134 to 0.111). Serving holds these columns at their training value.
    frozen_user_columns: tuple[int, ...] = ()
    frozen_user_values: tuple[float, ...] = ()

    @classmethod
    def fit(cls, user_frame: pd.DataFrame, item_frame: pd.DataFrame, text_dim: int) -> FeatureSpec:
        genres = _column(item_frame, ITEM_VIEW, "genres")
        vocabulary = sorted(
            {g for value in genres if not is_missing(value) for g in str(value).split("|") if g}
        )
        widths = {
            len(v) for v in _column(user_frame, USER_VIEW, "genre_affinity") if not is_missing(v)
        }
        if len(widths) > 1:
            raise ValueError(f"genre_affinity lists have different lengths: {sorted(widths)}")
        # Trained without the streaming view (a feature service without it): no recent items.
        recent = LAST_ITEMS if f"{STREAM_VIEW}__last_items" in user_frame else 0
        spec = cls(tuple(vocabulary), widths.pop() if widths else 0, text_dim, recent)
        vectors = spec.user_vectors(user_frame)
        if len(vectors) == 0:
            return spec
        constant = np.flatnonzero(np.all(vectors == vectors[0], axis=0))
        return replace(
            spec,
            frozen_user_columns=tuple(int(c) for c in constant),
            frozen_user_values=tuple(float(vectors[0, c]) for c in constant),
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> FeatureSpec:
        return cls(
            tuple(raw["genre_vocabulary"]),
            int(raw["affinity_width"]),
            int(raw["text_dim"]),
            int(raw["recent_width"]),
            # Specs saved before columns were frozen hold none.
            tuple(int(c) for c in raw.get("frozen_user_columns", ())),
            tuple(float(v) for v in raw.get("frozen_user_values", ())),
        )

    def user_vectors(self, frame: FeatureColumns) -> np.ndarray:
        """(rows, f_u) float32 from `user_features__*` columns; missing rows become zeros + flag."""
        affinity = _lists(_column(frame, USER_VIEW, "genre_affinity"), self.affinity_width)
        vectors = np.hstack([_activity_block(frame, USER_VIEW), affinity]).astype(np.float32)
        vectors[:, list(self.frozen_user_columns)] = np.asarray(
            self.frozen_user_values, dtype=np.float32
        )
        return vectors

    def recent_item_indices(
        self, frame: FeatureColumns, item_index: Mapping[str, int]
    ) -> np.ndarray:
        """(rows, recent_width) int64: `user_stream__last_items` mapped through `item_index`,
        most recent first, -1 pads. Items the model does not know are left out; a null
        (no engagement in the hour, or a stale row) is a row of pads. A spec without
        recent items (recent_width 0) reads nothing."""
        if self.recent_width == 0:
            return np.full(
                (len(_column(frame, USER_VIEW, "genre_affinity")), 0), -1, dtype=np.int64
            )
        values = _column(frame, STREAM_VIEW, "last_items")
        out = np.full((len(values), self.recent_width), -1, dtype=np.int64)
        for row, value in enumerate(values):
            if is_missing(value):
                continue
            known = [item_index[str(i)] for i in value if str(i) in item_index]
            known = known[: self.recent_width]
            out[row, : len(known)] = known
        return out

    def item_vectors(self, frame: FeatureColumns, text_embeddings: np.ndarray) -> np.ndarray:
        """(rows, f_i) float32 from `item_features__*` columns and one text embedding per row."""
        rows = len(_column(frame, ITEM_VIEW, "genres"))
        if text_embeddings.shape != (rows, self.text_dim):
            raise ValueError(
                f"expected text embeddings of shape {(rows, self.text_dim)}, got {text_embeddings.shape}"
            )
        age = np.nan_to_num(_numbers(_column(frame, ITEM_VIEW, "years_since_release")), nan=0.0)
        genres = _genre_hot(_column(frame, ITEM_VIEW, "genres"), self.genre_vocabulary)
        return np.hstack(
            [_activity_block(frame, ITEM_VIEW), age[:, None] / 10.0, genres, text_embeddings]
        ).astype(np.float32)
