"""EASE as a registered model kind: fit, artifact, retriever, registry, spec and judgement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recloop.evaluation.gates import GateConfig, GateResult
from recloop.experiments import load_spec
from recloop.features.training_set import TemporalCutoffs
from recloop.inference.policies import Greedy, Policy
from recloop.inference.retrievers import (
    POPULARITY_FALLBACK,
    EaseRetriever,
    Servable,
    SimilarItems,
    servable,
)
from recloop.models.baselines import ease_weights
from recloop.models.ease_model import (
    ARRAYS,
    L2_GRID,
    RELATIVE_SCORE,
    SEARCH_METRIC,
    EaseModel,
    fit_ease,
    latest_per_user,
    load_ease,
    matrix_sha256,
    save_ease,
    search_l2,
)
from recloop.models.label_matrix import LabelMatrix
from recloop.models.model_artifact import MANIFEST, CorruptArtifactError
from recloop.registry.model_registry import Registry
from recloop.training.chain import EASE, GatePlan, ModelRecipe, judge, train
from tests.model_fixtures import CUTOFFS, tiny_training_inputs
from tests.spec_fixtures import against_champion_spec, spec_problems

UNTIL = pd.Timestamp("2026-12-01", tz="UTC")
CATALOG = np.array(["a", "b", "c", "d", "e", "f"])
# (user, item, stamped before UNTIL): a and b go with c, d with e; u3's "f" comes late.
LABELS = [
    ("u1", "a", True),
    ("u1", "b", True),
    ("u1", "c", True),
    ("u2", "a", True),
    ("u2", "b", True),
    ("u2", "c", True),
    ("u3", "a", True),
    ("u3", "b", True),
    ("u4", "d", True),
    ("u4", "e", True),
    ("u5", "d", True),
    ("u3", "f", False),
]


def examples() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant_id": "t",
            "user_id": [user for user, _, _ in LABELS],
            "item_id": [item for _, item, _ in LABELS],
            "event_timestamp": [
                UNTIL + pd.Timedelta(days=-3 if early else 2, minutes=n)
                for n, (_, _, early) in enumerate(LABELS)
            ],
        }
    )


@pytest.fixture
def model() -> EaseModel:
    return fit_ease(examples(), CATALOG, UNTIL, l2=1.0, metadata={"training_set": "ts"})


def recent(*items: str) -> dict[str, list]:
    """One request's online features as Feast answers them; only the last items are set."""
    return {"user_stream__last_items": [list(items) if items else None]}


# --- fit and artifact ------------------------------------------------------------------


def label_matrix(stamped_before: set[bool]) -> sp.csr_matrix:
    """The 0/1 users x items of the LABELS whose flag is in `stamped_before`."""
    kept = [(user, item) for user, item, before in LABELS if before in stamped_before]
    users = {u: n for n, u in enumerate(["u1", "u2", "u3", "u4", "u5"])}
    items = {i: n for n, i in enumerate(CATALOG)}
    return sp.csr_matrix(
        (np.ones(len(kept)), ([users[u] for u, _ in kept], [items[i] for _, i in kept])),
        shape=(5, 6),
    )


def test_the_gates_judge_weights_solved_before_the_cut_and_the_refit_serves(model) -> None:
    judged = model.judged()
    np.testing.assert_allclose(judged.weights, ease_weights(label_matrix({True}), 1.0))
    # "f" was labelled after the cut: the judged weights know nothing of it
    assert not judged.weights[:, 5].any() and not judged.weights[5].any()
    np.testing.assert_allclose(model.weights, ease_weights(label_matrix({True, False}), 1.0))
    assert model.weights[0, 5] > 0  # the refit saw u3 have a, b and f
    for weights in (model.weights, judged.weights):
        assert weights.dtype == np.float32 and not np.diag(weights).any()
    assert model.history[list(model.user_ids).index("u3"), 5] == 1
    assert model.history.sum() == len(LABELS)
    assert model.metadata == {
        "training_set": "ts",
        "tenants": ["t"],
        "evaluated": {
            "labels": 11,
            "labels_before": UNTIL.isoformat(),
            "weights_sha256": matrix_sha256(judged.weights),
        },
        "refit": {"labels": 12, "weights_sha256": matrix_sha256(model.weights)},
    }
    assert "refit" not in judged.metadata and judged.judged() is judged


