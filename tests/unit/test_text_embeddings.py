"""Item text embeddings: the packaged MiniLM model, and a cache keyed by text."""

import numpy as np
import pandas as pd
import pytest

from recloop.features.text_embeddings import (
    TEXT_DIM,
    embed_items,
    embedding_matrix,
    item_text,
    minilm_encoder,
)

ITEMS = pd.DataFrame(
    {
        "tenant_id": "shop",
        "item_id": ["1", "2", "3"],
        "title": ["Toy Story (1995)", "Heat (1995)", "Toy Story 2 (1999)"],
        "genres": ["Animation|Children's|Comedy", "Action|Crime|Thriller", None],
    }
)


class CountingEncoder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32) * len(self.texts)


def test_text_reads_title_and_genres() -> None:
    assert item_text("Heat (1995)", "Action|Crime") == "Heat (1995). Genres: Action, Crime"
    assert item_text("Heat (1995)", None) == "Heat (1995). Genres: unknown"


def test_each_text_is_embedded_once_and_changes_are_re_embedded(tmp_path) -> None:
    encoder = CountingEncoder()
    cache = tmp_path / "cache.parquet"
    first = embed_items(ITEMS, cache, lambda: encoder)
    assert (first.computed, first.reused) == (3, 0)
    second = embed_items(ITEMS, cache, lambda: pytest.fail("encoder loaded with a warm cache"))
    assert (second.computed, second.reused) == (0, 3)
    changed = ITEMS.assign(title=["Toy Story (1995)", "Heat (1995)", "Toy Story 2 (2000)"])
    third = embed_items(changed, cache, lambda: encoder)
    assert (third.computed, third.reused) == (1, 2)
    assert len(encoder.texts) == 4


def test_matrix_follows_the_requested_order_with_zeros_for_unknown(tmp_path) -> None:
    run = embed_items(ITEMS, tmp_path / "cache.parquet", CountingEncoder)
    matrix = embedding_matrix(run.embeddings, ["3", "missing", "1"])
    assert matrix.shape == (3, 4)
    assert (matrix[1] == 0).all() and (matrix[0] != 0).all()


def test_packaged_minilm_places_related_titles_closer(tmp_path) -> None:
    run = embed_items(ITEMS, tmp_path / "cache.parquet", minilm_encoder)
    vectors = embedding_matrix(run.embeddings, ["1", "2", "3"])
    assert vectors.shape == (3, TEXT_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]
