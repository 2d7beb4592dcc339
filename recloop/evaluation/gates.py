"""Promotion gates: what a candidate must show before it may replace the champion.

Pure functions over metrics dicts (and per-user scores, for the paired comparison with
popularity), so the Dagster checks, the CLI and the tests all apply the same rules.
Thresholds live in `GateConfig` (defaults documented in the README); every result
carries the value and the threshold it was held to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

NDCG = "ndcg@10"


@dataclass(frozen=True)
class GateConfig:
    # the lower confidence bound of the candidate's NDCG@10 lift over popularity (paired
    # bootstrap over test users) must reach this: -0.1 asks that it is not more than 10 %
    # worse (non-inferiority, the default: a time-split test part favours popularity, and
    # a personalised model that ties it there serves its users far better); 0.05 asks
    # that it is better by 5 % with that confidence
    min_lift_over_popularity: float = -0.10
    # two-sided confidence level of that interval (0.9: a one-sided 95 % bound)
    lift_confidence: float = 0.90
    bootstrap_resamples: int = 2000
    # candidate NDCG@10 may fall at most this fraction below the champion's, same test set
    champion_tolerance: float = 0.02
    # above this share of test labels answering the champion's own lists, comparing with
    # the champion on them is biased in its favour (it chose what could be clicked): the
    # comparison is skipped, recorded as such, and popularity remains the offline bar
    max_champion_served_share: float = 0.5
    # distinct items in the test users' top-10 lists, at least this multiple of what
    # popularity lists to the same users (a share of the catalog would depend on how many
    # users the test part holds)
    min_coverage_ratio: float = 2.0
    # ... or at least this share of the catalog, which no single list for everyone reaches
    # (a small catalog leaves no room for twice popularity's breadth)
    enough_coverage: float = 0.5
    # average recommended popularity at most this multiple of the popularity baseline's
    max_popularity_ratio: float = 1.0
    # scores across (user, item) pairs must vary at least this much (std)
    min_score_std: float = 1e-4
    # off-policy gate (recloop.experiments.ope.ope_gate): decided only with this effective sample
    # size of logged exploration; then the candidate's SNIPS lower bound must reach the
    # logged clicks per request less this fraction
    ope_min_ess: float = 200.0
    ope_tolerance: float = 0.05

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict. A skipped gate could not decide (no champion yet, no logged
    exploration) and does not block: `passed` stays true, `skipped` says it did not look."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str
    skipped: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def lift_over_popularity(
    candidate_ndcg: np.ndarray, popularity_ndcg: np.ndarray, config: GateConfig, seed: int = 0
) -> GateResult:
    """The candidate's NDCG@10 lift over popularity, judged by the lower bound of a paired
    bootstrap interval: the test users are resampled, each keeping both models' scores,
    so a test part too small to tell them apart cannot pass a model by luck."""
    candidate_ndcg, popularity_ndcg = np.asarray(candidate_ndcg), np.asarray(popularity_ndcg)
    if candidate_ndcg.shape != popularity_ndcg.shape or not len(candidate_ndcg):
        raise ValueError(
            f"a paired comparison needs both models scored on the same test users, got "
            f"{candidate_ndcg.shape} and {popularity_ndcg.shape}"
        )
    lifts = bootstrap_lifts(candidate_ndcg, popularity_ndcg, config.bootstrap_resamples, seed)
    # order statistics, not interpolation: a lift over a zero baseline is +inf
    lower = float(np.quantile(lifts, (1 - config.lift_confidence) / 2, method="lower"))
    upper = float(np.quantile(lifts, (1 + config.lift_confidence) / 2, method="higher"))
    point = ratio(candidate_ndcg.sum(), popularity_ndcg.sum()) - 1
    return GateResult(
        "lift_over_popularity",
        bool(lower >= config.min_lift_over_popularity),
        float(lower),
        config.min_lift_over_popularity,
        f"NDCG@10 {candidate_ndcg.mean():.4f} vs popularity {popularity_ndcg.mean():.4f}: "
        f"lift {point:+.1%}, {config.lift_confidence:.0%} interval [{lower:+.1%}, {upper:+.1%}] "
        f"over {len(candidate_ndcg)} test users; the lower bound must reach "
        f"{config.min_lift_over_popularity:+.0%}",
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, where x / 0 is +inf for x > 0 and 1 for x = 0 (no lift)."""
    if denominator > 0:
        return float(numerator / denominator)
    return float("inf") if numerator > 0 else 1.0


