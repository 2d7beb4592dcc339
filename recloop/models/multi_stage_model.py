"""The multi-stage recommender as a servable, versioned artifact: a fourth registered kind.

Candidates from EASE (item to item), implicit ALS, trending items and the neighbours of
the user's last items, merged and ordered by a LightGBM ranker
(recloop.models.multi_stage, the same class the bench measures). The two-tower is not
a source of this kind: its fits (once per label window, then the refit) take most of an
hour on 2 cores.

Like a refit two-tower, one artifact holds two fitted states of the same configuration
and seed: the judged one, fitted on the labels before the test cut-off, which the gates
score, and the served one, fitted on every label, which knows the newest users and
items. Each state is a NumPy archive (every source's arrays and the per-user and
per-item state the ranker's features read) and the ranker's LightGBM model text;
nothing executes on load. A manifest of sha256s whose own hash is the version (`ms-…`)
lets the registry verify and serve it like the other kinds.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.evaluation.splits import Interactions
from recloop.models.candidate_sources import (
    ItemToItemSource,
    MatrixFactorisationSource,
    RecentNeighboursSource,
    StoredSource,
    TrendingSource,
)
from recloop.models.configs import MultiStageConfig
from recloop.models.kinds import MULTI_STAGE_PREFIX
from recloop.models.label_matrix import LabelMatrix
from recloop.models.model_artifact import (
    CorruptArtifactError,
    content_version,
    verified_manifest,
    write_manifest,
)
from recloop.models.multi_stage import (
    LabelWindow,
    MultiStageRecommender,
    StageConfig,
    UserItemState,
)
from recloop.models.progress import ProgressLog, silent
from recloop.models.ranker import BoostedRanker, RankerConfig

VERSION_PREFIX = MULTI_STAGE_PREFIX
FORMAT_VERSION = 1
SERVED, JUDGED = "served", "judged"


def _files(state: str) -> tuple[str, str]:
    """The arrays and the ranker text of one fitted state."""
    return f"{state}.npz", f"{state}_ranker.txt"


def stored_sources(config: MultiStageConfig) -> list[StoredSource]:
    """Fresh, unfitted sources of this kind, as `config` sets them."""
    return [
        ItemToItemSource(l2=config.ease_l2),
        MatrixFactorisationSource(
            factors=config.als_factors,
            regularization=config.als_regularization,
            alpha=config.als_alpha,
            iterations=config.als_iterations,
            seed=config.seed,
        ),
        TrendingSource(window_days=config.trending_days),
        RecentNeighboursSource(recent=config.recent_items, neighbours=config.neighbours),
    ]


def stage_recommender(config: MultiStageConfig, item_features: np.ndarray) -> MultiStageRecommender:
    """An unfitted recommender of this kind. The label windows are mixed: the ranker learns
    from each user's latest labels and from the newest period's, so that it serves a
    returning user's next items and what a new period brings (`make bench-served`: a
    global window alone served each user's held-out items at 0.59x EASE)."""
    return MultiStageRecommender(
        lambda: stored_sources(config),
        item_features.astype(np.float32),
        StageConfig(
            candidates={
                "item_to_item": config.item_to_item_candidates,
                "matrix_factorisation": config.matrix_factorisation_candidates,
                "trending": config.trending_candidates,
                "recent_neighbours": config.recent_neighbours_candidates,
            },
            label_window=LabelWindow(
                "mixed", config.label_window_share, config.seed, config.label_window_folds
            ),
            ranker=RankerConfig(min_data_in_leaf=config.ranker_min_data_in_leaf, seed=config.seed),
        ),
    )


