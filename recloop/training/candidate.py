"""Fit, evaluate and package a two-tower candidate from a point-in-time training set;
evaluate and gate a model of any registered kind on the same test part.

Inputs are plain frames with Feast's full feature names (`user_features__*`,
`item_features__*`), so this module never talks to Feast or Dagster:

- `examples`: one row per positive label with the user's features as of the
  label and a `split` column (train / valid / test);
- `user_snapshots`: each user's features as of the validation and test cut-offs
  (`as_of` column holds the cut-off), the state a deployed model would have seen;
- `items`: each catalog item's features as of the validation cut-off, with its
  text embedding.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recloop.data.layout import sha256_file
from recloop.evaluation.gates import (
    GateConfig,
    GateResult,
    coverage_and_bias,
    lift_over_popularity,
    no_regression,
    sanity,
)
from recloop.evaluation.metrics import (
    EvaluationInputs,
    evaluate,
    evaluate_item_segments,
    evaluate_segments,
    ndcg_at_k,
    ndcg_per_user,
)
from recloop.features.feature_vectors import FeatureSpec
from recloop.features.training_set import TemporalCutoffs
from recloop.inference.retrievers import (
    EaseRetriever,
    MultiStageRetriever,
    Retriever,
    ServableModel,
    servable,
)
from recloop.models.baselines import Popularity, recommend, top_k_unseen
from recloop.models.ease_model import EaseModel
from recloop.models.model_artifact import (
    ModelBundle,
    item_vectors_of,
    refit_bundle,
    weight_arrays,
    weights_sha256,
)
from recloop.models.multi_stage_model import MultiStageModel
from recloop.models.popularity_model import PopularityModel
from recloop.models.progress import ProgressLog, silent
from recloop.models.retrieval_index import DEFAULT_ANN_MIN_ITEMS, RetrievalIndex
from recloop.models.two_tower import (
    TrainingExamples,
    TwoTowerConfig,
    TwoTowerModel,
    refit_two_tower,
    score_users,
    train_two_tower,
)

K = 10


@dataclass(frozen=True)
class TrainingInputs:
    examples: pd.DataFrame
    user_snapshots: pd.DataFrame
    items: pd.DataFrame
    text_embeddings: np.ndarray  # (len(items), text_dim), rows follow `items`
    cutoffs: TemporalCutoffs


@dataclass
class EvaluationSet:
    """A test part in a fixed catalog: who, what they liked, what they had seen before."""

    user_ids: np.ndarray
    relevant: list[np.ndarray]  # catalog item indices per user
    seen_pairs: pd.DataFrame  # user_id, item_id known before the test cut-off
    features: pd.DataFrame  # one row per user in `user_ids`, as of the test cut-off
    catalog: np.ndarray  # item ids; indices above refer to it
    item_popularity: np.ndarray  # training interactions per catalog item
    n_train_users: int  # novelty's population: users the popularity counts come from

    def inputs(self) -> EvaluationInputs:
        return EvaluationInputs(len(self.catalog), self.n_train_users, self.item_popularity)


@dataclass
class Candidate:
    # What is registered and served; `bundle.judged()` is what `metrics` describe.
    bundle: ModelBundle
    metrics: dict[str, dict[str, float]]
    evaluation: EvaluationSet
    lists: np.ndarray  # the judged weights' top K per test user, catalog indices
    history: list[dict[str, float]] = field(default_factory=list)


def _pairs_matrix(frame: pd.DataFrame, user_index: pd.Index, item_index: pd.Index) -> sp.csr_matrix:
    users = user_index.get_indexer(frame["user_id"])
    items = item_index.get_indexer(frame["item_id"])
    keep = (users >= 0) & (items >= 0)
    matrix = sp.csr_matrix(
        (np.ones(keep.sum(), dtype=np.float32), (users[keep], items[keep])),
        shape=(len(user_index), len(item_index)),
    )
    matrix.data[:] = 1.0
    return matrix


def _snapshot(snapshots: pd.DataFrame, as_of: pd.Timestamp, user_ids: np.ndarray) -> pd.DataFrame:
    rows = snapshots.loc[snapshots["as_of"] == as_of].drop_duplicates("user_id", keep="last")
    return rows.set_index("user_id").reindex(user_ids).reset_index()


def _relevant(frame: pd.DataFrame, user_ids: np.ndarray, item_index: pd.Index) -> list[np.ndarray]:
    grouped = frame.groupby("user_id")["item_id"].agg(list)
    return [
        np.unique(item_index.get_indexer(grouped.get(u, []))).astype(np.int64) for u in user_ids
    ]


def evaluation_set(inputs: TrainingInputs, part: str, as_of: pd.Timestamp) -> EvaluationSet:
    """Users with positives in `part`, their features at `as_of`, and what they saw before."""
    examples = inputs.examples
    catalog = inputs.items["item_id"].astype(str).to_numpy()
    item_index = pd.Index(catalog)
    target = examples.loc[examples["split"] == part]
    before = examples.loc[pd.to_datetime(examples["event_timestamp"], utc=True) < as_of]
    user_ids = np.sort(target["user_id"].astype(str).unique())
    train = examples.loc[examples["split"] == "train"]
    popularity = np.bincount(
        item_index.get_indexer(train["item_id"]).clip(min=0), minlength=len(catalog)
    ).astype(np.float64)
    return EvaluationSet(
        user_ids=user_ids,
        relevant=_relevant(target, user_ids, item_index),
        seen_pairs=before[["user_id", "item_id"]],
        features=_snapshot(inputs.user_snapshots, as_of, user_ids),
        catalog=catalog,
        item_popularity=popularity,
        n_train_users=int(train["user_id"].nunique()),
    )


def evaluate_bundle(bundle: ModelBundle, evaluation: EvaluationSet, k: int = K) -> dict[str, dict]:
    """Metrics of `bundle` on `evaluation` (`ranked_bundle`). Pass `bundle.judged()` for a
    refit model."""
    return segment_metrics(ranked_bundle(bundle, evaluation, k), evaluation)


def ranked_bundle(bundle: ModelBundle, evaluation: EvaluationSet, k: int = K) -> np.ndarray:
    """Each test user's top k from `bundle` (catalog indices), through the serving code
    path (`Retriever`).

    Works for any bundle, including a champion trained on another catalog or user
    set: ids are mapped, and a user the bundle has no row for is served as the service
    would serve them (placed from features and recent items, else popularity), their
    items seen before the cut-off excluded.
    """
    bundle_users = pd.Index(bundle.user_ids.astype(str))
    bundle_items = pd.Index(bundle.item_ids.astype(str))
    catalog_index = pd.Index(evaluation.catalog)
    seen = _pairs_matrix(evaluation.seen_pairs, bundle_users, bundle_items)
    retriever = Retriever(bundle, history=seen)
    positions = bundle_users.get_indexer(evaluation.user_ids)
    known = positions >= 0
    top = np.full((len(evaluation.user_ids), k), -1, dtype=np.int64)
    if known.any():
        ranked = retriever.recommend_many(
            positions[known], evaluation.features.loc[known].reset_index(drop=True), seen, k
        )
        top[known] = catalog_index.get_indexer(bundle.item_ids[ranked.ravel()].astype(str)).reshape(
            ranked.shape
        )
    seen_items = evaluation.seen_pairs.groupby(evaluation.seen_pairs["user_id"].astype(str))
    seen_items = seen_items["item_id"].agg(lambda items: [str(i) for i in items])
    for row in np.flatnonzero(~known):
        user = str(evaluation.user_ids[row])
        features = evaluation.features.iloc[[row]].reset_index(drop=True)
        served = retriever.recommend(user, features, k, exclude=seen_items.get(user, []))
        top[row] = catalog_index.get_indexer(served.item_ids)
    if (top < 0).any():
        outside = sorted(set(bundle.item_ids.astype(str)) - set(evaluation.catalog))[:5]
        raise ValueError(
            f"model {bundle.version or '(unsaved)'} recommends items missing from the "
            f"evaluation catalog (e.g. {outside}); it cannot be compared on this test set"
        )
    return top


def segment_metrics(top: np.ndarray, evaluation: EvaluationSet) -> dict[str, dict[str, float]]:
    """Every metric overall, on cold users (nothing seen before the cut-off) and per item segment."""
    inputs = evaluation.inputs()
    seen_users = set(evaluation.seen_pairs["user_id"].astype(str))
    cold_users = np.array([u not in seen_users for u in evaluation.user_ids])
    results = evaluate_segments(top, evaluation.relevant, inputs, {"cold_users": cold_users})
    return {**results, **evaluate_item_segments(top, evaluation.relevant, inputs)}


def evaluate_labels_only(
    model: PopularityModel | EaseModel | MultiStageModel, evaluation: EvaluationSet, k: int = K
) -> tuple[dict[str, dict], np.ndarray]:
    """Metrics of a labels-only model on `evaluation` (`ranked_labels_only`), and the length
    of each test user's list. Pass `model.judged()` for a refit model."""
    top, lengths = ranked_labels_only(model, evaluation, k)
    return segment_metrics(top, evaluation), lengths


