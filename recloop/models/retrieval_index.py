"""Maximum inner-product search over item vectors: faiss HNSW, or exact for small catalogs.

Exact search (one matrix product) is both faster and exact below a few thousand
items, so it is the default there; the HNSW graph takes over above
`ann_min_items`. Either way the index is serialized next to the model weights
and addressed by the same version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["exact", "hnsw"]
DEFAULT_ANN_MIN_ITEMS = 5_000


@dataclass
class RetrievalIndex:
    kind: IndexKind
    vectors: np.ndarray  # (n_items, dim) float32; rows follow the model's item indices
    ann: faiss.Index | None = None

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ann_min_items: int = DEFAULT_ANN_MIN_ITEMS,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
    ) -> RetrievalIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) < ann_min_items:
            return cls("exact", vectors)
        index = faiss.IndexHNSWFlat(vectors.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        index.add(vectors)
        return cls("hnsw", vectors, index)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `k` (scores, item indices) per query row, best first; (q, k) each."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if self.ann is not None:
            scores, indices = self.ann.search(queries, k)
            return scores, indices.astype(np.int64)
        scores = queries @ self.vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top, order, axis=1)

    def to_bytes(self) -> bytes:
        """The HNSW graph (faiss's own format) or, for exact search, the raw float32 matrix."""
        if self.ann is not None:
            return faiss.serialize_index(self.ann).tobytes()
        return self.vectors.tobytes()

    @classmethod
    def from_bytes(cls, kind: IndexKind, data: bytes, vectors: np.ndarray) -> RetrievalIndex:
        """Rebuild from `to_bytes`; `vectors` are the model's item vectors the index must hold."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if kind == "exact":
            stored = np.frombuffer(data, dtype=np.float32).reshape(vectors.shape)
            return cls("exact", stored.copy())
        ann = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if ann.ntotal != len(vectors):
            raise ValueError(f"index holds {ann.ntotal} items, the model {len(vectors)}")
        return cls("hnsw", vectors, ann)
