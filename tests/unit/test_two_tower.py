"""The two-tower model learns a tiny world, scores unseen items by features, and is seeded."""

import numpy as np
import scipy.sparse as sp
import torch

from recloop.models.two_tower import (
    TrainingExamples,
    TwoTowerConfig,
    in_batch_softmax_loss,
    refit_two_tower,
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


def test_a_refit_for_the_validated_epochs_reproduces_the_validated_run() -> None:
    """Same seed, same examples: `refit_two_tower` for best_epoch + 1 epochs gives the
    weights early stopping kept, so on more labels it differs only by what it learned."""
    examples = TrainingExamples.from_matrix(TRAIN, USER_FEATURES)
    scores = iter([0.1, 0.3, 0.2, 0.1, 0.0])
    config = TwoTowerConfig(dim=8, hidden=16, batch_size=4, epochs=5, patience=2, seed=5)
    lines: list[str] = []
    result = train_two_tower(
        examples, TRAIN, GENRES, config, lambda _: next(scores), False, lines.append
    )
    assert result.best_epoch == 1 and len(result.history) == 4
    assert lines[0].startswith("epoch 1/5: loss ") and lines[0].endswith(
        "validation NDCG@10 0.1000 (best 0.1000 at epoch 1)"
    )
    assert lines[3].endswith("validation NDCG@10 0.1000 (best 0.3000 at epoch 2)")
    assert lines[4] == (
        "early stop at epoch 4 (2 epochs without a better validation NDCG@10): "
        "best epoch 2, validation NDCG@10 0.3000"
    )
    refit = refit_two_tower(examples, TRAIN, GENRES, config, result.best_epoch + 1, False)
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(refit.state_dict()[name], tensor, rtol=0, atol=0)


def test_loss_masks_duplicate_items_in_the_batch() -> None:
    users = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    items = torch.tensor([7, 7])
    vectors = users.clone()
    loss = in_batch_softmax_loss(users, vectors, items, torch.zeros(2), temperature=1.0)
    # each row's only unmasked column is its own positive, so the loss is exactly 0
    assert float(loss) == 0.0


def test_recent_items_turn_the_user_towards_what_they_just_engaged_with() -> None:
    """Users whose history is genre A, but who just engaged with a B item, want B next:
    the training examples say so, and only the recent-items input can tell them apart."""
    users, items, recent = [], [], []
    for user in range(8):
        liked = [0, 1] if user < 4 else [2, 3]
        other = [2, 3] if user < 4 else [0, 1]
        for target in liked:  # a session in the user's usual genre
            (
                users.append(user),
                items.append(target),
                recent.append([liked[1 - liked.index(target)]]),
            )
        for target in other:  # a session that switched: the previous item was the other genre
            (
                users.append(user),
                items.append(target),
                recent.append([other[1 - other.index(target)]]),
            )
    examples = TrainingExamples(
        np.array(users), np.array(items), USER_FEATURES[users], np.array(recent, dtype=np.int64)
    )
    config = TwoTowerConfig(
        dim=16,
        hidden=32,
        batch_size=8,
        epochs=200,
        patience=200,
        lr=0.01,
        recent_dropout=0.0,
        seed=3,
    )
    model = train_two_tower(examples, TRAIN, GENRES, config, progress=False).model
    group_a = np.arange(4)
    usual = score_users(model, group_a, USER_FEATURES[:4], TRAIN, np.full((4, 1), 0))
    switched = score_users(model, group_a, USER_FEATURES[:4], TRAIN, np.full((4, 1), 2))
    # After an A item the user wants the other A item; after a B item, the other B item.
    assert (usual[:, 1] > usual[:, [2, 3]].max(axis=1)).all()
    assert (switched[:, 3] > switched[:, [0, 1]].max(axis=1)).all()