def bootstrap_lifts(
    candidate: np.ndarray, baseline: np.ndarray, resamples: int, seed: int, chunk: int = 100
) -> np.ndarray:
    """sum(candidate) / sum(baseline) - 1 over `resamples` resamples of the paired users,
    drawn in chunks so memory stays at chunk x users."""
    rng = np.random.default_rng(seed)
    n = len(candidate)
    lifts = []
    for start in range(0, resamples, chunk):
        picks = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        lifts += [
            ratio(c, b) - 1
            for c, b in zip(candidate[picks].sum(axis=1), baseline[picks].sum(axis=1), strict=True)
        ]
    return np.asarray(lifts)


def no_regression(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    config: GateConfig,
    champion_served_share: float = 0.0,
) -> GateResult:
    if champion is None:
        return GateResult(
            "no_regression_vs_champion",
            True,
            candidate[NDCG],
            0.0,
            "skipped: no champion yet",
            skipped=True,
        )
    if champion_served_share > config.max_champion_served_share:
        return GateResult(
            "no_regression_vs_champion",
            True,
            candidate[NDCG],
            0.0,
            f"skipped: {champion_served_share:.0%} of the test labels answer the champion's own "
            f"lists (> {config.max_champion_served_share:.0%}), where it would beat any "
            f"candidate by construction (champion NDCG@10 {champion[NDCG]:.4f})",
            skipped=True,
        )
    threshold = champion[NDCG] * (1 - config.champion_tolerance)
    value = candidate[NDCG]
    return GateResult(
        "no_regression_vs_champion",
        bool(value >= threshold),
        value,
        threshold,
        f"NDCG@10 {value:.4f} vs champion {champion[NDCG]:.4f} on the same test set "
        f"(tolerance {config.champion_tolerance:.0%})",
    )


def coverage_and_bias(
    candidate: dict[str, float], popularity: dict[str, float], config: GateConfig
) -> list[GateResult]:
    """Personalised lists, not popularity in disguise: more distinct items than popularity
    lists to the same users (or a broad share of the catalog), and items on average no
    more popular than its."""
    breadth = ratio(candidate["coverage"], popularity["coverage"])
    bias = candidate["avg_popularity"] / max(popularity["avg_popularity"], 1e-12)
    return [
        GateResult(
            "coverage",
            bool(
                breadth >= config.min_coverage_ratio
                or candidate["coverage"] >= config.enough_coverage
            ),
            breadth,
            config.min_coverage_ratio,
            f"{candidate['coverage']:.1%} of the catalog recommended, {breadth:.1f}x "
            f"popularity's {popularity['coverage']:.1%} on the same users (needs "
            f"{config.min_coverage_ratio:.1f}x, or {config.enough_coverage:.0%} of the catalog)",
        ),
        GateResult(
            "popularity_bias",
            bool(bias <= config.max_popularity_ratio),
            bias,
            config.max_popularity_ratio,
            f"average recommended popularity is {bias:.2f}x the popularity baseline's",
        ),
    ]


def sanity(
    weights: Iterable[np.ndarray],
    sample_scores: np.ndarray,
    index_size: int,
    catalog_size: int,
    config: GateConfig,
) -> list[GateResult]:
    """No NaN/inf weights, scores that vary, and an index (or item-to-item matrix) that
    holds the whole catalog. `weights`: every array of the model that would serve."""
    # integer and boolean buffers are finite by construction
    arrays = [w for w in map(np.asarray, weights) if w.dtype.kind == "f"]
    bad = sum(int(np.count_nonzero(~np.isfinite(w))) for w in arrays)
    std = float(np.nanstd(sample_scores)) if np.isfinite(sample_scores).all() else 0.0
    return [
        GateResult("finite_weights", bad == 0, float(bad), 0.0, f"{bad} non-finite weight values"),
        GateResult(
            "scores_not_constant",
            bool(std >= config.min_score_std),
            std,
            config.min_score_std,
            f"score std {std:.2e} over sampled (user, item) pairs",
        ),
        GateResult(
            "index_covers_catalog",
            index_size == catalog_size,
            float(index_size),
            float(catalog_size),
            f"index holds {index_size} items, catalog {catalog_size}",
        ),
    ]


def verdict(results: list[GateResult]) -> bool:
    return bool(results) and all(r.passed for r in results)


def full_lists(lengths: np.ndarray, k: int) -> GateResult:
    """Every test user gets k items: the bar for a baseline variant (popularity), which
    is not expected to beat anything offline but must never serve a short list."""
    short = int((np.asarray(lengths) < k).sum())
    return GateResult(
        "full_lists",
        short == 0,
        float(short),
        0.0,
        f"{short} of {len(lengths)} test users got fewer than {k} items",
    )