def test_without_refit_the_judged_weights_serve() -> None:
    model = fit_ease(examples(), CATALOG, UNTIL, l2=1.0, refit=False)
    assert model.judged() is model and model.evaluated_weights is None
    np.testing.assert_allclose(model.weights, ease_weights(label_matrix({True}), 1.0))
    assert set(model.metadata) == {"tenants", "evaluated"}


def test_a_refit_loaded_for_serving_cannot_be_judged(model, tmp_path: Path) -> None:
    version = save_ease(model, tmp_path / "m")
    served = load_ease(tmp_path / "m", version)
    assert served.evaluated_weights is None
    with pytest.raises(ValueError, match="load it with with_evaluated=True"):
        served.judged()
    judged = load_ease(tmp_path / "m", version, with_evaluated=True).judged()
    np.testing.assert_array_equal(judged.weights, model.judged().weights)


def test_fit_refuses_labels_outside_the_catalog_and_a_non_positive_l2() -> None:
    with pytest.raises(ValueError, match="missing from the catalog"):
        fit_ease(examples(), np.array(["a", "b"]), UNTIL, l2=1.0)
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit_ease(examples(), CATALOG, UNTIL, l2=0.0)


def test_save_and_load_round_trip_with_a_content_version(model, tmp_path: Path) -> None:
    version = save_ease(model, tmp_path / "one")
    assert version.startswith("ease-") and model.version == version
    loaded = load_ease(tmp_path / "one", expected_version=version, with_evaluated=True)
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.evaluated_weights, model.evaluated_weights)
    assert (loaded.history != model.history).nnz == 0
    assert list(loaded.user_ids) == list(model.user_ids) and list(loaded.item_ids) == list(CATALOG)
    assert (loaded.l2, loaded.metadata, loaded.version) == (1.0, model.metadata, version)
    # the same content, the same version; other weights, another one
    assert save_ease(loaded, tmp_path / "two") == version
    other = fit_ease(examples(), CATALOG, UNTIL, l2=2.0)
    assert save_ease(other, tmp_path / "three") != version
    # a refit loaded for serving only would lose its judged weights: not saved again
    with pytest.raises(ValueError, match="without its judged weights"):
        save_ease(load_ease(tmp_path / "one"), tmp_path / "four")


def test_a_tampered_artifact_is_refused(model, tmp_path: Path) -> None:
    version = save_ease(model, tmp_path / "m")
    arrays = tmp_path / "m" / ARRAYS
    original = arrays.read_bytes()
    arrays.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(CorruptArtifactError, match="does not match the manifest"):
        load_ease(tmp_path / "m", expected_version=version)
    arrays.write_bytes(original)
    manifest_path = tmp_path / "m" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "l2": 2.0}))
    with pytest.raises(CorruptArtifactError, match="does not match its version"):
        load_ease(tmp_path / "m")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="expected ease-0000"):
        load_ease(tmp_path / "m", expected_version="ease-0000000000000000")
    assert load_ease(tmp_path / "m", expected_version=version).version == version


# --- serving ---------------------------------------------------------------------------


def test_a_known_user_gets_what_goes_with_their_items_and_never_an_item_they_had(model) -> None:
    retriever = servable(model)
    assert isinstance(retriever, EaseRetriever)
    assert retriever.needs_features and retriever.interactions("u3") == 3
    result = retriever.recommend("u3", None, 10)
    assert result.fallback is None and result.item_ids[0] == "c"
    assert not {"a", "b", "f"} & set(result.item_ids)  # known history, the late label too
    assert len(result.item_ids) == 3  # the rest of the catalog
    excluded = retriever.recommend("u3", recent(), 10, exclude=["c"])
    assert excluded.item_ids == ["d", "e"]
    # a recent item joins the history: it is scored from and never returned
    with_recent = retriever.recommend("u4", recent("a"), 10)
    assert not {"a", "d", "e"} & set(with_recent.item_ids)
    assert with_recent.item_ids[0] in {"b", "c"}


