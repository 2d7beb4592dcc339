"""One transformation from Feast columns to model inputs, for training and serving alike."""

import numpy as np
import pandas as pd
import pytest

from recloop.features.feature_vectors import FeatureSpec, activity_columns
from tests.model_fixtures import item_frame, user_frame


def spec() -> FeatureSpec:
    return FeatureSpec.fit(user_frame(["u0", "u5"]), item_frame(), text_dim=2)


def test_spec_learns_the_genre_vocabulary_and_affinity_width() -> None:
    fitted = spec()
    assert fitted.genre_vocabulary == ("A", "B")
    assert fitted.affinity_width == 2
    assert FeatureSpec.from_dict(fitted.to_dict()) == fitted


def test_online_dict_and_offline_frame_give_identical_vectors() -> None:
    offline = user_frame(["u0", "u5"])
    offline.loc[1, "user_features__mean_rating"] = None
    online = {column: offline[column].tolist() for column in offline.columns}
    np.testing.assert_array_equal(spec().user_vectors(offline), spec().user_vectors(online))


def test_counts_are_log_scaled_and_a_missing_row_is_flagged() -> None:
    frame = user_frame(["u0", "u5"])
    for column in frame.columns[1:]:
        frame.loc[1, column] = None
    vectors = FeatureSpec.fit(frame, item_frame(), text_dim=2).user_vectors(frame)
    n_counts = len(activity_columns()) - 2
    np.testing.assert_allclose(vectors[0, :n_counts], np.log1p(1.0))
    assert vectors[0, n_counts + 2] == 0.0  # features present
    assert vectors[1, n_counts + 2] == 1.0  # no feature row: flagged
    assert (vectors[1, :n_counts] == 0).all() and (vectors[1, -2:] == 0).all()


def test_item_vectors_carry_genres_and_text() -> None:
    text = np.arange(12, dtype=np.float32).reshape(6, 2)
    vectors = spec().item_vectors(item_frame(), text)
    np.testing.assert_array_equal(vectors[:, -2:], text)
    genres = vectors[:, -4:-2]
    assert genres[0].tolist() == [1.0, 0.0] and genres[2].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="text embeddings of shape"):
        spec().item_vectors(item_frame(), text[:3])


def test_unequal_affinity_lists_are_refused() -> None:
    users = user_frame(["u0", "u5"])
    users["user_features__genre_affinity"] = [[1.0, 0.0], [1.0]]
    with pytest.raises(ValueError, match="different lengths"):
        FeatureSpec.fit(users, item_frame(), text_dim=2)
    assert isinstance(users, pd.DataFrame)


def test_columns_constant_in_training_are_held_at_their_training_value() -> None:
    """Counts that training never saw vary (MovieLens has no clicks) must not move a
    served user's vector; columns that varied still do."""
    training = user_frame(["u0", "u5"])
    training["user_features__rating_count_7d"] = [1, 3]
    fitted = FeatureSpec.fit(training, item_frame(), text_dim=2)
    assert FeatureSpec.from_dict(fitted.to_dict()) == fitted
    names = [*activity_columns()[:-2]]
    clicks, ratings = names.index("click_count_7d"), names.index("rating_count_7d")
    assert clicks in fitted.frozen_user_columns and ratings not in fitted.frozen_user_columns
    served = user_frame(["u0", "u5"])
    served["user_features__click_count_7d"] = [500, 0]
    served["user_features__rating_count_7d"] = [9, 1]
    vectors = fitted.user_vectors(served)
    assert vectors[0, clicks] == vectors[1, clicks] == np.float32(np.log1p(1.0))
    assert vectors[0, ratings] == np.float32(np.log1p(9.0))
    unfrozen = FeatureSpec.from_dict(
        {k: v for k, v in fitted.to_dict().items() if not k.startswith("frozen")}
    )
    assert unfrozen.user_vectors(served)[0, clicks] == np.float32(np.log1p(500.0))
