"""Hyperparameter search: seeded, starts from the defaults, keeps every trial."""

from __future__ import annotations

from recloop.models.configs import TwoTowerConfig
from recloop.training.tuning import tune_two_tower


def peaked(config: TwoTowerConfig) -> float:
    """A validation score with its optimum at temperature 0.05 and no id dropout."""
    return -((config.temperature - 0.05) ** 2) - 0.1 * config.id_dropout**2


def test_tuning_improves_on_the_defaults_and_keeps_every_trial() -> None:
    base = TwoTowerConfig(seed=7, epochs=3)
    result = tune_two_tower(peaked, base, trials=15, seed=0)
    assert len(result.trials) == 15
    assert result.trials[0]["temperature"] == base.temperature
    assert result.best_score == max(trial["score"] for trial in result.trials)
    assert result.best_score > peaked(base)
    assert peaked(result.best) == result.best_score
    assert (result.best.seed, result.best.epochs) == (7, 3)


def test_tuning_is_reproducible() -> None:
    first = tune_two_tower(peaked, TwoTowerConfig(), trials=6, seed=3)
    second = tune_two_tower(peaked, TwoTowerConfig(), trials=6, seed=3)
    assert first.trials == second.trials