def test_a_user_the_model_does_not_know_is_scored_from_their_recent_items(model) -> None:
    retriever = servable(model)
    result = retriever.recommend("newcomer", recent("d"), 3)
    assert result.fallback is None and result.item_ids[0] == "e" and "d" not in result.item_ids
    np.testing.assert_allclose(result.scores[0], model.weights[3, 4], rtol=1e-6)
    # the same list as "similar to d", which EASE answers from the same weights
    assert isinstance(retriever, SimilarItems)
    assert retriever.similar_items("d", 3) == result
    # several recent items add up; one the model does not know is left out
    two = retriever.recommend("newcomer", recent("a", "b", "unknown-item"), 1)
    assert two.item_ids == ["c"] and two.fallback is None


def test_nobody_gets_the_popularity_fallback_and_says_so(model) -> None:
    retriever = servable(model)
    # labels per item over the whole history: a 3, b 3, c 2, d 2, e 1, f 1 (ties by index)
    for features in (None, recent(), {"user_features__mean_rating": [4.0]}):
        result = retriever.recommend("nobody", features, 3)
        assert result.fallback == POPULARITY_FALLBACK
        assert result.item_ids == ["a", "b", "c"]
    assert retriever.recommend("nobody", None, 2, exclude=["a"]).item_ids == ["b", "c"]


def test_offline_history_overrides_what_the_model_knows(model) -> None:
    """Offline evaluation passes what was known at the test cut-off: both the scored row
    and the popularity fallback's counts come from it, never from later labels."""
    only_d = sp.csr_matrix(([1.0], ([3], [3])), shape=model.history.shape)  # u4 had d
    retriever = EaseRetriever(model, history=only_d)
    assert retriever.recommend("u4", None, 1).item_ids == ["e"]
    assert retriever.recommend("u3", None, 1).item_ids == ["d"]  # knows nothing of u3 now
    assert retriever.recommend("u3", None, 1).fallback == POPULARITY_FALLBACK


def test_unknown_items_have_no_similar_items(model) -> None:
    with pytest.raises(KeyError):
        servable(model).similar_items("zz", 3)


# --- registry and spec -----------------------------------------------------------------