def ranked_labels_only(
    model: PopularityModel | EaseModel | MultiStageModel, evaluation: EvaluationSet, k: int = K
) -> tuple[np.ndarray, np.ndarray]:
    """Each test user's top k from a labels-only model (popularity, EASE, the multi-stage
    recommender) through its serving path (catalog indices, -1 past a short list), and the
    length of each list (a short list fails the `full_lists` gate).

    The model knows each user's items before the cut-off; a user it has no row for is
    served as the service would serve them (from the request's features when the kind
    reads them, else popularity), their items seen before the cut-off excluded.
    """
    seen = _pairs_matrix(
        evaluation.seen_pairs,
        pd.Index(model.user_ids.astype(str)),
        pd.Index(model.item_ids.astype(str)),
    )
    retriever = servable(model, history=seen)
    seen_items = evaluation.seen_pairs.groupby(evaluation.seen_pairs["user_id"].astype(str))
    seen_items = seen_items["item_id"].agg(lambda items: [str(i) for i in items])
    catalog_index = pd.Index(evaluation.catalog)
    top = np.full((len(evaluation.user_ids), k), -1, dtype=np.int64)
    lengths = np.zeros(len(evaluation.user_ids), dtype=np.int64)
    for row, user in enumerate(evaluation.user_ids.astype(str)):
        features = (
            evaluation.features.iloc[[row]].reset_index(drop=True)
            if retriever.needs_features
            else None
        )
        served = retriever.recommend(user, features, k, exclude=seen_items.get(user, []))
        items = catalog_index.get_indexer(served.item_ids)
        if (items < 0).any():
            outside = sorted(set(served.item_ids) - set(evaluation.catalog))[:5]
            raise ValueError(
                f"model {model.version or '(unsaved)'} recommends items missing from the "
                f"evaluation catalog (e.g. {outside}); it cannot be compared on this test set"
            )
        top[row, : len(items)] = items
        lengths[row] = len(items)
    return top, lengths


