"""Off-policy estimators on hand-computed logs and on simulated logs with a known truth.

The simulation is a position-based click model, P(click) = examination(p) * relevance(x, a),
over 40 contexts of 8 candidates each. The logging policy is Softmax(temperature 1) on a
noisy retrieval score; a target's true value is exact: sum over contexts, items and
positions of P(a at p | x) * examination(p) * relevance(x, a), from the policies' own
position probabilities (which tests/unit/test_policies.py holds against exact enumeration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from recloop.experiments.ope import (
    OPEEstimate,
    SlateLog,
    direct_method,
    doubly_robust,
    effective_sample_size,
    ips,
    observed_value,
    ope_gate,
    snips,
)
from recloop.inference.policies import EpsilonGreedy, Policy, Softmax

N_CONTEXTS = 40
N_CANDIDATES = 8
LOGGING = Softmax(1.0, top_n=N_CANDIDATES)
SHARPER = Softmax(0.4, top_n=N_CANDIDATES)  # follows the score more closely: better
UNIFORM = EpsilonGreedy(1.0, top_n=N_CANDIDATES)  # ignores the score: much worse


@dataclass(frozen=True)
class World:
    """Hidden relevance, the retrieval scores the policies see, and the list length."""

    relevance: np.ndarray  # (contexts, candidates)
    scores: np.ndarray  # (contexts, candidates)
    examination: np.ndarray  # (k,)

    @property
    def k(self) -> int:
        return len(self.examination)

    def probabilities(self, policy: Policy) -> np.ndarray:
        """(contexts, candidates, k) P(a at p | x)."""
        return np.stack([policy.position_probabilities(row, self.k) for row in self.scores])

    def true_model(self) -> np.ndarray:
        """(contexts, candidates, k) the exact click probability of a at p in x."""
        return self.relevance[:, :, None] * self.examination

    def value(self, policy: Policy) -> float:
        """Exact expected clicks per request, contexts uniform."""
        per_context = (self.probabilities(policy) * self.true_model()).sum(axis=(1, 2))
        return float(per_context.mean())

    def simulate(
        self,
        contexts: np.ndarray,
        target: np.ndarray,
        seed: int,
        model: np.ndarray | None = None,
    ) -> SlateLog:
        """Lists drawn from LOGGING (Gumbel-top-k on scores / temperature) and their clicks.

        `target` is the target's (contexts, candidates, k) position probabilities; `model`
        an optional (contexts, candidates, k) reward model for DM and DR.
        """
        rng = np.random.default_rng(seed)
        n = len(contexts)
        perturbed = self.scores[contexts] / LOGGING.temperature + rng.gumbel(size=(n, N_CANDIDATES))
        shown = np.argsort(-perturbed, axis=1)[:, : self.k]
        context = np.repeat(contexts, self.k)
        item = shown.ravel()
        position = np.tile(np.arange(self.k), n)
        click = rng.random(n * self.k) < self.true_model()[context, item, position]
        logging = self.probabilities(LOGGING)
        model_columns = {}
        if model is not None:
            target_model_reward = (target * model).sum(axis=1)  # (contexts, k)
            model_columns = {
                "model_reward": model[context, item, position],
                "target_model_reward": target_model_reward[context, position],
            }
        return SlateLog(
            request=np.repeat(np.arange(n), self.k),
            position=position,
            reward=click.astype(float),
            logging_propensity=logging[context, item, position],
            target_propensity=target[context, item, position],
            **model_columns,
        )


def make_world(k: int) -> World:
    rng = np.random.default_rng(2026)
    relevance = 1.0 / (1.0 + np.exp(-rng.normal(-1.5, 1.2, size=(N_CONTEXTS, N_CANDIDATES))))
    scores = np.log(relevance / (1 - relevance)) + rng.normal(0.0, 0.7, size=relevance.shape)
    return World(relevance, scores, 1.0 / (np.arange(k) + 1.0))


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(k=3)


def uniform_contexts(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1_000_000).integers(0, N_CONTEXTS, n)


def hand_log(with_model: bool = False) -> SlateLog:
    """Three requests of two positions; weights 1, .5 | 2, 1 | .75, 1; clicks at 0, 1, 0."""
    model = {}
    if with_model:
        model = {
            "model_reward": np.array([0.5, 0.2, 0.1, 0.3, 0.6, 0.1]),
            "target_model_reward": np.array([0.3, 0.1, 0.2, 0.1, 0.4, 0.2]),
        }
    return SlateLog(
        request=np.array(["a", "a", "b", "b", "c", "c"]),
        position=np.array([0, 1, 0, 1, 0, 1]),
        reward=np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
        logging_propensity=np.array([0.5, 0.5, 0.25, 0.5, 1.0, 0.5]),
        target_propensity=np.array([0.5, 0.25, 0.5, 0.5, 0.75, 0.5]),
        **model,
    )


def test_estimators_on_a_hand_computed_log() -> None:
    log = hand_log(with_model=True)
    assert ips(log).value == pytest.approx((1 + 1 + 0.75) / 3)
    # per position: (1 + .75) / (1 + 2 + .75) and 1 / (.5 + 1 + 1)
    assert snips(log).value == pytest.approx(1.75 / 3.75 + 1 / 2.5)
    assert direct_method(log).value == pytest.approx((0.4 + 0.3 + 0.6) / 3)
    # rows: .3 + 1 * .5, .1 - .5 * .2, .2 - 2 * .1, .1 + 1 * .7, .4 + .75 * .4, .2 - .1
    assert doubly_robust(log).value == pytest.approx(2.4 / 3)
    assert observed_value(log) == pytest.approx(1.0)
    estimate = ips(log)
    assert estimate.value_per_impression == pytest.approx(estimate.value / 2)
    assert (estimate.n_requests, estimate.n_impressions) == (3, 6)


def test_effective_sample_size_is_the_worst_position() -> None:
    log = hand_log()
    position_0 = (1 + 2 + 0.75) ** 2 / (1 + 4 + 0.75**2)  # 2.53
    position_1 = (0.5 + 1 + 1) ** 2 / (0.25 + 1 + 1)  # 2.78
    assert effective_sample_size(log) == pytest.approx(min(position_0, position_1))
    estimate = snips(log)
    assert estimate.ess == pytest.approx(position_0)
    assert estimate.ess_share == pytest.approx(position_0 / 3)


def test_on_policy_weights_give_a_full_effective_sample() -> None:
    log = hand_log()
    same = SlateLog(
        log.request, log.position, log.reward, log.logging_propensity, log.logging_propensity
    )
    assert effective_sample_size(same) == pytest.approx(3.0)
    assert ips(same).value == pytest.approx(observed_value(same))


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values)
    return float(array.mean()), float(array.std(ddof=1) / np.sqrt(len(array)))


@pytest.mark.parametrize("k", [1, 3])
def test_ips_is_unbiased_for_one_and_several_positions(k: int) -> None:
    world = make_world(k)
    target = world.probabilities(SHARPER)
    truth = world.value(SHARPER)
    estimates = [
        ips(world.simulate(uniform_contexts(1_000, seed), target, seed), n_bootstrap=1).value
        for seed in range(200)
    ]
    mean, standard_error = mean_and_standard_error(estimates)
    assert standard_error < 0.01 * truth  # the test is tight enough to see a 3 % bias
    assert abs(mean - truth) < 3.5 * standard_error


def test_dr_is_unbiased_with_a_wrong_model_and_dm_is_not(world: World) -> None:
    target = world.probabilities(SHARPER)
    truth = world.value(SHARPER)
    wrong_model = 0.3 * np.broadcast_to(world.examination, target.shape)  # ignores the item
    dr, dm = [], []
    for seed in range(200):
        log = world.simulate(uniform_contexts(1_000, seed), target, seed, model=wrong_model)
        dr.append(doubly_robust(log, n_bootstrap=1).value)
        dm.append(direct_method(log, n_bootstrap=1).value)
    dr_mean, dr_error = mean_and_standard_error(dr)
    dm_mean, _ = mean_and_standard_error(dm)
    assert abs(dr_mean - truth) < 3.5 * dr_error
    assert dr_error < 0.01 * truth
    assert abs(dm_mean - truth) > 0.2 * truth


def test_dm_with_the_true_model_is_exact(world: World) -> None:
    target = world.probabilities(SHARPER)
    every_context_25_times = np.arange(25 * N_CONTEXTS) % N_CONTEXTS
    log = world.simulate(every_context_25_times, target, seed=0, model=world.true_model())
    assert direct_method(log).value == pytest.approx(world.value(SHARPER), rel=1e-12)


def test_snips_interval_covers_the_truth(world: World) -> None:
    target = world.probabilities(SHARPER)
    truth = world.value(SHARPER)
    seeds = range(120)
    estimates = [
        snips(
            world.simulate(uniform_contexts(1_000, seed), target, seed), n_bootstrap=400, seed=seed
        )
        for seed in seeds
    ]
    covered = np.mean([e.ci_low <= truth <= e.ci_high for e in estimates])
    assert covered >= 0.90
    # not by being wide: a 95 % interval from ~650 effective requests is about +-8 %
    assert np.mean([e.ci_high - e.ci_low for e in estimates]) < 0.25 * truth


def test_bootstrap_is_seeded(world: World) -> None:
    log = world.simulate(uniform_contexts(500, 0), world.probabilities(SHARPER), seed=0)
    first, again, other = (snips(log, n_bootstrap=200, seed=s) for s in (1, 1, 2))
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.ci_low < first.value < first.ci_high


def test_ips_interval_is_the_normal_interval_of_a_large_log(world: World) -> None:
    log = world.simulate(uniform_contexts(4_000, 3), world.probabilities(SHARPER), seed=3)
    estimate = ips(log, n_bootstrap=4_000, seed=3)
    per_request = np.bincount(log.request_index, weights=log.weight * log.reward)
    half_width = 1.959964 * per_request.std() / np.sqrt(len(per_request))
    assert (estimate.ci_high - estimate.ci_low) / 2 == pytest.approx(half_width, rel=0.06)
    assert (estimate.ci_low + estimate.ci_high) / 2 == pytest.approx(
        estimate.value, abs=0.1 * half_width
    )


def gate_inputs(world: World, target: Policy, n: int) -> tuple[OPEEstimate, float]:
    log = world.simulate(uniform_contexts(n, 7), world.probabilities(target), seed=7)
    return snips(log, n_bootstrap=500, seed=7), observed_value(log)


def test_gate_is_undecided_without_enough_effective_data(world: World) -> None:
    estimate, logged = gate_inputs(world, SHARPER, n=60)
    result = ope_gate(estimate, logged, min_ess=200, tolerance=0.02)
    assert (result.decided, result.passed) == (False, False)
    assert result.reason.startswith(f"not enough logged data: ESS {estimate.ess:.1f} < 200")


def test_gate_passes_a_better_target(world: World) -> None:
    assert world.value(SHARPER) > 1.1 * world.value(LOGGING)
    estimate, logged = gate_inputs(world, SHARPER, n=3_000)
    result = ope_gate(estimate, logged, min_ess=200, tolerance=0.02)
    assert (result.decided, result.passed) == (True, True), result.reason
    assert result.threshold == pytest.approx(0.98 * logged)


def test_gate_fails_a_clearly_worse_target(world: World) -> None:
    assert world.value(UNIFORM) < 0.8 * world.value(LOGGING)
    estimate, logged = gate_inputs(world, UNIFORM, n=3_000)
    result = ope_gate(estimate, logged, min_ess=200, tolerance=0.02)
    assert (result.decided, result.passed) == (True, False), result.reason
    assert "CI lower bound" in result.reason and result.ci_low < result.threshold


def test_gate_holds_the_lower_bound_not_the_estimate_to_the_threshold() -> None:
    def candidate(value: float, ci_low: float) -> OPEEstimate:
        return OPEEstimate(
            "snips", value, ci_low, 2 * value - ci_low, 0.95, value / 3, 900.0, 0.3, 3_000, 9_000
        )

    # estimate above the logged value, but the interval reaches 14 % below it
    noisy = ope_gate(candidate(0.72, 0.60), logged_value=0.70, min_ess=200, tolerance=0.02)
    assert (noisy.decided, noisy.passed) == (True, False)
    assert noisy.threshold == pytest.approx(0.686)
    # estimate a little below, interval within the 2 % tolerance
    close = ope_gate(candidate(0.695, 0.69), logged_value=0.70, min_ess=200, tolerance=0.02)
    assert (close.decided, close.passed) == (True, True)
    assert close.to_dict()["ci_low"] == 0.69


def replaced(**columns: object) -> dict[str, object]:
    log = hand_log(with_model=True)
    base = {
        name: getattr(log, name)
        for name in (
            "request",
            "position",
            "reward",
            "logging_propensity",
            "target_propensity",
            "model_reward",
            "target_model_reward",
        )
    }
    return {**base, **columns}


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            {"logging_propensity": np.array([0.5, np.nan, 0.25, 0.5, 1, 0.5])},
            "logging_propensity has 1 NaN",
        ),
        (
            {"logging_propensity": np.array([0.5, 0.0, 0.25, 0.5, 1, 0.5])},
            "logging_propensity has 1 values outside",
        ),
        (
            {"logging_propensity": np.array([0.5, -0.2, 0.25, 0.5, 1, 0.5])},
            "logging_propensity has 1 values outside",
        ),
        (
            {"target_propensity": np.array([0.5, 1.5, 0.25, 0.5, 1, 0.5])},
            "target_propensity has 1 values outside",
        ),
        ({"reward": np.array([1.0, 0.0, 0.0])}, "reward has shape"),
        ({"model_reward": np.array([0.1, np.inf, 0, 0, 0, 0])}, "model_reward has 1 infinite"),
        ({"position": np.array([0, 1, 0, 1, 0, 0])}, "more than one row"),
        ({"position": np.array([0, 1, 0, 1, 0, -1])}, "position must hold integers"),
        ({"request": np.array([], dtype=str)}, "non-empty"),
    ],
)
def test_invalid_logs_are_refused_with_the_problem_named(
    columns: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SlateLog(**replaced(**columns))


def test_model_based_estimators_need_their_columns_and_sane_bootstrap_settings() -> None:
    with pytest.raises(ValueError, match="direct_method needs target_model_reward"):
        direct_method(hand_log())
    with pytest.raises(ValueError, match="doubly_robust needs target_model_reward"):
        doubly_robust(hand_log())
    with pytest.raises(ValueError, match="n_bootstrap"):
        ips(hand_log(), n_bootstrap=0)
    with pytest.raises(ValueError, match="ci_level"):
        ips(hand_log(), ci_level=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        ope_gate(ips(hand_log()), logged_value=1.0, min_ess=1, tolerance=1.5)
