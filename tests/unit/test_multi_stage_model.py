"""The multi-stage recommender as a registered model kind: fit, artifact, retriever,
registry, spec and judgement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recloop.evaluation.gates import GateConfig, GateResult
from recloop.experiments import load_spec
from recloop.features.training_set import TemporalCutoffs
from recloop.inference.policies import Greedy, Policy
from recloop.inference.retrievers import (
    POPULARITY_FALLBACK,
    MultiStageRetriever,
    Servable,
    servable,
)
from recloop.models.configs import MultiStageConfig
from recloop.models.model_artifact import MANIFEST, CorruptArtifactError
from recloop.models.multi_stage_model import (
    MultiStageModel,
    fit_multi_stage,
    load_multi_stage,
    save_multi_stage,
)
from recloop.registry.model_registry import Registry
from recloop.training.candidate import TrainingInputs
from recloop.training.chain import MULTI_STAGE, GatePlan, ModelRecipe, judge, train
from tests.spec_fixtures import against_champion_spec, spec_problems

N_USERS, N_ITEMS, DAYS = 80, 40, 14
START = pd.Timestamp("2026-01-01", tz="UTC")
CUTOFFS = TemporalCutoffs(START + pd.Timedelta(days=10), START + pd.Timedelta(days=12))
CATALOG = np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object)
GENRES = ["Drama" if i < N_ITEMS // 2 else "Comedy" for i in range(N_ITEMS)]
# Small data: the ranker's leaves may hold a few candidates.
CONFIG = MultiStageConfig(ranker_min_data_in_leaf=5, seed=3)


def examples() -> pd.DataFrame:
    """Two taste groups, each liking its half of the catalog (two random picks aside), one
    label a day per user, so every user has labels before and after each cut-off."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(N_USERS):
        liked = rng.choice(N_ITEMS // 2, size=12, replace=False) + (user % 2) * N_ITEMS // 2
        noise = rng.choice(N_ITEMS, size=2, replace=False)
        for day, item in enumerate(rng.permutation(np.unique(np.concatenate([liked, noise])))):
            at = START + pd.Timedelta(days=day, minutes=user)
            rows.append(("t", f"u{user}", f"i{item}", at))
    return pd.DataFrame(rows, columns=["tenant_id", "user_id", "item_id", "event_timestamp"])


def item_features() -> np.ndarray:
    return np.eye(2, dtype=np.float32)[[int(g == "Comedy") for g in GENRES]]


@pytest.fixture(scope="module")
def model() -> MultiStageModel:
    return fit_multi_stage(
        examples(), CATALOG, item_features(), CUTOFFS.test_start, CONFIG, {"training_set": "ts"}
    )


def recent(*items: str) -> dict[str, list]:
    """One request's online features as Feast answers them; only the last items are set."""
    return {"user_stream__last_items": [list(items) if items else None]}


def known_items(model: MultiStageModel, user: str) -> set[str]:
    row = list(model.user_ids).index(user)
    return {str(model.item_ids[i]) for i in model.history[row].indices}


# --- fit and artifact ------------------------------------------------------------------


def test_the_judged_state_never_saw_the_test_part_and_the_served_one_saw_everything(
    model,
) -> None:
    labels = examples()
    before = int((labels["event_timestamp"] < CUTOFFS.test_start).sum())
    assert model.evaluated.history.nnz == before < model.recommender.history.nnz == len(labels)
    assert model.history.nnz == len(labels)
    judged = model.judged()
    assert judged.recommender is model.evaluated and "refit" not in judged.metadata
    evaluated, refit = model.metadata["evaluated"], model.metadata["refit"]
    assert evaluated["labels_before"] == CUTOFFS.test_start.isoformat()
    assert (evaluated["labels"], refit["labels"]) == (before, len(labels))
    for record in (evaluated, refit):
        stages = record["stages"]
        assert stages["label_window"]["kind"] == "mixed"
        assert set(stages["candidate_recall"]) == {
            "item_to_item@100",
            "matrix_factorisation@50",
            "trending@30",
            "recent_neighbours@50",
            "merged",
        }
        assert stages["ranker"]["rounds"] >= 1 and "item_to_item_z" in stages["ranker"]["gain"]
    assert model.metadata["tenants"] == ["t"]


def test_save_and_load_round_trip_scores_identically(model, tmp_path: Path) -> None:
    version = save_multi_stage(model, tmp_path / "one")
    assert version.startswith("ms-") and model.version == version
    manifest = json.loads((tmp_path / "one" / MANIFEST).read_text())
    # both states' hashes, in the manifest and in the metadata
    for state, record in (("served", "refit"), ("judged", "evaluated")):
        assert manifest["files"][f"{state}.npz"] == model.metadata[record]["arrays_sha256"]
        assert manifest["files"][f"{state}_ranker.txt"] == model.metadata[record]["ranker_sha256"]
    loaded = load_multi_stage(tmp_path / "one", version, with_evaluated=True)
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(loaded.recommender.score(users), model.recommender.score(users))
    np.testing.assert_array_equal(loaded.evaluated.score(users), model.evaluated.score(users))
    assert (loaded.history != model.history).nnz == 0
    assert (loaded.config, loaded.metadata, loaded.version) == (CONFIG, model.metadata, version)
    for name in ("u3", "u4"):
        assert servable(loaded).recommend(name, recent("i1"), 10) == servable(model).recommend(
            name, recent("i1"), 10
        )
    # the same content, the same version
    assert save_multi_stage(loaded, tmp_path / "two") == version
    # serving needs only the served state; judging a model loaded so is refused
    served_only = load_multi_stage(tmp_path / "one", version)
    assert served_only.evaluated is None
    with pytest.raises(ValueError, match="with_evaluated=True"):
        served_only.judged()


def test_a_tampered_artifact_is_refused(model, tmp_path: Path) -> None:
    version = save_multi_stage(model, tmp_path / "m")
    for name in ("served.npz", "judged_ranker.txt"):
        path = tmp_path / "m" / name
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(CorruptArtifactError, match="does not match the manifest"):
            load_multi_stage(tmp_path / "m", version, with_evaluated=True)
        path.write_bytes(original)
    manifest_path = tmp_path / "m" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "config": {**manifest["config"], "seed": 4}}))
    with pytest.raises(CorruptArtifactError, match="does not match its version"):
        load_multi_stage(tmp_path / "m")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="expected ms-0000"):
        load_multi_stage(tmp_path / "m", expected_version="ms-0000000000000000")
    assert load_multi_stage(tmp_path / "m", version).version == version