def evaluate_model(model: ServableModel, evaluation: EvaluationSet, k: int = K) -> dict[str, dict]:
    """Metrics of a registry model of any kind on `evaluation`, by what it was judged as
    (`judged()`: the train-part state of a refit two-tower or multi-stage model; the
    other kinds as they serve), through its serving path."""
    judged = model.judged()
    if isinstance(judged, ModelBundle):
        return evaluate_bundle(judged, evaluation, k)
    return evaluate_labels_only(judged, evaluation, k)[0]


def popularity_metrics(evaluation: EvaluationSet, k: int = K) -> dict[str, float]:
    """The popularity baseline on the same test users, with the same seen items masked."""
    return evaluate(popularity_lists(evaluation, k), evaluation.relevant, evaluation.inputs())


def popularity_lists(evaluation: EvaluationSet, k: int = K) -> np.ndarray:
    """The popularity baseline's top k per test user, their seen items masked."""
    users = pd.Index(evaluation.user_ids)
    seen = _pairs_matrix(evaluation.seen_pairs, users, pd.Index(evaluation.catalog))
    baseline = Popularity()
    baseline.counts = evaluation.item_popularity.astype(np.float32)
    return recommend(baseline, np.arange(len(users)), seen, k)


def _training_examples(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    user_index: pd.Index,
    item_index: pd.Index,
    item_position: dict[str, int],
) -> TrainingExamples:
    return TrainingExamples(
        users=user_index.get_indexer(frame["user_id"]).astype(np.int64),
        items=item_index.get_indexer(frame["item_id"]).astype(np.int64),
        user_features=spec.user_vectors(frame),
        recent=spec.recent_item_indices(frame, item_position),
    )


