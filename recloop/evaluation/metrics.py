"""Offline ranking metrics: accuracy, beyond-accuracy and popularity bias.

Conventions (the ones RecBole uses, so numbers compare with published ones):
`top_k` is an (users, K) array of item indices, best first; `relevant[u]` holds the
held-out positive items of user u. Users with no relevant item are left out of the
accuracy metrics. Every function returns a mean over the users it scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ACCURACY_METRICS = ("recall", "ndcg", "map", "hit_rate")


def hit_matrix(top_k: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """hits[u, i] is True when the item at rank i of user u is relevant to u."""
    if len(top_k) != len(relevant):
        raise ValueError(f"top_k has {len(top_k)} users but relevant has {len(relevant)}")
    hits = np.zeros(top_k.shape, dtype=bool)
    for user, (row, rel) in enumerate(zip(top_k, relevant, strict=True)):
        hits[user] = np.isin(row, rel)
    return hits


def _mean_over_users(
    top_k: np.ndarray,
    relevant: Sequence[np.ndarray],
    per_user: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> float:
    """Mean of `per_user(hits, relevant_sizes)` over users with at least one relevant item."""
    hits = hit_matrix(top_k, relevant)
    sizes = np.array([len(rel) for rel in relevant], dtype=float)
    scored = sizes > 0
    return float(per_user(hits[scored], sizes[scored]).mean()) if scored.any() else 0.0


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def recall_at_k(top_k: np.ndarray, relevant: Sequence[np.ndarray]) -> float:
    """|top-K ∩ relevant| / |relevant|, averaged over users with a relevant item."""
    return _mean_over_users(top_k, relevant, lambda hits, sizes: hits.sum(axis=1) / sizes)


def hit_rate_at_k(top_k: np.ndarray, relevant: Sequence[np.ndarray]) -> float:
    """Share of users with at least one relevant item in their top K."""
    return _mean_over_users(top_k, relevant, lambda hits, sizes: hits.any(axis=1))


def _ndcg_of_hits(hits: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    discounts = _discounts(hits.shape[1])
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    ideal_len = np.minimum(sizes, len(discounts)).astype(int)
    return (hits * discounts).sum(axis=1) / ideal[ideal_len]


def ndcg_at_k(top_k: np.ndarray, relevant: Sequence[np.ndarray]) -> float:
    """Binary-gain NDCG: sum of 1/log2(rank+1) over hits, over the ideal for min(|relevant|, K)."""
    return _mean_over_users(top_k, relevant, _ndcg_of_hits)


def ndcg_per_user(top_k: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """`ndcg_at_k` of each user with a relevant item (in order), the unit a paired test
    between two models' lists resamples."""
    hits = hit_matrix(top_k, relevant)
    sizes = np.array([len(rel) for rel in relevant], dtype=float)
    scored = sizes > 0
    return _ndcg_of_hits(hits[scored], sizes[scored])


