"""Saved models load back identically, and anything tampered with is refused."""

import copy
import json

import numpy as np
import pytest

from recloop.features.feature_vectors import STREAM_VIEW, empty_user_row
from recloop.inference.retrievers import POPULARITY_FALLBACK, Retriever
from recloop.models.model_artifact import (
    INDEX,
    MANIFEST,
    WEIGHTS,
    CorruptArtifactError,
    load_bundle,
    save_bundle,
)
from tests.model_fixtures import tiny_bundle, user_frame


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle()


def test_round_trip_gives_the_same_recommendations(bundle, tmp_path) -> None:
    version = save_bundle(bundle, tmp_path / "m")
    loaded = load_bundle(tmp_path / "m", expected_version=version)
    assert loaded.version == version
    for user in ("u0", "u5"):
        before = Retriever(bundle).recommend(user, user_frame([user]), k=3)
        after = Retriever(loaded).recommend(user, user_frame([user]), k=3)
        assert before == after


def test_version_is_a_content_hash(bundle, tmp_path) -> None:
    assert save_bundle(bundle, tmp_path / "a") == save_bundle(bundle, tmp_path / "b")


def test_recommendations_follow_the_taste_and_skip_seen_items(bundle) -> None:
    retriever = Retriever(bundle)
    genre_a = retriever.recommend("u0", user_frame(["u0"]), k=2)
    genre_b = retriever.recommend("u6", user_frame(["u6"]), k=2)
    assert genre_a.fallback is None and genre_b.fallback is None
    # seen items (i0, i1 and i2, i3) are filtered; the cold item of the user's genre comes first
    assert genre_a.item_ids[0] == "i4"
    assert genre_b.item_ids[0] == "i5"
    assert not {"i0", "i1"} & set(genre_a.item_ids)


@pytest.mark.parametrize("features", [None, empty_user_row()], ids=["no-features", "all-null"])
def test_only_a_user_with_nothing_to_go_on_gets_the_popularity_fallback(bundle, features) -> None:
    result = Retriever(bundle).recommend("stranger", features, k=3, exclude=["i0"])
    assert result.fallback == POPULARITY_FALLBACK
    assert "i0" not in result.item_ids and len(result.item_ids) == 3


def test_a_user_the_model_has_no_row_for_is_placed_by_their_features(bundle) -> None:
    retriever = Retriever(bundle)
    genre_b = retriever.recommend("stranger", user_frame(["u6"]), k=3)
    genre_a = retriever.recommend("stranger", user_frame(["u0"]), k=3)
    assert genre_b.fallback is None and genre_a.fallback is None
    assert set(genre_b.item_ids) == {"i2", "i3", "i5"}
    assert set(genre_a.item_ids) == {"i0", "i1", "i4"}
    recent_only = {**empty_user_row(), f"{STREAM_VIEW}__last_items": [["i2"]]}
    assert retriever.recommend("stranger", recent_only, k=3).fallback is None


def test_a_user_without_an_id_embedding_is_ranked_from_history_without_features(bundle) -> None:
    masked = copy.deepcopy(bundle)
    masked.model.known_users[:] = False
    retriever = Retriever(masked)
    for user, cold_item_of_their_genre in (("u0", "i4"), ("u6", "i5")):
        result = retriever.recommend(user, None, k=1)
        assert result.fallback is None and result.item_ids == [cold_item_of_their_genre]


def test_corrupted_weights_are_rejected(bundle, tmp_path) -> None:
    save_bundle(bundle, tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="weights.safetensors: sha256"):
        load_bundle(tmp_path / "m")


def test_a_manifest_edited_to_match_other_files_is_rejected(bundle, tmp_path) -> None:
    save_bundle(bundle, tmp_path / "m")
    manifest_path = tmp_path / "m" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][INDEX] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="does not match its version"):
        load_bundle(tmp_path / "m")


def test_a_missing_file_and_a_wrong_version_are_rejected(bundle, tmp_path) -> None:
    version = save_bundle(bundle, tmp_path / "m")
    with pytest.raises(CorruptArtifactError, match="expected tt-0"):
        load_bundle(tmp_path / "m", expected_version="tt-0")
    (tmp_path / "m" / INDEX).unlink()
    with pytest.raises(CorruptArtifactError, match="file missing"):
        load_bundle(tmp_path / "m", expected_version=version)


def test_similar_items_share_the_genre(bundle) -> None:
    result = Retriever(bundle).similar_items("i0", k=1)
    assert result.item_ids[0] in {"i1", "i4"}
    assert np.isfinite(result.scores).all()


def test_evaluation_through_the_serving_path_and_a_shrunken_catalog(bundle) -> None:
    import pandas as pd

    from recloop.training.candidate import EvaluationSet, evaluate_bundle

    users = np.array(["u0", "u6"], dtype=object)
    seen = pd.DataFrame({"user_id": ["u0", "u0", "u6", "u6"], "item_id": ["i0", "i1", "i2", "i3"]})
    evaluation = EvaluationSet(
        user_ids=users,
        relevant=[np.array([4]), np.array([5])],
        seen_pairs=seen,
        features=user_frame(list(users)),
        catalog=np.array([f"i{i}" for i in range(6)], dtype=object),
        item_popularity=np.array([4, 4, 4, 4, 0, 0], dtype=float),
        n_train_users=8,
    )
    metrics = evaluate_bundle(bundle, evaluation, k=1)
    # each user's unseen item of their own genre ranks first: a perfect score
    assert metrics["all"]["recall@1"] == 1.0 and metrics["cold_items"]["recall@1"] == 1.0
    shrunken = EvaluationSet(**{**evaluation.__dict__, "catalog": evaluation.catalog[:5]})
    with pytest.raises(ValueError, match="missing from the evaluation catalog"):
        evaluate_bundle(bundle, shrunken, k=1)