@dataclass
class MultiStageModel:
    """The served fitted state, the judged one, and every label as the history that is
    never recommended again."""

    user_ids: np.ndarray  # index -> external user id (str), the rows of both states
    item_ids: np.ndarray  # index -> external item id (str)
    history: sp.csr_matrix  # users x items, every label (never recommended)
    recommender: MultiStageRecommender  # what serves
    config: MultiStageConfig
    metadata: dict[str, object] = field(default_factory=dict)
    version: str = ""
    # Fitted on the labels before the test cut-off, for the gates; None when not loaded.
    evaluated: MultiStageRecommender | None = None

    def judged(self) -> MultiStageModel:
        """What offline evaluation must score: never a state fitted on the test labels."""
        if self.evaluated is not None:
            metadata = {k: v for k, v in self.metadata.items() if k != "refit"}
            return replace(self, recommender=self.evaluated, evaluated=None, metadata=metadata)
        if "refit" in self.metadata:
            raise ValueError(
                f"model {self.version or '(unsaved)'} serves a state fitted on its test labels "
                "and was loaded without its judged state: load it with with_evaluated=True"
            )
        return self

    def weight_arrays(self) -> list[np.ndarray]:
        """Every source array of the served state (what the sanity gate checks is finite)."""
        return [a for source in self.recommender.sources for a in source.arrays().values()]