def fit_candidate(
    inputs: TrainingInputs,
    config: TwoTowerConfig,
    ann_min_items: int = DEFAULT_ANN_MIN_ITEMS,
    metadata: dict[str, object] | None = None,
    progress: bool = True,
    log: ProgressLog = silent,
) -> Candidate:
    """Train on the train part, stop early on validation NDCG@10, evaluate on test.

    With `config.refit` (the default), the bundle that is registered and served is then
    the same configuration, seed and feature spec refit on every label (train,
    validation and test) for the validated number of epochs: it knows the newest labels
    and every user and item with any history. The metrics and gates stay about the
    train-part weights, which the bundle keeps (`bundle.evaluated`, `bundle.judged()`).
    """
    examples = inputs.examples.assign(
        user_id=inputs.examples["user_id"].astype(str),
        item_id=inputs.examples["item_id"].astype(str),
    )
    items = inputs.items.assign(item_id=inputs.items["item_id"].astype(str))
    inputs = TrainingInputs(
        examples, inputs.user_snapshots, items, inputs.text_embeddings, inputs.cutoffs
    )
    item_ids = items["item_id"].to_numpy()
    item_index = pd.Index(item_ids)
    if not item_index.is_unique:
        raise ValueError("the item frame lists an item twice")
    unknown = set(examples["item_id"]) - set(item_ids)
    if unknown:
        raise ValueError(f"labels name items missing from the catalog: {sorted(unknown)[:5]}")
    user_ids = np.sort(examples["user_id"].unique())
    user_index = pd.Index(user_ids)
    train = examples.loc[examples["split"] == "train"]
    if train.empty:
        raise ValueError("the training part is empty; check the temporal cut-offs")
    spec = FeatureSpec.fit(train, items, inputs.text_embeddings.shape[1])
    item_features = spec.item_vectors(items, inputs.text_embeddings)
    train_history = _pairs_matrix(train, user_index, item_index)
    item_position = {item: n for n, item in enumerate(item_ids)}
    validation = evaluation_set(inputs, "valid", inputs.cutoffs.valid_start)
    valid_users = user_index.get_indexer(validation.user_ids)
    valid_features = spec.user_vectors(validation.features)
    valid_recent = spec.recent_item_indices(validation.features, item_position)
    valid_seen = _pairs_matrix(validation.seen_pairs, user_index, item_index)[valid_users]

    def validate(model: TwoTowerModel) -> float:
        scores = score_users(model, valid_users, valid_features, train_history, valid_recent)
        return ndcg_at_k(top_k_unseen(scores, valid_seen, K), validation.relevant)

    result = train_two_tower(
        _training_examples(train, spec, user_index, item_index, item_position),
        train_history,
        item_features,
        config,
        validate,
        progress,
        log,
    )
    all_history = _pairs_matrix(examples, user_index, item_index)
    evaluated = ModelBundle(
        model=result.model,
        config=config,
        spec=spec,
        user_ids=user_ids.astype(object),
        item_ids=item_ids.astype(object),
        history=all_history,
        item_popularity=np.asarray(all_history.sum(axis=0)).ravel(),
        index=RetrievalIndex.build(item_vectors_of(result.model), ann_min_items),
    )
    test = evaluation_set(inputs, "test", inputs.cutoffs.test_start)
    lists = ranked_bundle(evaluated, test)
    metrics = segment_metrics(lists, test)
    evaluated.metadata = {
        **(metadata or {}),
        "tenants": sorted(examples["tenant_id"].astype(str).unique().tolist()),
        "best_epoch": result.best_epoch,
        "valid_ndcg@10": result.best_score,
        "evaluated": {
            "weights_sha256": weights_sha256(result.model),
            "best_epoch": result.best_epoch,
            "valid_ndcg@10": result.best_score,
            "examples": len(train),
            # trained on labels before the validation cut-off, stopped on those before this
            "labels_before": inputs.cutoffs.test_start.isoformat(),
            "test": metrics["all"],
        },
    }
    bundle = evaluated
    if config.refit:
        epochs = result.best_epoch + 1
        refit = refit_two_tower(
            _training_examples(examples, spec, user_index, item_index, item_position),
            all_history,
            item_features,
            config,
            epochs,
            progress,
            log,
        )
        bundle = refit_bundle(
            evaluated,
            refit,
            RetrievalIndex.build(item_vectors_of(refit), ann_min_items),
            {"weights_sha256": weights_sha256(refit), "epochs": epochs, "examples": len(examples)},
        )
    return Candidate(
        bundle=bundle,
        metrics=metrics,
        evaluation=test,
        lists=lists,
        history=result.history,
    )