def test_the_registry_stores_verifies_and_loads_the_ease_kind(model, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version = registry.register(model, {"experiment": "ab"}, {"gate": {"passed": True}})
    assert registry.path(version) == tmp_path / "registry" / "models" / "ease" / version
    assert registry.versions() == [version] and registry.manifest(version)["kind"] == "ease"
    loaded = registry.load(version, with_evaluated=True)
    assert isinstance(loaded, EaseModel) and loaded.version == version
    np.testing.assert_array_equal(loaded.weights, model.weights)
    registry.promote(version, reason="test")
    assert registry.champion() == version
    (registry.path(version) / ARRAYS).write_bytes(b"tampered")
    with pytest.raises(CorruptArtifactError):
        registry.load(version)


def test_a_spec_may_train_ease_and_its_params_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "ease_ab.yaml"
    path.write_text(against_champion_spec("ease_ab", "ease", "ease", "{l2: 250.0}"))
    spec = load_spec(path)
    assert spec.variants["ease"].algorithm == "ease" and spec.variants["ease"].trains
    assert spec.variants["ease"].params == {"l2": 250.0}
    path.write_text(against_champion_spec("ease_ab", "ease", "ease", "{l3: 250.0}"))
    assert any(p.endswith("variants.ease.params.l3: unknown field") for p in spec_problems(path))
    path.write_text(against_champion_spec("ease_ab", "ease", "ease", "{l2: 0}"))
    assert any(
        "params.l2: 0 is less than or equal to the minimum" in p for p in spec_problems(path)
    )
    path.write_text(
        against_champion_spec("ease_ab", "ease", "ease", "{}\n    feature_service: retrieval_v2")
    )
    assert any("ease reads no features: remove feature_service" in p for p in spec_problems(path))


# --- the chain: train and judge through the serving path --------------------------------


class RecordingOpeGate:
    """The off-policy gate with no logged traffic (it then passes, skipped); keeps what it
    was handed, so the test sees that the served model was judged."""

    def __init__(self) -> None:
        self.models: list[Servable] = []

    def __call__(self, model: Servable, policy: Policy, config: GateConfig) -> GateResult:
        self.models.append(model)
        return GateResult("ope_vs_logged", True, 0.0, config.ope_min_ess, "skipped: no traffic")


def test_the_chain_trains_ease_and_judges_it_with_the_promotion_gates() -> None:
    """The tiny world: u2 and u6 go on to i4 / i5 in the test part, as u0, u1 / u4, u5 did
    before the cut; EASE learns it from co-occurrence, popularity cannot."""
    inputs = tiny_training_inputs()
    trained = train(ModelRecipe(EASE, {"l2": 1.0, "search_l2": False}), inputs, "ts")
    assert isinstance(trained.model, EaseModel) and trained.best_epoch is None
    assert trained.metadata == {
        "config": {"l2": 1.0, "search_l2": False, "refit": True},
        "l2": 1.0,
        "evaluated": trained.model.metadata["evaluated"],
        "refit": trained.model.metadata["refit"],
    }
    evaluated = trained.model.metadata["evaluated"]
    assert evaluated["labels_before"] == CUTOFFS.test_start.isoformat()
    assert trained.model.metadata["refit"]["labels"] > evaluated["labels"]
    gate = RecordingOpeGate()
    plan = GatePlan(GateConfig(), against_champion=False, policy=Greedy())
    judgement = judge(trained.model, inputs, plan, gate)
    names = [r.name for r in judgement.results]
    assert names == [
        "lift_over_popularity",
        "coverage",
        "popularity_bias",
        "finite_weights",
        "scores_not_constant",
        "index_covers_catalog",
        "ope_vs_logged",
    ]
    assert judgement.metrics["all"]["ndcg@10"] > judgement.popularity["ndcg@10"]
    assert judgement.passed, judgement.gate()
    (served,) = gate.models
    assert isinstance(served, EaseRetriever) and served.version == trained.model.version


def test_the_same_training_set_gives_the_same_version_in_any_data_directory(tmp_path) -> None:
    """The model records its training set by content hash, not path: two machines (or
    data directories) that train on the same inputs register the same version."""
    inputs, recipe = tiny_training_inputs(), ModelRecipe(EASE, {"l2": 1.0, "search_l2": False})
    here = train(recipe, inputs, "/data/a/training/358c3f203a2c2fbc")
    there = train(recipe, inputs, "/mnt/b/training/358c3f203a2c2fbc")
    assert here.model.metadata["training_set"] == "358c3f203a2c2fbc"
    versions = {
        Registry(tmp_path / name).register(trained.model, {}, {})
        for name, trained in (("a", here), ("b", there))
    }
    assert len(versions) == 1


def test_a_champion_of_any_kind_is_compared_on_the_same_test_set() -> None:
    """Against an EASE champion fitted on every label (the test part too): the candidate
    is compared, and the detail says the champion saw the test window."""
    inputs = tiny_training_inputs()
    candidate = train(ModelRecipe(EASE, {"l2": 1.0}), inputs, "ts").model
    later = CUTOFFS.test_start + pd.Timedelta(days=2)
    catalog = inputs.items["item_id"].to_numpy()
    champion = fit_ease(inputs.examples, catalog, later, l2=1.0)
    plan = GatePlan(GateConfig(), against_champion=True, policy=Greedy())
    judgement = judge(candidate, inputs, plan, RecordingOpeGate(), "ease-champion", champion)
    (regression,) = [r for r in judgement.results if r.name == "no_regression_vs_champion"]
    assert "vs champion" in regression.detail and "favours the champion" in regression.detail


def search_world(test_seed: int, test_labels: int) -> pd.DataFrame:
    """Two groups of 30 users, each liking its own 10 of 40 items: 4 labels a user before
    the validation cut, 2 in validation (seed 0), `test_labels` random ones in test."""
    liking, testing = np.random.default_rng(0), np.random.default_rng(test_seed)
    rows = []
    for user in range(60):
        liked = np.arange(10) + (0 if user < 30 else 10)
        drawn = (
            (0, liking.choice(liked, 4, replace=False)),
            (1, liking.choice(liked, 2, replace=False)),
            (2, testing.choice(40, test_labels, replace=False)),
        )
        for day, items in drawn:
            rows += [(f"u{user}", f"i{item}", UNTIL + pd.Timedelta(days=day - 2)) for item in items]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])