def map_at_k(top_k: np.ndarray, relevant: Sequence[np.ndarray]) -> float:
    """Mean average precision: sum of precision@i at each hit i, over min(|relevant|, K)."""
    k = top_k.shape[1]

    def per_user(hits: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
        return (precision * hits).sum(axis=1) / np.minimum(sizes, k)

    return _mean_over_users(top_k, relevant, per_user)


def catalog_coverage(top_k: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one list."""
    return float(len(np.unique(top_k)) / n_items) if n_items else 0.0


def intra_list_diversity(top_k: np.ndarray, item_vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cos) between the items of each list."""
    k = top_k.shape[1]
    if k < 2 or len(top_k) == 0:
        return 0.0
    norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
    unit = item_vectors / np.where(norms == 0, 1.0, norms)
    lists = unit[top_k]  # (users, K, dim)
    similarity = np.einsum("ukd,ujd->ukj", lists, lists)
    upper = np.triu_indices(k, 1)
    return float((1.0 - similarity[:, upper[0], upper[1]]).mean())


def novelty(top_k: np.ndarray, item_popularity: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p_i) of recommended items, p_i = (pop_i + 1) / (n_users + 1).

    The +1 keeps items nobody interacted with finite (they are the most novel).
    """
    share = (item_popularity[top_k] + 1.0) / (n_users + 1.0)
    return float((-np.log2(share)).mean())


def average_recommended_popularity(top_k: np.ndarray, item_popularity: np.ndarray) -> float:
    """ARP: mean training popularity of the recommended items, over users."""
    return float(item_popularity[top_k].mean(axis=1).mean())


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 when equal, towards 1 when concentrated."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * x.sum()))


def exposure_gini(top_k: np.ndarray, n_items: int) -> float:
    """Gini of how often each catalog item is recommended (popularity bias of the lists)."""
    return gini(np.bincount(top_k.ravel(), minlength=n_items))


@dataclass(frozen=True)
class EvaluationInputs:
    """What the beyond-accuracy metrics need besides the lists."""

    n_items: int
    n_users: int
    item_popularity: np.ndarray  # training interactions per item
    item_vectors: np.ndarray | None = None  # for diversity; None skips it


def evaluate(
    top_k: np.ndarray, relevant: Sequence[np.ndarray], inputs: EvaluationInputs
) -> dict[str, float]:
    """Every metric at K = top_k.shape[1], keyed like `ndcg@10`."""
    k = top_k.shape[1]
    scores = {
        f"recall@{k}": recall_at_k(top_k, relevant),
        f"ndcg@{k}": ndcg_at_k(top_k, relevant),
        f"map@{k}": map_at_k(top_k, relevant),
        f"hit_rate@{k}": hit_rate_at_k(top_k, relevant),
        "coverage": catalog_coverage(top_k, inputs.n_items),
        "novelty": novelty(top_k, inputs.item_popularity, inputs.n_users),
        "avg_popularity": average_recommended_popularity(top_k, inputs.item_popularity),
        "exposure_gini": exposure_gini(top_k, inputs.n_items),
    }
    if inputs.item_vectors is not None:
        scores["diversity"] = intra_list_diversity(top_k, inputs.item_vectors)
    return scores


def evaluate_segments(
    top_k: np.ndarray,
    relevant: Sequence[np.ndarray],
    inputs: EvaluationInputs,
    segments: Mapping[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    """`evaluate` on each user segment (a boolean mask over users), plus `all`."""
    results = {"all": evaluate(top_k, relevant, inputs)}
    for name, mask in segments.items():
        if mask.any():
            results[name] = evaluate(
                top_k[mask], [relevant[i] for i in np.flatnonzero(mask)], inputs
            )
    return results


def evaluate_item_segments(
    top_k: np.ndarray, relevant: Sequence[np.ndarray], inputs: EvaluationInputs
) -> dict[str, dict[str, float]]:
    """`evaluate` on long-tail (all but the top 20 % by training popularity), cold (never in
    training) and warm items: relevance restricted to the segment, over the users who have
    relevant items in it. A segment nobody has relevant items in is left out."""
    popularity = inputs.item_popularity
    head = np.argsort(-popularity, kind="stable")[: max(1, len(popularity) // 5)]
    segments = {
        "long_tail_items": np.setdiff1d(np.arange(len(popularity)), head),
        "cold_items": np.flatnonzero(popularity == 0),
        "warm_items": np.flatnonzero(popularity > 0),
    }
    results = {}
    for name, allowed in segments.items():
        restricted = restrict_relevant(relevant, allowed)
        users = np.flatnonzero([len(r) > 0 for r in restricted])
        if len(users):
            results[name] = evaluate(top_k[users], [restricted[u] for u in users], inputs)
    return results


def restrict_relevant(relevant: Sequence[np.ndarray], allowed: np.ndarray) -> list[np.ndarray]:
    """Keep only relevant items in `allowed` (e.g. cold or long-tail items) for item segments."""
    return [rel[np.isin(rel, allowed)] for rel in relevant]