def shuffle_training_labels(inputs: TrainingInputs, seed: int) -> TrainingInputs:
    """Negative control: permute which item each train-part label points at.

    Validation and test stay true, so a model that learned nothing is measured honestly
    and the gates must block it.
    """
    examples = inputs.examples.copy()
    train = examples["split"] == "train"
    shuffled = np.random.default_rng(seed).permutation(examples.loc[train, "item_id"].to_numpy())
    examples.loc[train, "item_id"] = shuffled
    return replace(inputs, examples=examples)


def champion_served_share(examples: pd.DataFrame, champion_version: str | None) -> float:
    """Share of the test part's labels that answered lists the champion served."""
    test = examples.loc[examples["split"] == "test"]
    if champion_version is None or test.empty or "model_version" not in test:
        return 0.0
    served = test["model_version"].eq(champion_version).fillna(False).astype(bool)
    return float(served.mean())


def judged_labels_before(model: ServableModel) -> str | None:
    """Up to when (exclusive) the labels the model's judged weights saw go (recorded under
    `evaluated` by a kind that keeps a judged state, at the top by EASE); None when the
    model does not record it (popularity, or a model older than the record)."""
    evaluated = model.metadata.get("evaluated") or {}
    return evaluated.get("labels_before", model.metadata.get("labels_before"))


def _labels_seen_in_window(champion: ServableModel | None, window: str | None) -> str:
    """Why the champion's judged weights may have seen the labels of a test window that
    starts at `window` ("" if they cannot have, or either model predates the record)."""
    seen = judged_labels_before(champion) if champion is not None else None
    if seen is None or window is None or pd.Timestamp(seen) <= pd.Timestamp(window):
        return ""
    return (
        f"the champion's evaluated weights saw labels up to {seen}, after this test window "
        f"starts ({window}): the comparison favours the champion"
    )


@dataclass(frozen=True)
class Rival:
    """The champion a candidate is held against: the model (what its judged weights saw)
    and its metrics on the candidate's test set, scored once for the gate and the chart."""

    model: ServableModel
    metrics: dict[str, float]

    @classmethod
    def scored(cls, champion: ServableModel, evaluation: EvaluationSet) -> Rival:
        return cls(champion, evaluate_model(champion, evaluation)["all"])


def metric_gates(
    lists: np.ndarray,
    evaluation: EvaluationSet,
    labels_before: str | None,
    rival: Rival | None,
    config: GateConfig,
    champion_served_share: float = 0.0,
) -> list[GateResult]:
    """The gates on a candidate's top-K `lists` for the test users, whatever its kind:
    against popularity (a paired comparison, user by user, on the same users with the same
    seen items masked) and against the champion (`rival`, of any kind, scored by the
    weights it was judged as) on the same test set. `labels_before`: up to when the candidate's
    judged weights saw labels, the start of its test window.

    The champion is scored through `champion.judged()` when it is a refit two-tower: the
    weights trained on its train part, not the refit, which saw every label up to its
    data end and so most of a later test window when little data has arrived since.
    Those weights saw only labels before the champion's own test cut-off, which precedes
    a later candidate's test window whenever data only grows (new data, a drift holdout).
    A holdout placed back in time can start the window earlier: then the champion has
    seen part of it, the comparison favours it (the gate may block a good candidate,
    never pass a bad one), and the gate's detail says so.
    """
    inputs = evaluation.inputs()
    metrics = evaluate(lists, evaluation.relevant, inputs)
    baseline = popularity_lists(evaluation)
    popularity = evaluate(baseline, evaluation.relevant, inputs)
    champion_metrics = rival.metrics if rival else None
    regression = no_regression(metrics, champion_metrics, config, champion_served_share)
    overlap = _labels_seen_in_window(rival.model if rival else None, labels_before)
    if overlap:
        regression = replace(regression, detail=f"{regression.detail}; {overlap}")
    return [
        lift_over_popularity(
            ndcg_per_user(lists, evaluation.relevant),
            ndcg_per_user(baseline, evaluation.relevant),
            config,
        ),
        regression,
        *coverage_and_bias(metrics, popularity, config),
    ]


