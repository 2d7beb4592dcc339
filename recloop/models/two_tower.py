"""Two-tower retrieval model: towers, loss and training as separate pieces.

User tower: id embedding + the user's features as of the training example or the
request + the mean embedding of the user's history (minus the target item while
training) + the mean embedding of the items the user engaged with in the last hour
(Feast's streaming `user_stream.last_items`, as of just before the label or as of the
request). The recent items let a served model follow a change of taste within
seconds, where the id embedding and the history summary move only as much as a
retrain can shift them; they are dropped from a share of training examples, so the
tower also works for users with no recent engagement. Item tower: id embedding + item features (a snapshot kept in the model:
activity, genres, release age, text embedding). Both end in L2-normalised vectors,
so a dot product scores a pair. Id embeddings are dropped at random while training
and masked for ids training never saw, so both towers also learn to place users
and items from features alone: a cold item is scored through its features.

Loss: sampled softmax over in-batch negatives with log-Q correction (Yi et al.
2019): the logit of item j is s(u, j)/tau - log q_j, q_j its share of training
interactions, which stops popular items from being punished for appearing often
as negatives.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm import tqdm

from recloop.evaluation.metrics import ndcg_at_k
from recloop.models.baselines import top_k_unseen
from recloop.models.configs import TwoTowerConfig
from recloop.models.progress import ProgressLog, silent


@dataclass(frozen=True)
class TrainingExamples:
    """Positive (user, item) pairs with the user's features as of each pair's time."""

    users: np.ndarray  # (n,) int64 user index
    items: np.ndarray  # (n,) int64 item index
    user_features: np.ndarray  # (n, f_u) float32
    recent: np.ndarray  # (n, width) int64 item indices engaged with just before, -1 pads

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_matrix(cls, train: sp.csr_matrix, user_features: np.ndarray) -> TrainingExamples:
        """Every stored pair of `train`, with per-user static features (n_users, f_u) and no
        recent items (a matrix has no time)."""
        coo = train.tocoo()
        users = coo.row.astype(np.int64)
        no_recent = np.full((len(users), 1), -1, dtype=np.int64)
        return cls(users, coo.col.astype(np.int64), user_features[users], no_recent)


class Tower(nn.Module):
    """id embedding (dropped at random in training) + features -> MLP -> unit vector.

    ids: (batch,) long; features: (batch, f) float; extra: (batch, extra_width) or None
    -> (batch, dim)
    """

    def __init__(self, n_ids: int, n_features: int, config: TwoTowerConfig, extra_width: int):
        super().__init__()
        self.id_embedding = nn.Embedding(n_ids, config.dim)
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        width = config.dim + n_features + extra_width
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.dim)
        )
        self.id_dropout = config.id_dropout

    def forward(
        self,
        ids: torch.Tensor,
        features: torch.Tensor,
        extra: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embedded = self.id_embedding(ids)
        keep = torch.ones(len(ids), 1, device=ids.device)
        if self.training and self.id_dropout > 0:
            keep = (torch.rand(len(ids), 1, device=ids.device) >= self.id_dropout).float()
        if known is not None:
            keep = keep * known.float().unsqueeze(1)
        parts = [embedded * keep, features]
        if extra is not None:
            parts.append(extra)
        return nn.functional.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class TwoTowerModel(nn.Module):
    """Both towers plus the history and recent-items summaries that feed the user tower.

    Item features are part of the model (a snapshot as of training); user features
    arrive with each call, as of the time of the request or the training example.
    """

    def __init__(
        self, n_users: int, n_user_features: int, item_features: np.ndarray, config: TwoTowerConfig
    ):
        super().__init__()
        n_items = len(item_features)
        self.n_user_features = n_user_features
        self.register_buffer("item_features", torch.from_numpy(item_features.astype(np.float32)))
        self.history_embedding = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.history_embedding.weight, std=0.05)
        # Extra input of the user tower: the history summary, then the recent-items summary.
        self.user_tower = Tower(n_users, n_user_features, config, extra_width=2 * config.dim)
        self.item_tower = Tower(n_items, item_features.shape[1], config, extra_width=0)
        self.register_buffer("known_items", torch.ones(n_items, dtype=torch.bool))
        self.register_buffer("known_users", torch.ones(n_users, dtype=torch.bool))

    def history_summary(
        self, history: sp.csr_matrix, users: torch.Tensor, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean history embedding of each user, leaving out `exclude` (the training target).

        history: (n_users, n_items) 0/1 CSR; users, exclude: (batch,) -> (batch, dim).
        One embedding bag over the users' CSR rows, the same for a training batch and
        for one request.
        """
        rows = history[users.numpy()]
        total = nn.functional.embedding_bag(
            torch.from_numpy(rows.indices.astype(np.int64)),
            self.history_embedding.weight,
            torch.from_numpy(rows.indptr[:-1].astype(np.int64)),
            mode="sum",
        )
        counts = torch.from_numpy(np.diff(rows.indptr).astype(np.float32)).unsqueeze(1)
        if exclude is not None:
            total = total - self.history_embedding(exclude)
            counts = counts - 1
        return total / counts.clamp(min=1.0)

    def recent_summary(self, recent: torch.Tensor) -> torch.Tensor:
        """Mean history embedding of each row's recent items; zeros for a row with none.

        recent: (batch, width) long item indices, -1 for padding -> (batch, dim).
        """
        present = (recent >= 0).unsqueeze(2).float()
        embedded = self.history_embedding(recent.clamp(min=0)) * present
        return embedded.sum(dim=1) / present.sum(dim=1).clamp(min=1.0)

    def users(
        self,
        users: torch.Tensor,
        features: torch.Tensor,
        history: sp.csr_matrix,
        recent: torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """users: (batch,) indices; features: (batch, f_u); recent: (batch, width) item
        indices (-1 pads) -> (batch, dim) unit vectors."""
        return self.users_with_summary(
            users, features, self.history_summary(history, users, exclude), recent
        )

    def users_with_summary(
        self,
        users: torch.Tensor,
        features: torch.Tensor,
        summary: torch.Tensor,
        recent: torch.Tensor,
        known: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The user tower on a history summary computed beforehand (serving caches it).

        `known` (batch,) bool overrides which rows may use their id embedding (default:
        the ids training saw); serving masks it for a user the model has no row for.
        """
        extra = torch.cat([summary, self.recent_summary(recent)], dim=1)
        mask = self.known_users[users] if known is None else known
        return self.user_tower(users, features, extra, known=mask)

    def items(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_tower(items, self.item_features[items], known=self.known_items[items])


def in_batch_softmax_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    items: torch.Tensor,
    log_q: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of each user against the batch's items, log-Q corrected.

    user_vectors, item_vectors: (batch, dim); items, log_q: (batch,). A column that holds
    the same item as the row's positive is masked, so duplicates are not false negatives.
    """
    logits = user_vectors @ item_vectors.T / temperature - log_q.unsqueeze(0)
    same = items.unsqueeze(0) == items.unsqueeze(1)
    diagonal = torch.eye(len(items), dtype=torch.bool, device=items.device)
    logits = logits.masked_fill(same & ~diagonal, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(items), device=items.device))


@dataclass
class TrainResult:
    model: TwoTowerModel
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


class _Trainer:
    """Adam on the in-batch softmax from the seeded initialisation; `epoch` is one pass.

    The same seed and shapes give the same initial weights and the same batch order, so
    a refit on more labels starts where the validated run started.
    """

    def __init__(
        self,
        examples: TrainingExamples,
        history: sp.csr_matrix,
        item_features: np.ndarray,
        config: TwoTowerConfig,
    ):
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.config = config
        n_users, n_items = history.shape
        model = TwoTowerModel(n_users, examples.user_features.shape[1], item_features, config)
        model.known_items[:] = torch.from_numpy(np.bincount(examples.items, minlength=n_items) > 0)
        model.known_users[:] = torch.from_numpy(np.bincount(examples.users, minlength=n_users) > 0)
        self.model = model
        self.history = history.tocsr()
        self.users, self.items = examples.users, examples.items
        self.features = torch.from_numpy(examples.user_features.astype(np.float32))
        self.recent = torch.from_numpy(examples.recent.astype(np.int64))
        counts = np.bincount(self.items, minlength=n_items)
        self.log_q = torch.from_numpy(
            np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32)
        )
        self.optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )

    def epoch(self) -> float:
        """One pass over the examples in a seeded order; the mean loss. Leaves eval mode on."""
        model, config = self.model, self.config
        model.train()
        order = self.rng.permutation(len(self.users))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            users = torch.from_numpy(self.users[batch])
            items = torch.from_numpy(self.items[batch])
            hidden = torch.from_numpy(self.rng.random(len(batch)) < config.recent_dropout)
            recent = self.recent[batch].masked_fill(hidden.unsqueeze(1), -1)
            loss = in_batch_softmax_loss(
                model.users(users, self.features[batch], self.history, recent, exclude=items),
                model.items(items),
                items,
                self.log_q[items],
                config.temperature,
            )
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        return total / len(order)


