"""Promotion gates: what a candidate must show before it may replace the champion.

Pure functions over metrics dicts, so the Dagster checks, the CLI and the tests
all apply the same rules. Thresholds live in `GateConfig` (defaults documented
in the README); every result carries the value and the threshold it was held to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

NDCG = "ndcg@10"


@dataclass(frozen=True)
class GateConfig:
    # candidate NDCG@10 must be at least (1 + margin) x popularity's
    min_lift_over_popularity: float = 0.05
    # candidate NDCG@10 may fall at most this fraction below the champion's, same test set
    champion_tolerance: float = 0.02
    # above this share of test labels answering the champion's own lists, comparing with
    # the champion on them is biased in its favour (it chose what could be clicked): the
    # comparison is skipped, recorded as such, and popularity remains the offline bar
    max_champion_served_share: float = 0.5
    # share of the catalog that appears in some top-10 list
    min_coverage: float = 0.05
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
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def beats_popularity(
    candidate: dict[str, float], popularity: dict[str, float], config: GateConfig
) -> GateResult:
    threshold = popularity[NDCG] * (1 + config.min_lift_over_popularity)
    value = candidate[NDCG]
    return GateResult(
        "beats_popularity",
        bool(value >= threshold),
        value,
        threshold,
        f"NDCG@10 {value:.4f} vs popularity {popularity[NDCG]:.4f} "
        f"(needs +{config.min_lift_over_popularity:.0%})",
    )


def no_regression(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    config: GateConfig,
    champion_served_share: float = 0.0,
) -> GateResult:
    if champion is None:
        return GateResult(
            "no_regression_vs_champion", True, candidate[NDCG], 0.0, "no champion yet"
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
    ratio = candidate["avg_popularity"] / max(popularity["avg_popularity"], 1e-12)
    return [
        GateResult(
            "coverage",
            bool(candidate["coverage"] >= config.min_coverage),
            candidate["coverage"],
            config.min_coverage,
            f"{candidate['coverage']:.1%} of the catalog recommended",
        ),
        GateResult(
            "popularity_bias",
            bool(ratio <= config.max_popularity_ratio),
            ratio,
            config.max_popularity_ratio,
            f"average recommended popularity is {ratio:.2f}x the popularity baseline's",
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
