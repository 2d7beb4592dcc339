"""Exact and HNSW search agree, serialize, and return the best items first."""

import numpy as np

from recloop.models.retrieval_index import RetrievalIndex


def unit_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_small_catalogs_use_exact_search_and_large_ones_hnsw() -> None:
    assert RetrievalIndex.build(unit_vectors(100)).kind == "exact"
    assert RetrievalIndex.build(unit_vectors(100), ann_min_items=50).kind == "hnsw"


def test_exact_search_is_the_sorted_brute_force() -> None:
    vectors = unit_vectors(300)
    queries = unit_vectors(5, seed=1)
    scores, indices = RetrievalIndex.build(vectors).search(queries, 7)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :7]
    np.testing.assert_array_equal(indices, expected)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_hnsw_recall_against_exact_and_round_trip() -> None:
    vectors = unit_vectors(3000)
    queries = unit_vectors(50, seed=2)
    _, exact = RetrievalIndex.build(vectors).search(queries, 10)
    hnsw = RetrievalIndex.build(vectors, ann_min_items=1000)
    _, approximate = hnsw.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approximate, strict=True)])
    assert recall >= 0.95
    restored = RetrievalIndex.from_bytes("hnsw", hnsw.to_bytes(), vectors)
    np.testing.assert_array_equal(restored.search(queries, 10)[1], approximate)


def test_k_larger_than_the_catalog_returns_the_catalog() -> None:
    _, indices = RetrievalIndex.build(unit_vectors(4)).search(unit_vectors(1, seed=3), 10)
    assert sorted(indices[0].tolist()) == [0, 1, 2, 3]
