"""Precomputed top-k lists for every known user, through the one inference path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd

from recloop.inference.retrievers import Servable


def batch_list_rows(
    model: Servable,
    version: str,
    tenant_id: str,
    users: Sequence[str],
    features: Mapping[str, Sequence[object]] | None,
    label: str,
    k: int,
    now: datetime,
) -> pd.DataFrame:
    """Each of `tenant_id`'s users' top-k list from `model` (with the user's online
    features, column by column in `users` order, when the model reads them), as rows of
    Feast's batch_lists view."""
    rows = []
    for n, user in enumerate(users):
        row = {name: [values[n]] for name, values in features.items()} if features else None
        result = model.recommend(user, row, k)
        rows.append((user, result.item_ids, result.scores))
    return pd.DataFrame(
        {
            "tenant_id": tenant_id,
            "user_id": [r[0] for r in rows],
            "list_id": label,
            "item_ids": [r[1] for r in rows],
            "scores": [r[2] for r in rows],
            "model_version": version,
            "event_timestamp": pd.Timestamp(now),
        }
    )
