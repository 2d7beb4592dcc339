"""Positive labels laid out in a fixed catalog: what the labels-only kinds are fitted from.

Popularity counts columns of it, EASE solves for item-to-item weights on it, and both
keep every label as the users x items history they never recommend again. One
layout for both, so they agree on which users and items exist and refuse the same
bad input (a label outside the catalog).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass(frozen=True)
class LabelMatrix:
    """Each label's user row and item column; users sorted, items in catalog order."""

    user_ids: np.ndarray  # row -> external user id (object)
    item_ids: np.ndarray  # column -> external item id (object), the catalog
    users: np.ndarray  # per label
    items: np.ndarray  # per label
    stamps: pd.Series  # per label, UTC
    tenants: list[str]

    @classmethod
    def of(cls, examples: pd.DataFrame, catalog: np.ndarray) -> LabelMatrix:
        """`examples` holds user_id, item_id, event_timestamp (and tenant_id). Items outside
        `catalog` are an error: a model could not serve them."""
        item_index = pd.Index(np.asarray(catalog, dtype=str))
        if not item_index.is_unique:
            raise ValueError("the catalog lists an item twice")
        items = item_index.get_indexer(examples["item_id"].astype(str))
        if (items < 0).any():
            unknown = sorted(set(examples["item_id"].astype(str)) - set(item_index))[:5]
            raise ValueError(f"labels name items missing from the catalog: {unknown}")
        user_ids = np.sort(examples["user_id"].astype(str).unique())
        users = pd.Index(user_ids).get_indexer(examples["user_id"].astype(str))
        tenants = (
            sorted(examples["tenant_id"].astype(str).unique().tolist())
            if "tenant_id" in examples
            else []
        )
        return cls(
            user_ids=user_ids.astype(object),
            item_ids=item_index.to_numpy().astype(object),
            users=users,
            items=items,
            stamps=pd.to_datetime(examples["event_timestamp"], utc=True).reset_index(drop=True),
            tenants=tenants,
        )

    def before(self, until: pd.Timestamp) -> np.ndarray:
        """Which labels are stamped strictly before `until` (bool per label)."""
        return (self.stamps < pd.Timestamp(until).tz_convert("UTC")).to_numpy()

    def matrix(self, selected: np.ndarray | None = None) -> sp.csr_matrix:
        """Binary users x items of the `selected` labels (bool per label; default all)."""
        keep = np.ones(len(self.users), dtype=bool) if selected is None else selected
        matrix = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (self.users[keep], self.items[keep])),
            shape=(len(self.user_ids), len(self.item_ids)),
        )
        matrix.data[:] = 1.0
        return matrix
