"""Distribution drift between a reference window and a recent one (issue #4 groundwork).

Pure functions over numeric samples, so the drift sensor, its report asset and the
tests share them:

- `psi`: population stability index over quantile bins of the reference. Common
  reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift worth retraining for.
- `jensen_shannon`: JS divergence (base 2, 0..1) over the same bins; symmetric and
  finite when a bin is empty on one side.
- `wasserstein`: earth mover's distance in the feature's own units.

Empty bins get `EPSILON` mass so PSI stays finite; missing values are dropped and
their share is reported separately, since a feature going missing is drift too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import wasserstein_distance

EPSILON = 1e-4
DEFAULT_BINS = 10


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def bin_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner edges at the reference's quantiles (duplicates merged, so ties share a bin)."""
    quantiles = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(quantiles)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` per bin; bins are (-inf, e1], (e1, e2], ..., (ek, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    shares = counts / max(counts.sum(), 1)
    return np.maximum(shares, EPSILON) / np.maximum(shares, EPSILON).sum()


def psi(reference: np.ndarray, current: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """sum over bins of (c - r) * ln(c / r), bins from the reference's quantiles."""
    reference, current = _finite(reference), _finite(current)
    edges = bin_edges(reference, bins)
    r, c = bin_shares(reference, edges), bin_shares(current, edges)
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon(reference: np.ndarray, current: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """JS divergence in bits (0 identical .. 1 disjoint) over the reference's quantile bins."""
    reference, current = _finite(reference), _finite(current)
    edges = bin_edges(reference, bins)
    return _js_bits(bin_shares(reference, edges), bin_shares(current, edges))


def _js_bits(r: np.ndarray, c: np.ndarray) -> float:
    m = (r + c) / 2
    return float(0.5 * np.sum(r * np.log2(r / m)) + 0.5 * np.sum(c * np.log2(c / m)))


def jensen_shannon_shares(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """JS divergence in bits between two categorical distributions (e.g. genre shares)."""
    keys = sorted(set(reference) | set(current))
    r = np.maximum([reference.get(k, 0.0) for k in keys], EPSILON)
    c = np.maximum([current.get(k, 0.0) for k in keys], EPSILON)
    return _js_bits(r / r.sum(), c / c.sum())


def wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    return float(wasserstein_distance(_finite(reference), _finite(current)))


@dataclass(frozen=True)
class DriftThresholds:
    psi: float = 0.25
    jensen_shannon: float = 0.1
    missing_share_change: float = 0.1


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    jensen_shannon: float
    wasserstein: float
    reference_missing: float
    current_missing: float
    drifted: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _missing_share(values: np.ndarray) -> float:
    return float(np.mean(~np.isfinite(values))) if len(values) else 0.0


def feature_drift(
    reference: Mapping[str, Sequence[float]],
    current: Mapping[str, Sequence[float]],
    thresholds: DriftThresholds = DriftThresholds(),
    bins: int = DEFAULT_BINS,
) -> list[FeatureDrift]:
    """Every statistic per feature present in both windows, with the verdict and why."""
    report = []
    for name in sorted(set(reference) & set(current)):
        r = np.asarray(reference[name], dtype=np.float64)
        c = np.asarray(current[name], dtype=np.float64)
        if not len(_finite(r)) or not len(_finite(c)):
            raise ValueError(f"feature {name!r} has no finite values in one of the windows")
        stats = {
            "psi": psi(r, c, bins),
            "jensen_shannon": jensen_shannon(r, c, bins),
            "wasserstein": wasserstein(r, c),
        }
        r_missing, c_missing = _missing_share(r), _missing_share(c)
        reasons = []
        if stats["psi"] > thresholds.psi:
            reasons.append(f"PSI {stats['psi']:.3f} > {thresholds.psi}")
        if stats["jensen_shannon"] > thresholds.jensen_shannon:
            reasons.append(f"JS {stats['jensen_shannon']:.3f} > {thresholds.jensen_shannon}")
        if abs(c_missing - r_missing) > thresholds.missing_share_change:
            reasons.append(f"missing share {r_missing:.0%} -> {c_missing:.0%}")
        report.append(
            FeatureDrift(
                name,
                **stats,
                reference_missing=r_missing,
                current_missing=c_missing,
                drifted=bool(reasons),
                reasons=tuple(reasons),
            )
        )
    return report