def candidate_gates(
    candidate: Candidate,
    rival: Rival | None,
    config: GateConfig,
    champion_served_share: float = 0.0,
    sample_users: int = 200,
) -> list[GateResult]:
    """Every promotion gate for a two-tower `candidate`: `metric_gates` on the metrics of
    the weights it was judged as; sanity on the weights that would serve."""
    bundle, evaluation = candidate.bundle, candidate.evaluation
    metrics = metric_gates(
        candidate.lists,
        evaluation,
        judged_labels_before(bundle),
        rival,
        config,
        champion_served_share,
    )
    retriever = Retriever(bundle)
    rows = [
        i
        for i, user in enumerate(evaluation.user_ids[:sample_users])
        if user in retriever.user_index
    ]
    users = np.array([retriever.user_index[evaluation.user_ids[i]] for i in rows], dtype=np.int64)
    features = evaluation.features.iloc[rows].reset_index(drop=True)
    scores = retriever.user_vectors(users, features) @ bundle.index.vectors.T
    return [
        *metrics,
        *sanity(
            weight_arrays(bundle.model), scores, len(bundle.index), len(bundle.item_ids), config
        ),
    ]


def ease_sanity(
    model: EaseModel, evaluation: EvaluationSet, config: GateConfig, sample_users: int = 200
) -> list[GateResult]:
    """Sanity of an EASE model's item-to-item weights: finite, scores of sampled test users
    that vary, a row and a column for every catalog item."""
    retriever = EaseRetriever(model)
    rows = [
        retriever.user_index[user]
        for user in evaluation.user_ids[:sample_users]
        if user in retriever.user_index
    ]
    scores = retriever.score_rows(np.asarray(rows, dtype=np.int64))
    return sanity([model.weights], scores, min(model.weights.shape), len(model.item_ids), config)


def multi_stage_sanity(
    model: MultiStageModel, evaluation: EvaluationSet, config: GateConfig, sample_users: int = 200
) -> list[GateResult]:
    """Sanity of a multi-stage model's served state: finite source arrays, ranker scores of
    sampled test users' candidates that vary, every source scoring the whole catalog."""
    retriever = MultiStageRetriever(model)
    users = [user for user in evaluation.user_ids[:sample_users] if user in retriever.user_index]
    queries = retriever.queries(users, [[] for _ in users])
    recommender = model.recommender
    covered = min(s.shape[1] for s in recommender.source_scores(queries).values())
    scores = recommender.ranker.predict(recommender.candidates(queries).features)
    return sanity(model.weight_arrays(), scores, covered, len(model.item_ids), config)


def save_inputs(inputs: TrainingInputs, root: Path) -> Path:
    """Write the inputs under `root/<sha256 of their content>/` and return that directory."""
    staging = root / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    items = inputs.items.assign(text_embedding=list(inputs.text_embeddings))
    frames = {"examples": inputs.examples, "user_snapshots": inputs.user_snapshots, "items": items}
    for name, frame in frames.items():
        frame.to_parquet(staging / f"{name}.parquet", index=False)
    (staging / "cutoffs.json").write_text(json.dumps(inputs.cutoffs.to_metadata(), sort_keys=True))
    digest = hashlib.sha256()
    for path in sorted(staging.iterdir()):
        digest.update(path.name.encode() + sha256_file(path).encode())
    target = root / digest.hexdigest()[:16]
    if target.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return target


def load_inputs(directory: Path) -> TrainingInputs:
    items = pd.read_parquet(directory / "items.parquet")
    cutoffs = json.loads((directory / "cutoffs.json").read_text())
    return TrainingInputs(
        examples=pd.read_parquet(directory / "examples.parquet"),
        user_snapshots=pd.read_parquet(directory / "user_snapshots.parquet"),
        items=items.drop(columns="text_embedding"),
        text_embeddings=np.stack(items["text_embedding"].to_numpy()).astype(np.float32),
        cutoffs=TemporalCutoffs(
            pd.Timestamp(cutoffs["valid_start"]), pd.Timestamp(cutoffs["test_start"])
        ),
    )
