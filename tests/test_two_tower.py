"""The two-tower model learns a tiny world, scores unseen items by features, and is seeded."""

import numpy as np
import scipy.sparse as sp
import torch

from recloop.two_tower import (
    TrainingExamples,
    TwoTowerConfig,
    in_batch_softmax_loss,
    score_users,
    train_two_tower,
)

# Users 0-3 like items 0 and 1 (genre A); users 4-7 like items 2 and 3 (genre B).
# Items 4 (genre A) and 5 (genre B) never appear in training: cold items.
LIKES = np.zeros((8, 6), dtype=np.float32)
LIKES[:4, [0, 1]] = 1
LIKES[4:, [2, 3]] = 1
TRAIN = sp.csr_matrix(LIKES)
GENRES = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
USER_FEATURES = np.zeros((8, 1), dtype=np.float32)
CONFIG = TwoTowerConfig(dim=16, hidden=32, batch_size=8, epochs=150, patience=150, lr=0.01, seed=3)


def train(config: TwoTowerConfig = CONFIG) -> np.ndarray:
    examples = TrainingExamples.from_matrix(TRAIN, USER_FEATURES)
    result = train_two_tower(examples, TRAIN, GENRES, config, progress=False)
    return score_users(result.model, np.arange(8), USER_FEATURES, TRAIN)


def test_overfits_a_tiny_fixture() -> None:
    scores = train()
    top2 = np.sort(np.argsort(-scores[:, :4], axis=1)[:, :2], axis=1)
    assert top2[:4].tolist() == [[0, 1]] * 4
    assert top2[4:].tolist() == [[2, 3]] * 4


def test_cold_items_are_scored_through_their_features() -> None:
    scores = train()
    assert (scores[:4, 4] > scores[:4, 5]).all()
    assert (scores[4:, 5] > scores[4:, 4]).all()


def test_training_is_reproducible_with_a_seed() -> None:
    np.testing.assert_array_equal(train(), train())


def test_loss_masks_duplicate_items_in_the_batch() -> None:
    users = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    items = torch.tensor([7, 7])
    vectors = users.clone()
    loss = in_batch_softmax_loss(users, vectors, items, torch.zeros(2), temperature=1.0)
    # each row's only unmasked column is its own positive, so the loss is exactly 0
    assert float(loss) == 0.0
