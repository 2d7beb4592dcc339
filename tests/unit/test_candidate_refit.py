"""The candidate is judged by its train-part weights and served refit on every label."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from recloop.evaluation.gates import GateConfig
from recloop.inference.retrievers import Retriever
from recloop.models.configs import TwoTowerConfig
from recloop.models.model_artifact import (
    EVALUATED_WEIGHTS,
    MANIFEST,
    WEIGHTS,
    load_bundle,
    save_bundle,
    weights_sha256,
)
from recloop.training.candidate import (
    Candidate,
    Rival,
    candidate_gates,
    evaluate_bundle,
    fit_candidate,
)
from tests.model_fixtures import tiny_training_inputs

CONFIG = TwoTowerConfig(dim=8, hidden=16, batch_size=8, epochs=30, patience=5, lr=0.02, seed=1)


@pytest.fixture(scope="module")
def refit() -> Candidate:
    return fit_candidate(tiny_training_inputs(), CONFIG, progress=False)


@pytest.fixture(scope="module")
def not_refit() -> Candidate:
    return fit_candidate(tiny_training_inputs(), replace(CONFIG, refit=False), progress=False)


def test_the_served_model_knows_every_user_and_item_with_history(refit) -> None:
    bundle, examples = refit.bundle, tiny_training_inputs().examples
    served = dict(zip(bundle.user_ids, bundle.model.known_users.tolist(), strict=True))
    assert {user for user, known in served.items() if known} == set(examples["user_id"])
    judged = dict(zip(bundle.user_ids, bundle.judged().model.known_users.tolist(), strict=True))
    # u3 and u7 have labels only in the test part: the judged weights never saw them
    assert [user for user, known in judged.items() if not known] == ["u3", "u7"]
    known_items = set(bundle.item_ids[bundle.model.known_items.numpy()])
    assert known_items == set(examples["item_id"]) and {"i4", "i5"} <= known_items


def test_every_user_with_history_is_served_by_the_model(refit) -> None:
    retriever = Retriever(refit.bundle)
    for user in refit.bundle.user_ids:
        assert retriever.recommend(str(user), None, k=3).fallback is None


def test_metrics_are_those_of_the_run_without_refit(refit, not_refit) -> None:
    assert refit.metrics == not_refit.metrics
    assert not_refit.bundle.evaluated is None and "refit" not in not_refit.bundle.metadata
    metadata = refit.bundle.metadata
    assert metadata["evaluated"] == not_refit.bundle.metadata["evaluated"]
    assert metadata["evaluated"]["test"] == refit.metrics["all"]
    assert metadata["evaluated"]["weights_sha256"] == weights_sha256(not_refit.bundle.model)
    assert metadata["evaluated"]["weights_sha256"] == weights_sha256(refit.bundle.judged().model)
    assert metadata["refit"] == {
        "weights_sha256": weights_sha256(refit.bundle.model),
        "epochs": metadata["best_epoch"] + 1,
        "examples": len(tiny_training_inputs().examples),
    }
    assert metadata["refit"]["weights_sha256"] != metadata["evaluated"]["weights_sha256"]


def test_both_weight_sets_are_saved_under_the_hashes_the_metadata_records(refit, tmp_path) -> None:
    version = save_bundle(refit.bundle, tmp_path / "m")
    files = json.loads((tmp_path / "m" / MANIFEST).read_text())["files"]
    metadata = refit.bundle.metadata
    assert files[WEIGHTS] == metadata["refit"]["weights_sha256"]
    assert files[EVALUATED_WEIGHTS] == metadata["evaluated"]["weights_sha256"]
    served = load_bundle(tmp_path / "m", version)
    assert served.evaluated is None
    with pytest.raises(ValueError, match="with_evaluated=True"):
        served.judged()
    both = load_bundle(tmp_path / "m", version, with_evaluated=True)
    assert weights_sha256(both.model) == metadata["refit"]["weights_sha256"]
    assert weights_sha256(both.judged().model) == metadata["evaluated"]["weights_sha256"]
    assert evaluate_bundle(both.judged(), refit.evaluation) == refit.metrics


def test_a_refit_champion_is_compared_by_the_weights_it_was_judged_as(refit) -> None:
    # The same training set: the refit champion saw every test label, its judged weights none.
    results = candidate_gates(refit, Rival.scored(refit.bundle, refit.evaluation), GateConfig())
    regression = next(r for r in results if r.name == "no_regression_vs_champion")
    ndcg = refit.metrics["all"]["ndcg@10"]
    assert regression.passed and f"vs champion {ndcg:.4f}" in regression.detail
    assert "favours the champion" not in regression.detail
    evaluated = refit.bundle.metadata["evaluated"]
    later = replace(
        refit.bundle,
        metadata={
            **refit.bundle.metadata,
            "evaluated": {**evaluated, "labels_before": "2030-01-01T00:00:00+00:00"},
        },
    )
    results = candidate_gates(refit, Rival.scored(later, refit.evaluation), GateConfig())
    regression = next(r for r in results if r.name == "no_regression_vs_champion")
    assert "the comparison favours the champion" in regression.detail
