"""EASE (Steck 2019) as a servable, versioned artifact: a third registered model kind.

An item-to-item linear autoencoder: B = I - P / diag(P), P = (XᵀX + λI)⁻¹, diag(B) = 0
(recloop.models.baselines.ease_weights, the one implementation). A user's scores are
their row of X times B, so it reads labels only, and a user it was not fitted on is
scored from whatever items the request says they just engaged with. Like a refit
two-tower, one artifact keeps two weight matrices of the same L2: the judged one, solved
on the labels before the test cut-off, which the gates score, and the served one, solved
on every label, so the items that appear only in the newest labels are recommended and
the newest co-occurrences count (refit: false serves the judged weights). Packaged like
popularity (recloop.models.popularity_model): the arrays in a NumPy archive, a manifest
of sha256s whose own hash is the version (`ease-…`), so the registry verifies and
serves it like the other kinds. The weights are n_items² float32: 11 MB for
MovieLens-100K's 1,682 films (twice that with the judged weights, which serving does not
load), too large for catalogs of tens of thousands of items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.evaluation.metrics import ndcg_at_k
from recloop.evaluation.splits import latest_share_per_user
from recloop.features.training_set import TemporalCutoffs
from recloop.models.baselines import ease_weights, top_k_unseen
from recloop.models.kinds import EASE_PREFIX
from recloop.models.label_matrix import LabelMatrix
from recloop.models.model_artifact import (
    CorruptArtifactError,
    binary_csr,
    binary_csr_arrays,
    content_version,
    labels_manifest,
    verified_manifest,
    write_manifest,
)

VERSION_PREFIX = EASE_PREFIX
FORMAT_VERSION = 1
ARRAYS = "ease.npz"
# The L2 values `search_l2` tries: the quality bench's grid on MovieLens-100K chose 500-1000
# on its three protocols, and larger catalogs want larger values.
L2_GRID = (50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0)
SEARCH_K = 10
SEARCH_METRIC = f"valid_ndcg@{SEARCH_K}"
# The per-user hold-out of the search: each user's latest fifth of labels before the test
# cut-off (a user with a single label keeps it for fitting).
LATEST_FRACTION = 0.2
# What `search_l2` chooses by: each hold-out's NDCG relative to its best L2, averaged.
RELATIVE_SCORE = f"relative_ndcg@{SEARCH_K}"


@dataclass
class EaseModel:
    """Item-to-item weights and the interactions each user is known to have had."""

    user_ids: np.ndarray  # index -> external user id (str)
    item_ids: np.ndarray  # index -> external item id (str)
    weights: np.ndarray  # (n_items, n_items) float32, B: row i = what having had i adds
    history: sp.csr_matrix  # users x items already interacted with (never recommended)
    l2: float
    metadata: dict[str, object] = field(default_factory=dict)
    version: str = ""
    # Solved on the labels before the test cut-off, for the gates, when `weights` are the
    # refit; None when there is no refit or it was not loaded.
    evaluated_weights: np.ndarray | None = None

    def judged(self) -> EaseModel:
        """What offline evaluation must score: never weights solved on the test labels."""
        if self.evaluated_weights is not None:
            metadata = {k: v for k, v in self.metadata.items() if k != "refit"}
            return replace(
                self, weights=self.evaluated_weights, evaluated_weights=None, metadata=metadata
            )
        if "refit" in self.metadata:
            raise ValueError(
                f"model {self.version or '(unsaved)'} serves weights solved on its test labels "
                "and was loaded without its judged weights: load it with with_evaluated=True"
            )
        return self


@dataclass(frozen=True)
class L2Search:
    """The L2 a search chose and every value it tried with its validation NDCG@10
    (`search_l2`: per hold-out, and the mean relative score it chose by)."""

    l2: float
    trials: list[dict[str, float]]


def search_l2(
    examples: pd.DataFrame,
    catalog: np.ndarray,
    cutoffs: TemporalCutoffs,
    grid: tuple[float, ...] = L2_GRID,
) -> L2Search:
    """EASE's L2 by NDCG@10 on two hold-outs of the labels before the test cut-off (the
    test part is never read): the temporal validation part, what the next period brings
    (weights from the labels before it), and each user's latest labels, what a returning
    user does next (weights from the rest). Each trial's score is its NDCG relative to the
    best L2 on that hold-out, averaged over the hold-outs, so that neither protocol alone
    decides (on a MovieLens feed the temporal one prefers the largest L2, which leans
    towards popularity; the per-user one a fifth of it). A hold-out without labels is
    left out; with neither there is nothing to choose on."""
    labels = LabelMatrix.of(examples, catalog)
    before_test = labels.before(cutoffs.test_start)
    before_valid = labels.before(cutoffs.valid_start)
    latest = latest_per_user(labels, before_test, LATEST_FRACTION)
    splits = {
        "temporal": (before_valid, before_test & ~before_valid),
        "latest_per_user": (before_test & ~latest, latest),
    }
    searches = {
        name: search_l2_on(labels.matrix(fit), labels.matrix(held), grid)
        for name, (fit, held) in splits.items()
        if held.any()
    }
    if not searches:
        raise ValueError("no validation labels to choose EASE's l2 on; set search_l2: false")
    trials = []
    for n, l2 in enumerate(grid):
        scores = {name: search.trials[n][SEARCH_METRIC] for name, search in searches.items()}
        best = {name: max(t[SEARCH_METRIC] for t in s.trials) for name, s in searches.items()}
        relative = [scores[name] / best[name] if best[name] > 0 else 1.0 for name in scores]
        trials.append(
            {
                "l2": float(l2),
                **{f"{name}/{SEARCH_METRIC}": score for name, score in scores.items()},
                RELATIVE_SCORE: float(np.mean(relative)),
            }
        )
    chosen = max(trials, key=lambda trial: trial[RELATIVE_SCORE])
    return L2Search(chosen["l2"], trials)


def latest_per_user(labels: LabelMatrix, selected: np.ndarray, fraction: float) -> np.ndarray:
    """Of the `selected` labels, each user's latest `fraction` by time (at least one; none
    of a user with a single label), as a bool per label."""
    chosen = np.flatnonzero(selected)
    stamps = labels.stamps.to_numpy(dtype="datetime64[ns]")[chosen]
    latest = np.zeros(len(labels.users), dtype=bool)
    latest[chosen] = latest_share_per_user(
        labels.users[chosen], stamps, len(labels.user_ids), fraction
    )
    return latest


def search_l2_on(
    train: sp.csr_matrix,
    valid: sp.csr_matrix,
    grid: tuple[float, ...] = L2_GRID,
    k: int = SEARCH_K,
) -> L2Search:
    """EASE's L2 by NDCG@k on `valid` (users x items, same shape as `train`): weights
    fitted on `train`, each validation user's `train` row as the input and the mask
    (the quality bench's tuning too). Ties go to the value listed first."""
    users = np.flatnonzero(np.diff(valid.indptr) > 0)
    if not len(users):
        raise ValueError("no validation labels to choose EASE's l2 on; set search_l2: false")
    relevant = [valid[user].indices for user in users]
    history = train[users]
    trials = []
    for l2 in grid:
        scores = np.asarray(history @ ease_weights(train, l2))
        top = top_k_unseen(scores, history, k)
        trials.append({"l2": float(l2), f"valid_ndcg@{k}": ndcg_at_k(top, relevant)})
    best = max(trials, key=lambda trial: trial[f"valid_ndcg@{k}"])
    return L2Search(best["l2"], trials)


def matrix_sha256(weights: np.ndarray) -> str:
    """The hash of one weight matrix as stored (float32, C order)."""
    return hashlib.sha256(np.ascontiguousarray(weights, dtype=np.float32).tobytes()).hexdigest()


def fit_ease(
    examples: pd.DataFrame,
    catalog: np.ndarray,
    until: pd.Timestamp,
    l2: float,
    metadata: dict[str, object] | None = None,
    refit: bool = True,
) -> EaseModel:
    """Solve B on the positive labels stamped before `until` (the train and validation
    parts when `until` is the test cut-off, so the test part judges it honestly), then,
    with `refit`, again on every label, which is what serves.

    `examples` holds user_id, item_id, event_timestamp (every label, also after `until`:
    all of them are the history that is never recommended again, as for popularity).
    Items outside `catalog` are an error: the model could not serve them.
    """
    if l2 <= 0:
        raise ValueError(f"l2 must be positive, got {l2}")
    labels = LabelMatrix.of(examples, catalog)
    until = pd.Timestamp(until).tz_convert("UTC")
    fitted = labels.before(until)
    judged = ease_weights(labels.matrix(fitted), l2)
    evaluated = {
        "labels": int(fitted.sum()),
        # what the judged weights saw: a later candidate's test window must start after it
        "labels_before": until.isoformat(),
        "weights_sha256": matrix_sha256(judged),
    }
    model = EaseModel(
        user_ids=labels.user_ids,
        item_ids=labels.item_ids,
        weights=judged,
        history=labels.matrix(),
        l2=float(l2),
        metadata={**(metadata or {}), "tenants": labels.tenants, "evaluated": evaluated},
    )
    if not refit:
        return model
    served = ease_weights(labels.matrix(), l2)
    return replace(
        model,
        weights=served,
        evaluated_weights=judged,
        metadata={
            **model.metadata,
            "refit": {"labels": len(labels.users), "weights_sha256": matrix_sha256(served)},
        },
    )


def manifest_version(manifest: dict[str, object]) -> str:
    return content_version(manifest, VERSION_PREFIX)


def save_ease(model: EaseModel, directory: Path) -> str:
    """Write the arrays and the manifest into `directory`; return the content version."""
    if model.evaluated_weights is None and "refit" in model.metadata:
        raise ValueError(
            f"model {model.version or '(unsaved)'} was loaded without its judged weights; "
            "load it with with_evaluated=True to save it"
        )
    directory.mkdir(parents=True, exist_ok=True)
    judged = (
        {}
        if model.evaluated_weights is None
        else {"evaluated_weights": np.ascontiguousarray(model.evaluated_weights, np.float32)}
    )
    np.savez(
        directory / ARRAYS,
        weights=np.ascontiguousarray(model.weights, dtype=np.float32),
        **judged,
        **binary_csr_arrays(model.history),
    )
    manifest = labels_manifest(
        "ease",
        FORMAT_VERSION,
        model.user_ids,
        model.item_ids,
        model.metadata,
        directory / ARRAYS,
        l2=model.l2,
    )
    model.version = write_manifest(directory, manifest, manifest_version)
    return model.version


def load_ease(
    directory: Path, expected_version: str | None = None, with_evaluated: bool = False
) -> EaseModel:
    """Verify every file against the manifest, then load; raises CorruptArtifactError.
    `with_evaluated` also loads the judged weights (offline evaluation needs them; serving
    does not, so it does not hold them)."""
    manifest = verified_manifest(
        directory, expected_version, "ease", FORMAT_VERSION, manifest_version
    )
    with np.load(directory / ARRAYS, allow_pickle=False) as arrays:
        history = binary_csr(arrays)
        weights = arrays["weights"]
        judged = (
            arrays["evaluated_weights"]
            if with_evaluated and "evaluated_weights" in arrays.files
            else None
        )
    item_ids = np.asarray(manifest["item_ids"], dtype=object)
    square = (len(item_ids), len(item_ids))
    if (
        weights.shape != square
        or (judged is not None and judged.shape != square)
        or history.shape[1] != len(item_ids)
    ):
        raise CorruptArtifactError(
            f"{directory}: weights {weights.shape} and history {history.shape} do not fit "
            f"{len(item_ids)} items"
        )
    return EaseModel(
        user_ids=np.asarray(manifest["user_ids"], dtype=object),
        item_ids=item_ids,
        weights=weights,
        history=history,
        l2=float(manifest["l2"]),
        metadata=dict(manifest["metadata"]),
        version=str(manifest["version"]),
        evaluated_weights=judged,
    )
