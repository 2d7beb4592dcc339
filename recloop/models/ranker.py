"""The learned ranker of the multi-stage recommender: gradient-boosted trees (LightGBM).

It orders one user's merged candidates by a feature table (each source's score and
rank, user, item and user x item crosses). Boosting rounds are chosen by NDCG@10 on a
seeded share of held-out users, then the ranker is refitted on every user with that
count, the same "refit with the epoch count from validation" rule the two-tower follows.

Measured on MovieLens-100K (bench/quality.py's label windows, validation NDCG@10):
LambdaRank with deep trees overfits a few thousand short lists and loses to EASE's own
order; the listwise cross-entropy objective (`rank_xendcg`) on small, regularised trees,
with the score forced not to rise as any source's rank worsens, is the best of the
variants tried (LambdaRank, binary, xendcg; with and without the constraint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RankerConfig:
    objective: str = "rank_xendcg"
    # Small trees, strong regularisation: a few thousand lists, a few labels each.
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_data_in_leaf: int = 300
    feature_fraction: float = 0.8
    lambda_l2: float = 10.0
    max_rounds: int = 800
    early_stopping_rounds: int = 40
    holdout_share: float = 0.2  # users held out to choose the number of rounds
    seed: int = 0

    def lightgbm_params(self) -> dict[str, object]:
        return {
            "objective": self.objective,
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 2,
            "verbosity": -1,
        }


def _group_sizes(groups: np.ndarray) -> np.ndarray:
    """Rows per group, for rows sorted by group."""
    _, sizes = np.unique(groups, return_counts=True)
    return sizes


@dataclass
class BoostedRanker:
    config: RankerConfig = field(default_factory=RankerConfig)
    booster: lgb.Booster | None = None
    rounds: int = 0
    valid_ndcg: float = float("nan")
    feature_names: list[str] = field(default_factory=list)

    def fit(
        self,
        features: pd.DataFrame,
        labels: np.ndarray,
        groups: np.ndarray,
        decreasing: Sequence[str] = (),
    ) -> BoostedRanker:
        """`features` one row per (group, candidate), rows sorted by `groups` (user index);
        `labels` 1 for a relevant candidate; the score never rises with a feature named
        in `decreasing`. Groups without a positive teach nothing and are dropped."""
        if not np.all(groups[:-1] <= groups[1:]):
            raise ValueError("ranker rows must be sorted by group")
        positives = pd.Series(labels).groupby(groups).transform("max").to_numpy() > 0
        features, labels, groups = features.loc[positives], labels[positives], groups[positives]
        if len(labels) == 0:
            raise ValueError("no candidate list holds a relevant item; the ranker cannot learn")
        self.feature_names = list(features.columns)
        params = {
            **self.config.lightgbm_params(),
            "monotone_constraints": [-1 if name in decreasing else 0 for name in features],
        }
        unique = np.unique(groups)
        rng = np.random.default_rng(self.config.seed)
        held = np.isin(
            groups, rng.choice(unique, int(len(unique) * self.config.holdout_share), replace=False)
        )
        train = lgb.Dataset(features.loc[~held], labels[~held], group=_group_sizes(groups[~held]))
        valid = lgb.Dataset(features.loc[held], labels[held], group=_group_sizes(groups[held]))
        probe = lgb.train(
            params,
            train,
            num_boost_round=self.config.max_rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.config.early_stopping_rounds, verbose=False)],
        )
        self.rounds = max(int(probe.best_iteration), 1)
        self.valid_ndcg = float(probe.best_score["valid_0"]["ndcg@10"])
        everything = lgb.Dataset(features, labels, group=_group_sizes(groups))
        self.booster = lgb.train(params, everything, num_boost_round=self.rounds)
        return self

    def to_text(self) -> str:
        """The trees as LightGBM's model text: what a registered model stores (plain text,
        nothing executed on load)."""
        return self.booster.model_to_string()

    @classmethod
    def from_text(
        cls,
        text: str,
        config: RankerConfig,
        rounds: int,
        valid_ndcg: float,
        feature_names: Sequence[str],
    ) -> BoostedRanker:
        """A fitted ranker back from `to_text` and what its fit recorded."""
        return cls(config, lgb.Booster(model_str=text), rounds, valid_ndcg, list(feature_names))

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(features[self.feature_names], num_threads=1)

    def importance(self) -> dict[str, float]:
        """Total gain per feature, for reports: what the ranker leans on."""
        gains = self.booster.feature_importance("gain")
        return dict(zip(self.feature_names, (float(g) for g in gains), strict=True))
