"""Is the served model still right? Drift of a model's online behaviour and its inputs.

The drift sensor and the drift report asset both call `drift_report`, on the
service's own events (impressions carry the model's score in `value`):

- online CTR of the champion: its first `window` impressions after it went live
  (the reference) against its last `window` (recent). Drift when CTR fell by at
  least `ctr_drop` relative *and* a two-proportion z-test gives p < `ctr_p_value`,
  so noise in a small window never fires it;
- the model's score distribution over the same windows (PSI);
- what people click: the genre mix of clicked items (Jensen-Shannon, in bits);
- user feature distributions (PSI/JS/missing share per feature, recloop.monitoring.drift):
  the online features of the users served in the reference window, as read then,
  against those of the users served recently. (Training examples against serving
  is reported beside it as skew, not used as a trigger: see assets/monitoring.py.)

Windows are counted in impressions, not hours, so a report is a function of the
data alone: the same events give the same verdict, and a run key built from the
window names it exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from recloop.monitoring.drift import (
    DriftThresholds,
    FeatureDrift,
    feature_drift,
    jensen_shannon_shares,
    psi,
)

ENGAGEMENT_EVENTS = ("click", "purchase")


@dataclass(frozen=True)
class MonitoringConfig:
    """Window size and thresholds. Defaults suit ~10 impressions per request and a few
    hundred requests per minute; see the README's "Drift" section for how to tune them."""

    window: int = 3_000
    ctr_drop: float = 0.15
    ctr_p_value: float = 0.001
    score_psi: float = 0.25
    click_genre_js: float = 0.05
    features: DriftThresholds = field(default_factory=DriftThresholds)
    # A drift retrain holds out this share of the labels since the drift began (newest) for
    # validation and again for test, and trains on everything else: the post-drift labels
    # are the only ones that show the new behaviour, so the model has to learn from most of
    # them and be judged on the rest. (A share of all labels would hold out every one.)
    drift_retrain_holdout: float = 0.15


@dataclass(frozen=True)
class WindowStats:
    impressions: int
    clicks: int
    first_event: str
    last_event: str

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")


@dataclass(frozen=True)
class DriftReport:
    """One evaluation: the statistics, the verdict and, when drifted, why."""

    model_version: str
    enough_data: bool
    reference: WindowStats | None
    recent: WindowStats | None
    ctr_relative_drop: float
    ctr_p_value: float
    score_psi: float
    click_genre_js: float
    features: tuple[FeatureDrift, ...]
    reasons: tuple[str, ...]
    window_id: str

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["drifted"] = self.drifted
        return data


def ctr_drop_test(ref_clicks: int, ref_n: int, cur_clicks: int, cur_n: int) -> tuple[float, float]:
    """Relative CTR drop and the one-sided p-value that the recent CTR is lower (z-test)."""
    if min(ref_n, cur_n) == 0:
        return float("nan"), 1.0
    p_ref, p_cur = ref_clicks / ref_n, cur_clicks / cur_n
    pooled = (ref_clicks + cur_clicks) / (ref_n + cur_n)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / ref_n + 1 / cur_n))
    drop = 1 - p_cur / p_ref if p_ref > 0 else 0.0
    if spread == 0:
        return drop, 1.0
    return drop, float(norm.sf((p_ref - p_cur) / spread))


def _window_stats(impressions: pd.DataFrame, clicks: pd.DataFrame) -> WindowStats:
    stamps = impressions["event_timestamp"]
    return WindowStats(
        impressions=len(impressions),
        clicks=len(clicks),
        first_event=pd.Timestamp(stamps.min()).isoformat(),
        last_event=pd.Timestamp(stamps.max()).isoformat(),
    )


def genre_shares(item_ids: pd.Series, item_genres: Mapping[str, str]) -> dict[str, float]:
    """Share of each genre among `item_ids` ('A|B' genres count half each)."""
    counts: dict[str, float] = {}
    for item in item_ids:
        genres = [g for g in str(item_genres.get(item, "")).split("|") if g] or ["(none)"]
        for genre in genres:
            counts[genre] = counts.get(genre, 0.0) + 1 / len(genres)
    total = sum(counts.values()) or 1.0
    return {genre: count / total for genre, count in counts.items()}