def test_search_l2_picks_the_best_validation_score_and_never_reads_the_test_part() -> None:
    catalog = np.array([f"i{i}" for i in range(40)])
    cutoffs = TemporalCutoffs(UNTIL - pd.Timedelta(days=1), UNTIL)
    grid = (0.1, 10.0, 1_000.0)
    search = search_l2(search_world(1, 2), catalog, cutoffs, grid)
    assert [t["l2"] for t in search.trials] == list(grid)
    for holdout in ("temporal", "latest_per_user"):
        scores = [t[f"{holdout}/{SEARCH_METRIC}"] for t in search.trials]
        assert all(0 < s <= 1 for s in scores)
    relative = [t[RELATIVE_SCORE] for t in search.trials]
    assert search.l2 == grid[int(np.argmax(relative))] and max(relative) <= 1
    # other test labels (different draws, more of them): the same search
    again = search_l2(search_world(2, 5), catalog, cutoffs, grid)
    assert again == search
    world = search_world(1, 2)
    train_only = world[world["event_timestamp"] < cutoffs.valid_start]
    alone = search_l2(train_only, catalog, cutoffs, grid)
    assert {key for t in alone.trials for key in t} == {
        "l2",
        f"latest_per_user/{SEARCH_METRIC}",
        RELATIVE_SCORE,
    }
    single_labels = train_only.drop_duplicates("user_id")
    with pytest.raises(ValueError, match="no validation labels"):
        search_l2(single_labels, catalog, cutoffs, grid)


def test_the_latest_labels_of_each_user_are_held_out_by_time() -> None:
    stamps = [UNTIL + pd.Timedelta(hours=h) for h in (5, 1, 3, 2, 4, 0, 9)]
    examples = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "a", "b", "c"],
            "item_id": ["i0", "i1", "i2", "i3", "i4", "i0", "i1"],
            "event_timestamp": stamps,
        }
    )
    labels = LabelMatrix.of(examples, np.array([f"i{i}" for i in range(5)]))
    everything = np.ones(len(examples), dtype=bool)
    # a's five labels: the latest one (a fifth); b and c have one label each and keep it
    assert latest_per_user(labels, everything, 0.2).tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert latest_per_user(labels, everything, 0.4).tolist() == [1, 0, 0, 0, 1, 0, 0]
    # only the selected labels count: without the 5 h one, the 4 h one is a's latest
    selected = everything.copy()
    selected[0] = False
    assert latest_per_user(labels, selected, 0.2).tolist() == [0, 0, 0, 0, 1, 0, 0]


def test_the_chain_fits_ease_with_the_searched_l2_and_shows_the_search() -> None:
    inputs = tiny_training_inputs()
    trained = train(ModelRecipe(EASE, {}), inputs, "ts")
    search = search_l2(inputs.examples, inputs.items["item_id"].to_numpy(), inputs.cutoffs)
    assert trained.model.l2 == search.l2 == trained.metadata["l2"]
    assert trained.metadata["l2_search"] == search.trials
    shown = trained.stage_metrics()
    # per L2: each hold-out's NDCG and the relative score; then l2 and the two fits' labels
    assert shown["l2"] == search.l2 and len(shown) == 3 * len(L2_GRID) + 3
    assert shown["refit/labels"] == len(inputs.examples) > shown["evaluated/labels"]