# --- serving ---------------------------------------------------------------------------


def test_a_known_user_never_gets_what_they_had_recently_had_or_excluded(model) -> None:
    retriever = servable(model)
    assert isinstance(retriever, MultiStageRetriever) and retriever.needs_features
    user = "u3"  # likes the second half of the catalog
    had = known_items(model, user)
    assert retriever.interactions(user) == len(had)
    result = retriever.recommend(user, None, 10)
    assert result.fallback is None and len(result.item_ids) == 10
    assert not had & set(result.item_ids)
    assert sum(int(i[1:]) >= N_ITEMS // 2 for i in result.item_ids[:5]) >= 4
    unseen = [str(i) for i in CATALOG if str(i) not in had]
    streamed = unseen[:2]
    with_recent = retriever.recommend(user, recent(*streamed), 10, exclude=[unseen[2]])
    assert not (had | {*streamed, unseen[2]}) & set(with_recent.item_ids)
    assert with_recent.fallback is None and len(with_recent.item_ids) == 10


def test_a_user_the_model_does_not_know_is_scored_from_their_recent_items(model) -> None:
    retriever = servable(model)
    first_half = retriever.recommend("newcomer", recent("i0", "i1", "i2"), 5)
    assert first_half.fallback is None
    assert not {"i0", "i1", "i2"} & set(first_half.item_ids)
    assert all(int(i[1:]) < N_ITEMS // 2 for i in first_half.item_ids)
    second_half = retriever.recommend("newcomer", recent("i30", "i31"), 5)
    assert all(int(i[1:]) >= N_ITEMS // 2 for i in second_half.item_ids)
    # ALS has no factors for them: it proposes nothing and its features are missing
    queries = retriever.queries(["newcomer"], [[0, 1, 2]])
    assert queries.users.tolist() == [-1]
    table = model.recommender.candidates(queries)
    assert table.features["matrix_factorisation_z"].isna().all()
    assert table.features["matrix_factorisation_log_rank"].isna().all()
    assert table.features["item_to_item_z"].notna().all()
    assert retriever.similar_items("i1", 5) == retriever.recommend("newcomer", recent("i1"), 5)


def test_nobody_gets_the_popularity_fallback_and_says_so(model) -> None:
    retriever = servable(model)
    counts = np.asarray(model.history.sum(axis=0)).ravel()
    popular = [str(CATALOG[i]) for i in np.argsort(-counts, kind="stable")[:3]]
    for features in (None, recent(), {"user_features__mean_rating": [4.0]}):
        result = retriever.recommend("nobody", features, 3)
        assert result.fallback == POPULARITY_FALLBACK and result.item_ids == popular
    assert popular[0] not in retriever.recommend("nobody", None, 3, exclude=[popular[0]]).item_ids


def test_the_batch_path_and_the_one_user_path_give_the_same_lists(model) -> None:
    """The bench scores fitted users by index in batches; the service scores one request
    from its known history. Both are `score_queries`: the same scores, the same top 10.
    Offline evaluation scores the judged state with the history known at the cut-off."""
    users = np.arange(0, N_USERS, 7)
    names = [str(model.user_ids[u]) for u in users]
    for judged in (model, model.judged()):
        recommender = judged.recommender
        batch = recommender.score(users)
        seen = recommender.history[users].toarray() > 0
        retriever = MultiStageRetriever(judged, history=recommender.history)
        queries = retriever.queries(names, [[] for _ in names])
        np.testing.assert_array_equal(recommender.score_queries(queries), batch)
        for row, name in enumerate(names):
            allowed = np.flatnonzero(~seen[row])
            top = allowed[np.lexsort((allowed, -batch[row, allowed]))[:10]]
            served = retriever.recommend(name, None, 10)
            assert served.item_ids == [str(CATALOG[i]) for i in top], name


# --- registry and spec -----------------------------------------------------------------


def test_the_registry_stores_verifies_and_loads_the_multi_stage_kind(model, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version = registry.register(model, {"experiment": "ab"}, {"gate": {"passed": True}})
    assert registry.path(version) == tmp_path / "registry" / "models" / "multi_stage" / version
    assert registry.manifest(version)["kind"] == "multi_stage"
    loaded = registry.load(version, with_evaluated=True)
    assert isinstance(loaded, MultiStageModel) and loaded.judged().version == version
    registry.promote(version, reason="test")
    assert registry.champion() == version
    (registry.path(version) / "served_ranker.txt").write_text("tree\n")
    with pytest.raises(CorruptArtifactError):
        registry.load(version)


def test_a_spec_may_train_the_multi_stage_recommender_and_its_params_are_checked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ms_ab.yaml"
    path.write_text(
        against_champion_spec(
            "ms_ab", "ranked", "multi_stage", "{ease_l2: 250.0, trending_candidates: 10}"
        )
    )
    spec = load_spec(path)
    variant = spec.variants["ranked"]
    assert variant.algorithm == "multi_stage" and variant.trains
    assert variant.params == {"ease_l2": 250.0, "trending_candidates": 10}
    path.write_text(
        against_champion_spec("ms_ab", "ranked", "multi_stage", "{two_tower_candidates: 100}")
    )
    # no two-tower source in this kind
    assert any("params.two_tower_candidates: unknown field" in p for p in spec_problems(path))
    path.write_text(
        against_champion_spec("ms_ab", "ranked", "multi_stage", "{label_window_share: 0.9}")
    )
    assert any("params.label_window_share: 0.9 is greater than" in p for p in spec_problems(path))
    path.write_text(
        against_champion_spec(
            "ms_ab", "ranked", "multi_stage", "{}\n    feature_service: retrieval_v2"
        )
    )
    assert any("multi_stage reads no features: remove" in p for p in spec_problems(path))


# --- the chain: train and judge through the serving path --------------------------------


class RecordingOpeGate:
    """The off-policy gate with no logged traffic (it then passes, skipped); keeps what it
    was handed, so the test sees which state was judged."""

    def __init__(self) -> None:
        self.models: list[Servable] = []

    def __call__(self, model: Servable, policy: Policy, config: GateConfig) -> GateResult:
        self.models.append(model)
        return GateResult("ope_vs_logged", True, 0.0, config.ope_min_ess, "skipped: no traffic")


def training_inputs() -> TrainingInputs:
    """`examples` as the labels-only training set: split by time, the catalog with the
    genres and release years the ranker's content features read."""
    labels = examples()
    labels["split"] = CUTOFFS.part_of(labels["event_timestamp"]).to_numpy()
    return TrainingInputs(
        examples=labels,
        user_snapshots=pd.DataFrame(
            {"user_id": pd.Series(dtype=str), "as_of": pd.Series(dtype="datetime64[us, UTC]")}
        ),
        items=pd.DataFrame({"item_id": CATALOG, "genres": GENRES, "release_year": 2000}),
        text_embeddings=np.zeros((N_ITEMS, 0), dtype=np.float32),
        cutoffs=CUTOFFS,
    )


def test_the_chain_trains_the_multi_stage_recommender_and_judges_its_judged_state() -> None:
    inputs = training_inputs()
    params = {"ranker_min_data_in_leaf": 5, "seed": 3}
    trained = train(ModelRecipe(MULTI_STAGE, params), inputs, "ts")
    model = trained.model
    assert isinstance(model, MultiStageModel) and trained.best_epoch is None
    assert trained.metadata["config"] == CONFIG.to_dict()
    assert trained.metadata["evaluated"]["labels_before"] == CUTOFFS.test_start.isoformat()
    shown = trained.stage_metrics()
    assert shown["judged/candidate_recall/merged"] > 0 and shown["served/ranker/rounds"] >= 1
    gate = RecordingOpeGate()
    plan = GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    judgement = judge(model, inputs, plan, gate)
    names = [r.name for r in judgement.results]
    assert names == [
        "lift_over_popularity",
        "no_regression_vs_champion",
        "coverage",
        "popularity_bias",
        "finite_weights",
        "scores_not_constant",
        "index_covers_catalog",
        "ope_vs_logged",
    ]
    # each user likes half the catalog: the sources and the ranker learn it, popularity cannot
    assert judgement.metrics["all"]["ndcg@10"] > 1.5 * judgement.popularity["ndcg@10"]
    assert judgement.passed, judgement.gate()
    (served,) = gate.models
    assert isinstance(served, MultiStageRetriever)
    assert served.recommender is model.evaluated  # the judged state, not the refit


def test_a_multi_stage_champion_is_compared_by_its_judged_state() -> None:
    """Against itself as champion: the champion is scored by its judged state (its served
    one saw the test part), which scores what the candidate's does."""
    inputs = training_inputs()
    model = train(ModelRecipe(MULTI_STAGE, CONFIG.to_dict()), inputs, "ts").model
    plan = GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    judgement = judge(model, inputs, plan, RecordingOpeGate(), "ms-champion", model)
    (regression,) = [r for r in judgement.results if r.name == "no_regression_vs_champion"]
    assert regression.passed and "favours the champion" not in regression.detail
    tolerance = GateConfig().champion_tolerance
    assert regression.threshold == pytest.approx(regression.value * (1 - tolerance))