def train_two_tower(
    examples: TrainingExamples,
    history: sp.csr_matrix,
    item_features: np.ndarray,
    config: TwoTowerConfig,
    validate: Callable[[TwoTowerModel], float] | None = None,
    progress: bool = True,
    log: ProgressLog = silent,
) -> TrainResult:
    """Train with Adam; keep the weights of the epoch with the best `validate` score
    (without `validate`: the lowest training loss). Each epoch's loss and score go to
    the bar (with `progress`) and to `log`, and so does how training ended.

    `history` (users x items, the training interactions) feeds the history summary
    and marks which users and items the id embeddings know.
    """
    trainer = _Trainer(examples, history, item_features, config)
    best = TrainResult(model=copy.deepcopy(trainer.model), best_epoch=-1, best_score=-np.inf)
    score_name = "validation NDCG@10" if validate else "-loss"
    stale = 0
    bar = tqdm(range(config.epochs), desc="two-tower", unit="epoch", disable=not progress)
    for epoch in bar:
        loss = trainer.epoch()
        score = validate(trainer.model) if validate else -loss
        best.history.append({"epoch": epoch, "loss": loss, "score": score})
        if score > best.best_score:
            best = TrainResult(copy.deepcopy(trainer.model), epoch, score, best.history)
            stale = 0
        else:
            stale += 1
        bar.set_postfix(loss=f"{loss:.4f}", score=f"{score:.4f}", best=best.best_epoch + 1)
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {loss:.4f}, {score_name} {score:.4f} "
            f"(best {best.best_score:.4f} at epoch {best.best_epoch + 1})"
        )
        if stale >= config.patience:
            break
    bar.close()
    ran = len(best.history)
    ending = (
        f"early stop at epoch {ran} ({config.patience} epochs without a better {score_name})"
        if ran < config.epochs
        else f"all {ran} epochs"
    )
    log(f"{ending}: best epoch {best.best_epoch + 1}, {score_name} {best.best_score:.4f}")
    if progress:
        tqdm.write(f"two-tower: {ending}; best epoch {best.best_epoch + 1}")
    return best