def served_windows(
    events: pd.DataFrame, model_version: str, window: int
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The model's first and last `window` impressions (whole requests), or None when
    it has served fewer than 2 x `window`. Rows: impressions and their engagements."""
    mine = events.loc[events["model_version"] == model_version]
    impressions = mine.loc[mine["event_type"] == "impression"].sort_values(
        ["event_timestamp", "event_id"], kind="stable"
    )
    if len(impressions) < 2 * window:
        return None
    requests = impressions["request_id"].drop_duplicates().to_numpy()
    sizes = impressions.groupby("request_id", sort=False).size().reindex(requests).to_numpy()
    before = np.cumsum(sizes) - sizes  # impressions served before each request
    after = len(impressions) - before  # impressions from each request on
    first = set(requests[before < window])
    last = set(requests[after <= window])
    return (
        mine.loc[mine["request_id"].isin(first)],
        mine.loc[mine["request_id"].isin(last - first)],
    )


def impressions_since(events: pd.DataFrame, model_version: str, since: pd.Timestamp) -> int:
    """Impressions `model_version` served at or after `since`."""
    mine = events.loc[
        (events["model_version"] == model_version) & (events["event_type"] == "impression")
    ]
    return int((pd.to_datetime(mine["event_timestamp"], utc=True) >= since).sum())


def window_id(model_version: str, rows: pd.DataFrame) -> str:
    """Names a window by the model and the events in it (stable across processes)."""
    digest = hashlib.sha256("\n".join(sorted(rows["event_id"].astype(str))).encode())
    return f"{model_version}@{digest.hexdigest()[:16]}"


def drift_report(
    events: pd.DataFrame,
    model_version: str,
    item_genres: Mapping[str, str],
    config: MonitoringConfig = MonitoringConfig(),
    feature_reference: Mapping[str, Sequence[float]] | None = None,
    feature_current: Mapping[str, Sequence[float]] | None = None,
) -> DriftReport:
    """Compare the champion's recent window with its reference window (module docstring)."""
    features = tuple(
        feature_drift(feature_reference, feature_current, config.features)
        if feature_reference and feature_current
        else ()
    )
    feature_reasons = tuple(
        f"user feature {f.feature}: {'; '.join(f.reasons)}" for f in features if f.drifted
    )
    windows = served_windows(events, model_version, config.window)
    if windows is None:
        return DriftReport(
            model_version,
            False,
            None,
            None,
            math.nan,
            1.0,
            math.nan,
            math.nan,
            features,
            feature_reasons,
            f"{model_version}@waiting",
        )
    reference, recent = windows
    stats = []
    for rows in (reference, recent):
        impressions = rows.loc[rows["event_type"] == "impression"]
        clicks = rows.loc[rows["event_type"].isin(ENGAGEMENT_EVENTS)]
        stats.append((impressions, clicks, _window_stats(impressions, clicks)))
    (ref_imp, ref_clicks, ref_stats), (cur_imp, cur_clicks, cur_stats) = stats
    drop, p_value = ctr_drop_test(
        ref_stats.clicks, ref_stats.impressions, cur_stats.clicks, cur_stats.impressions
    )
    score_psi = psi(ref_imp["value"].to_numpy(float), cur_imp["value"].to_numpy(float))
    click_js = jensen_shannon_shares(
        genre_shares(ref_clicks["item_id"], item_genres),
        genre_shares(cur_clicks["item_id"], item_genres),
    )
    reasons = list(feature_reasons)
    if drop >= config.ctr_drop and p_value < config.ctr_p_value:
        reasons.append(
            f"CTR fell {drop:.0%} ({ref_stats.ctr:.4f} -> {cur_stats.ctr:.4f}, p={p_value:.1e})"
        )
    if score_psi > config.score_psi:
        reasons.append(f"score distribution PSI {score_psi:.3f} > {config.score_psi}")
    if click_js > config.click_genre_js:
        reasons.append(f"clicked-genre mix JS {click_js:.3f} > {config.click_genre_js}")
    return DriftReport(
        model_version=model_version,
        enough_data=True,
        reference=ref_stats,
        recent=cur_stats,
        ctr_relative_drop=drop,
        ctr_p_value=p_value,
        score_psi=score_psi,
        click_genre_js=click_js,
        features=features,
        reasons=tuple(reasons),
        window_id=window_id(model_version, recent),
    )


def ctr_series(events: pd.DataFrame, bucket: int) -> pd.DataFrame:
    """CTR per consecutive block of `bucket` impressions, in serving order, with the
    model version that served most of the block: the curve the timeline plots."""
    impressions = events.loc[events["event_type"] == "impression"].sort_values(
        ["event_timestamp", "event_id"], kind="stable"
    )
    clicked = set(
        events.loc[
            events["event_type"].isin(ENGAGEMENT_EVENTS), ["request_id", "item_id"]
        ].itertuples(index=False, name=None)
    )
    hits = np.fromiter(
        (
            (r, i) in clicked
            for r, i in impressions[["request_id", "item_id"]].itertuples(False, None)
        ),
        dtype=bool,
        count=len(impressions),
    )
    block = np.arange(len(impressions)) // bucket
    frame = pd.DataFrame(
        {
            "block": block,
            "hit": hits,
            "at": impressions["event_timestamp"].to_numpy(),
            "model_version": impressions["model_version"].to_numpy(),
        }
    )
    return frame.groupby("block").agg(
        impressions=("hit", "size"),
        ctr=("hit", "mean"),
        last_event=("at", "max"),
        model_version=("model_version", lambda v: v.mode().iloc[0]),
    )
