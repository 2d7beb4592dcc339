"""Dense side features from catalog snapshots, one row per interaction index.

One implementation for training and serving: both call these with the catalog
and the id order of the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _one_hot(values: pd.Series, vocabulary: list[str]) -> np.ndarray:
    index = {value: i for i, value in enumerate(vocabulary)}
    out = np.zeros((len(values), len(vocabulary)), dtype=np.float32)
    for row, value in enumerate(values):
        if value in index:
            out[row, index[value]] = 1.0
    return out


def user_feature_matrix(users: pd.DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """Age (scaled to about 0..1, 0 when unknown), gender and occupation one-hots."""
    frame = users.drop_duplicates("user_id", keep="last").set_index("user_id").reindex(user_ids)
    age = pd.to_numeric(frame["age"], errors="coerce").fillna(0).to_numpy(np.float32) / 100.0
    gender = _one_hot(frame["gender"], sorted(users["gender"].dropna().unique()))
    occupation = _one_hot(frame["occupation"], sorted(users["occupation"].dropna().unique()))
    return np.hstack([age[:, None], gender, occupation]).astype(np.float32)


def item_feature_matrix(items: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Genre multi-hot and release year (centred, per decade; 0 when unknown)."""
    frame = items.drop_duplicates("item_id", keep="last").set_index("item_id").reindex(item_ids)
    genre_lists = frame["genres"].fillna("").str.split("|")
    vocabulary = sorted({g for genres in genre_lists for g in genres if g})
    index = {g: i for i, g in enumerate(vocabulary)}
    genres = np.zeros((len(frame), len(vocabulary)), dtype=np.float32)
    for row, names in enumerate(genre_lists):
        for name in names:
            if name in index:
                genres[row, index[name]] = 1.0
    years = pd.to_numeric(frame["release_year"], errors="coerce")
    centred = ((years - years.median()) / 10.0).fillna(0).to_numpy(np.float32)
    return np.hstack([genres, centred[:, None]]).astype(np.float32)