def refit_two_tower(
    examples: TrainingExamples,
    history: sp.csr_matrix,
    item_features: np.ndarray,
    config: TwoTowerConfig,
    epochs: int,
    progress: bool = True,
    log: ProgressLog = silent,
) -> TwoTowerModel:
    """Exactly `epochs` epochs with no validation, the last weights kept: the validated
    configuration refit on more labels for the epoch count validation chose."""
    trainer = _Trainer(examples, history, item_features, config)
    bar = tqdm(range(epochs), desc="two-tower refit", unit="epoch", disable=not progress)
    for epoch in bar:
        loss = trainer.epoch()
        bar.set_postfix(loss=f"{loss:.4f}")
        log(f"refit epoch {epoch + 1}/{epochs}: loss {loss:.4f}")
    return trainer.model


@torch.no_grad()
def score_users(
    model: TwoTowerModel,
    users: np.ndarray,
    user_features: np.ndarray,
    history: sp.csr_matrix,
    recent: np.ndarray | None = None,
) -> np.ndarray:
    """(len(users), n_items) scores: user vectors against every item vector. `recent`
    (len(users), width) item indices with -1 pads; None: no recent items."""
    model.eval()
    if recent is None:
        recent = np.full((len(users), 1), -1, dtype=np.int64)
    user_vectors = model.users(
        torch.from_numpy(users.astype(np.int64)),
        torch.from_numpy(user_features.astype(np.float32)),
        history.tocsr(),
        torch.from_numpy(recent.astype(np.int64)),
    )
    item_vectors = model.items(torch.arange(history.shape[1]))
    return (user_vectors @ item_vectors.T).numpy()


@dataclass
class TwoTowerRecommender:
    """The baselines' fit/score interface around `train_two_tower`, with static user features.

    `validation` (relevant items per user) drives early stopping on NDCG@10 with
    training items masked, as in the evaluation itself.
    """

    user_features: np.ndarray  # (n_users, f_u)
    item_features: np.ndarray  # (n_items, f_i)
    config: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    validation: list[np.ndarray] | None = None
    progress: bool = True
    name: str = "two_tower"
    result: TrainResult | None = None
    train: sp.csr_matrix | None = None

    def fit(self, train: sp.csr_matrix) -> TwoTowerRecommender:
        users = np.arange(train.shape[0])

        def validate(model: TwoTowerModel) -> float:
            scores = score_users(model, users, self.user_features, train)
            return ndcg_at_k(top_k_unseen(scores, train, 10), self.validation)

        self.train = train
        self.result = train_two_tower(
            TrainingExamples.from_matrix(train, self.user_features),
            train,
            self.item_features,
            self.config,
            validate if self.validation else None,
            self.progress,
        )
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        return score_users(self.result.model, users, self.user_features[users], self.train)