def _interactions(labels: LabelMatrix) -> Interactions:
    seconds = (labels.stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return Interactions(
        users=labels.users.astype(np.int64),
        items=labels.items.astype(np.int64),
        timestamps=seconds.to_numpy(np.int64),
        user_ids=labels.user_ids,
        item_ids=labels.item_ids,
    )


def fit_multi_stage(
    examples: pd.DataFrame,
    catalog: np.ndarray,
    item_features: np.ndarray,
    until: pd.Timestamp,
    config: MultiStageConfig,
    metadata: dict[str, object] | None = None,
    log: ProgressLog = silent,
) -> MultiStageModel:
    """Fit the judged state on the labels stamped before `until` (the test cut-off, so
    the test part judges it honestly), then the served state, same configuration and
    seed, on every label.

    `examples` holds user_id, item_id, event_timestamp (and tenant_id); `item_features`
    (len(catalog), f) the content the ranker's user x item affinity reads. Items outside
    `catalog` are an error: the model could not serve them.
    """
    labels = LabelMatrix.of(examples, catalog)
    until = pd.Timestamp(until).tz_convert("UTC")
    data = _interactions(labels)
    before = labels.before(until)
    log(f"judged state: {int(before.sum()):,} labels before {until:%Y-%m-%d %H:%M}")
    judged = stage_recommender(config, item_features).fit(data.subset(before), log)
    log(f"served state: every label ({len(data):,})")
    served = stage_recommender(config, item_features).fit(data, log)
    return MultiStageModel(
        user_ids=labels.user_ids,
        item_ids=labels.item_ids,
        history=labels.matrix(),
        recommender=served,
        config=config,
        evaluated=judged,
        metadata={
            **(metadata or {}),
            "tenants": labels.tenants,
            "evaluated": {
                **state_sha256(judged),
                "labels": int(before.sum()),
                # what the judged state saw: a later candidate's test window starts after it
                "labels_before": until.isoformat(),
                "stages": judged.report,
            },
            "refit": {**state_sha256(served), "labels": len(data), "stages": served.report},
        },
    )


def _state_bytes(recommender: MultiStageRecommender) -> tuple[bytes, bytes]:
    """One fitted state as the bytes of its two files (the same state, the same bytes)."""
    state = recommender.state
    arrays = {
        "item_features": recommender.item_features,
        "recency_data": state.recency.data,
        "recency_indices": state.recency.indices,
        "recency_indptr": state.recency.indptr,
        "recency_shape": np.asarray(state.recency.shape),
        "last_seen": state.last_seen,
        "item_last_seen": state.item_last_seen,
        "reference_time": np.asarray(state.reference_time, dtype=np.int64),
        **{
            f"{source.name}__{name}": np.ascontiguousarray(array)
            for source in recommender.sources
            for name, array in source.arrays().items()
        },
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue(), recommender.ranker.to_text().encode()


def state_sha256(recommender: MultiStageRecommender) -> dict[str, str]:
    """The sha256 of a fitted state's files, as the manifest records them once saved."""
    arrays, ranker = _state_bytes(recommender)
    return {
        "arrays_sha256": hashlib.sha256(arrays).hexdigest(),
        "ranker_sha256": hashlib.sha256(ranker).hexdigest(),
    }


def _ranker_record(recommender: MultiStageRecommender) -> dict[str, object]:
    ranker = recommender.ranker
    return {
        "rounds": ranker.rounds,
        "valid_ndcg": ranker.valid_ndcg,
        "feature_names": ranker.feature_names,
    }


def manifest_version(manifest: dict[str, object]) -> str:
    return content_version(manifest, VERSION_PREFIX)


def save_multi_stage(model: MultiStageModel, directory: Path) -> str:
    """Write both fitted states and the manifest into `directory`; return the version."""
    directory.mkdir(parents=True, exist_ok=True)
    states = {SERVED: model.recommender}
    if model.evaluated is not None:
        states[JUDGED] = model.evaluated
    files, rankers = {}, {}
    for state, recommender in states.items():
        arrays_file, ranker_file = _files(state)
        arrays, ranker = _state_bytes(recommender)
        (directory / arrays_file).write_bytes(arrays)
        (directory / ranker_file).write_bytes(ranker)
        files[arrays_file] = hashlib.sha256(arrays).hexdigest()
        files[ranker_file] = hashlib.sha256(ranker).hexdigest()
        rankers[state] = _ranker_record(recommender)
    manifest: dict[str, object] = {
        "kind": "multi_stage",
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "user_ids": [str(u) for u in model.user_ids],
        "item_ids": [str(i) for i in model.item_ids],
        "rankers": rankers,
        "metadata": model.metadata,
        "files": files,
    }
    model.version = write_manifest(directory, manifest, manifest_version)
    return model.version


def _load_state(
    directory: Path, state: str, manifest: dict[str, object], config: MultiStageConfig
) -> MultiStageRecommender:
    """One fitted state (its files verified beforehand)."""
    arrays_file, ranker_file = _files(state)
    with np.load(directory / arrays_file, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    recommender = stage_recommender(config, arrays["item_features"])
    sources = [
        source.with_arrays(
            {
                name.removeprefix(f"{source.name}__"): array
                for name, array in arrays.items()
                if name.startswith(f"{source.name}__")
            }
        )
        for source in stored_sources(config)
    ]
    recency = sp.csr_matrix(
        (arrays["recency_data"], arrays["recency_indices"], arrays["recency_indptr"]),
        shape=tuple(int(n) for n in arrays["recency_shape"]),
    )
    n_items = len(manifest["item_ids"])
    if recency.shape != (len(manifest["user_ids"]), n_items) or len(arrays["item_features"]) != (
        n_items
    ):
        raise CorruptArtifactError(
            f"{directory / arrays_file}: history {recency.shape} and item features "
            f"{arrays['item_features'].shape} do not fit the manifest's users and items"
        )
    ranker = dict(dict(manifest["rankers"])[state])
    recommender.sources = sources
    recommender.state = UserItemState(
        recency, arrays["last_seen"], arrays["item_last_seen"], int(arrays["reference_time"])
    )
    recommender.ranker = BoostedRanker.from_text(
        (directory / ranker_file).read_text(),
        recommender.config.ranker,
        int(ranker["rounds"]),
        float(ranker["valid_ndcg"]),
        ranker["feature_names"],
    )
    return recommender


def load_multi_stage(
    directory: Path, expected_version: str | None = None, with_evaluated: bool = False
) -> MultiStageModel:
    """Verify every file against the manifest, then load; raises CorruptArtifactError.
    `with_evaluated` also loads the judged state (offline evaluation needs it; serving
    does not, so it does not hold it)."""
    manifest = verified_manifest(
        directory, expected_version, "multi-stage", FORMAT_VERSION, manifest_version
    )
    config = MultiStageConfig(**manifest["config"])
    served = _load_state(directory, SERVED, manifest, config)
    judged = (
        _load_state(directory, JUDGED, manifest, config)
        if with_evaluated and JUDGED in dict(manifest["rankers"])
        else None
    )
    return MultiStageModel(
        user_ids=np.asarray(manifest["user_ids"], dtype=object),
        item_ids=np.asarray(manifest["item_ids"], dtype=object),
        history=served.history,
        recommender=served,
        config=config,
        metadata=dict(manifest["metadata"]),
        version=str(manifest["version"]),
        evaluated=judged,
    )
