"""A popularity recommender as a servable, versioned artifact (experiment variants).

Popularity is the baseline every online test needs on one side. It is packaged like
the two-tower model (recloop.models.model_artifact): a manifest of sha256s whose own hash is
the version (`pop-…`), so the registry, the service and the event log treat both
kinds alike. It counts positive labels in a trailing window and serves the most
counted items the user has not interacted with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.models.kinds import POPULARITY_PREFIX
from recloop.models.label_matrix import LabelMatrix
from recloop.models.model_artifact import (
    binary_csr,
    binary_csr_arrays,
    content_version,
    labels_manifest,
    verified_manifest,
    write_manifest,
)

VERSION_PREFIX = POPULARITY_PREFIX
FORMAT_VERSION = 1
ARRAYS = "popularity.npz"


@dataclass
class PopularityModel:
    """Counts per item and the interactions each user is known to have had."""

    user_ids: np.ndarray  # index -> external user id (str)
    item_ids: np.ndarray  # index -> external item id (str)
    counts: np.ndarray  # (n_items,) positive labels in the window
    history: sp.csr_matrix  # users x items already interacted with (never recommended)
    window_days: int | None
    metadata: dict[str, object] = field(default_factory=dict)
    version: str = ""

    def judged(self) -> PopularityModel:
        """What offline evaluation scores, as every kind has it: the counts that serve."""
        return self


def fit_popularity(
    examples: pd.DataFrame,
    catalog: np.ndarray,
    until: pd.Timestamp,
    window_days: int | None,
    metadata: dict[str, object] | None = None,
) -> PopularityModel:
    """Count positive labels stamped in [until - window_days, until) per catalog item.

    `examples` holds user_id, item_id, event_timestamp (every label, also after
    `until`: they are what the user has seen, filtered when serving). Items outside
    `catalog` are an error: the model could not serve them.
    """
    labels = LabelMatrix.of(examples, catalog)
    until = pd.Timestamp(until).tz_convert("UTC")
    counted = labels.before(until)
    if window_days is not None:
        counted &= (labels.stamps >= until - pd.Timedelta(days=window_days)).to_numpy()
    counts = np.bincount(labels.items[counted], minlength=len(labels.item_ids)).astype(np.float64)
    return PopularityModel(
        user_ids=labels.user_ids,
        item_ids=labels.item_ids,
        counts=counts,
        history=labels.matrix(),
        window_days=window_days,
        metadata={
            **(metadata or {}),
            "counted_labels": int(counted.sum()),
            "counted_until": until.isoformat(),
            "tenants": labels.tenants,
        },
    )


def manifest_version(manifest: dict[str, object]) -> str:
    return content_version(manifest, VERSION_PREFIX)


def save_popularity(model: PopularityModel, directory: Path) -> str:
    """Write the arrays and the manifest into `directory`; return the content version."""
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / ARRAYS, counts=model.counts, **binary_csr_arrays(model.history))
    manifest = labels_manifest(
        "popularity",
        FORMAT_VERSION,
        model.user_ids,
        model.item_ids,
        model.metadata,
        directory / ARRAYS,
        window_days=model.window_days,
    )
    model.version = write_manifest(directory, manifest, manifest_version)
    return model.version


def load_popularity(directory: Path, expected_version: str | None = None) -> PopularityModel:
    """Verify every file against the manifest, then load; raises CorruptArtifactError."""
    manifest = verified_manifest(
        directory, expected_version, "popularity", FORMAT_VERSION, manifest_version
    )
    with np.load(directory / ARRAYS, allow_pickle=False) as arrays:
        history = binary_csr(arrays)
        counts = arrays["counts"]
    return PopularityModel(
        user_ids=np.asarray(manifest["user_ids"], dtype=object),
        item_ids=np.asarray(manifest["item_ids"], dtype=object),
        counts=counts,
        history=history,
        window_days=manifest["window_days"],
        metadata=dict(manifest["metadata"]),
        version=str(manifest["version"]),
    )
