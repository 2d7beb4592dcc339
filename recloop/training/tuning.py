"""Hyperparameter search on validation data (Optuna's seeded TPE sampler).

The objective is any function of a `TwoTowerConfig` that returns a validation score;
the test part never enters it. Every trial is kept, so a report (asset metadata, the
quality bench) can show how flat or sharp the optimum is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna

from recloop.models.configs import TwoTowerConfig


@dataclass(frozen=True)
class TuningResult:
    best: TwoTowerConfig
    best_score: float
    trials: list[dict[str, float]]  # each trial's parameters and validation score


def suggest_two_tower(trial: optuna.Trial, base: TwoTowerConfig) -> TwoTowerConfig:
    """The search space: the settings earlier sweeps found the score sensitive to."""
    return replace(
        base,
        dim=trial.suggest_categorical("dim", [32, 64, 128]),
        temperature=trial.suggest_float("temperature", 0.03, 0.3, log=True),
        id_dropout=trial.suggest_float("id_dropout", 0.0, 0.5),
        lr=trial.suggest_float("lr", 1e-3, 1e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
    )


def tune_two_tower(
    validation_score: Callable[[TwoTowerConfig], float],
    base: TwoTowerConfig,
    trials: int,
    seed: int = 0,
) -> TuningResult:
    """`trials` configurations drawn by TPE (the first is `base` itself, so tuning never
    returns something worse on validation than the defaults)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(
        {
            "dim": base.dim,
            "temperature": base.temperature,
            "id_dropout": base.id_dropout,
            "lr": base.lr,
            "weight_decay": base.weight_decay,
        }
    )
    study.optimize(lambda trial: validation_score(suggest_two_tower(trial, base)), n_trials=trials)
    return TuningResult(
        best=suggest_two_tower(optuna.trial.FixedTrial(study.best_params), base),
        best_score=float(study.best_value),
        trials=[{**trial.params, "score": float(trial.value)} for trial in study.trials],
    )
