"""OPE on a raw-event log shaped like the service's: a known target value is recovered."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from recloop.experiments.ope_logged import (
    RewardModel,
    estimate,
    logged_slates,
    logged_value,
    target_log,
)
from recloop.inference.policies import Softmax

N_USERS, N_ITEMS, K = 30, 20, 3
EXAMINATION = 1.0 / (np.arange(K) + 1.0)


def world(seed: int = 0) -> np.ndarray:
    """relevance[user, item] in (0, 1): P(click | examined)."""
    return np.random.default_rng(seed).uniform(0.05, 0.6, size=(N_USERS, N_ITEMS))


def simulate_log(relevance: np.ndarray, requests: int, seed: int) -> pd.DataFrame:
    """Raw events of a Softmax(1.0) logging policy over noisy scores, clicks by the
    position-based model."""
    rng = np.random.default_rng(seed)
    noisy = relevance + rng.normal(0, 0.1, relevance.shape)
    policy = Softmax(temperature=0.2, top_n=N_ITEMS)
    items = np.array([f"i{j}" for j in range(N_ITEMS)])
    rows = []
    start = pd.Timestamp("2026-12-01", tz="UTC")
    for r in range(requests):
        user = int(rng.integers(N_USERS))
        ranking = policy.rank(items, noisy[user], K, rng)
        at = start + pd.Timedelta(seconds=r)
        for position, (item, propensity) in enumerate(
            zip(ranking.item_ids, ranking.propensities, strict=True)
        ):
            base = {
                "request_id": f"r{r}",
                "user_id": f"u{user}",
                "item_id": item,
                "position": position,
            }
            rows.append(
                {
                    **base,
                    "event_type": "impression",
                    "propensity": propensity,
                    "event_timestamp": at,
                }
            )
            column = int(item[1:])
            if rng.random() < EXAMINATION[position] * relevance[user, column]:
                rows.append(
                    {
                        **base,
                        "event_type": "click",
                        "propensity": propensity,
                        "event_timestamp": at + pd.Timedelta(milliseconds=1),
                    }
                )
    return pd.DataFrame(rows).assign(tenant_id="shop", variant="exp:a")


def target_policy(relevance: np.ndarray):
    policy = Softmax(temperature=0.1, top_n=N_ITEMS)
    items = [f"i{j}" for j in range(N_ITEMS)]

    @functools.cache
    def of_user(user: int, k: int) -> np.ndarray:
        """The target is deterministic per user: its probabilities are computed once."""
        return policy.position_probabilities(relevance[user], k)

    def probabilities(request: pd.Series, k: int) -> tuple[list[str], np.ndarray]:
        return items, of_user(int(request["user_id"][1:]), k)

    def truth() -> float:
        return float(
            np.mean(
                [
                    (
                        policy.position_probabilities(relevance[u], K)
                        * relevance[u][:, None]
                        * EXAMINATION
                    ).sum()
                    for u in range(N_USERS)
                ]
            )
        )

    return probabilities, truth()


def test_the_target_value_is_recovered_from_the_logging_policy_log() -> None:
    relevance = world()
    target, truth = target_policy(relevance)
    covered, dr_errors = 0, []
    for seed in range(12):
        slates = logged_slates(simulate_log(relevance, 1_500, seed))
        log = target_log(slates, target, RewardModel.fit(slates))
        estimates = estimate(log, seed=seed, n_bootstrap=300)
        covered += estimates["snips"].ci_low <= truth <= estimates["snips"].ci_high
        dr_errors.append(estimates["dr"].value - truth)
        assert estimates["snips"].ess > 50
    assert covered >= 10, covered
    assert abs(np.mean(dr_errors)) < 0.03 * truth, (np.mean(dr_errors), truth)
    assert logged_value(log) < truth  # the target ranks by the true relevance


def test_rewards_propensities_and_consumed_items_come_from_the_log() -> None:
    at = pd.Timestamp("2026-12-01", tz="UTC")
    events = pd.DataFrame(
        [
            {
                "request_id": "r1",
                "user_id": "u",
                "item_id": "a",
                "position": 0,
                "event_type": "impression",
                "propensity": 0.5,
                "event_timestamp": at,
                "variant": "e:x",
            },
            {
                "request_id": "r1",
                "user_id": "u",
                "item_id": "b",
                "position": 1,
                "event_type": "impression",
                "propensity": 0.25,
                "event_timestamp": at,
                "variant": "e:x",
            },
            {
                "request_id": "r1",
                "user_id": "u",
                "item_id": "b",
                "position": 1,
                "event_type": "click",
                "propensity": 0.25,
                "event_timestamp": at + pd.Timedelta(seconds=1),
                "variant": "e:x",
            },
            {
                "request_id": "r2",
                "user_id": "u",
                "item_id": "c",
                "position": 0,
                "event_type": "impression",
                "propensity": 0.5,
                "event_timestamp": at + pd.Timedelta(seconds=5),
                "variant": "e:x",
            },
            {
                "request_id": "r3",
                "user_id": "u",
                "item_id": "d",
                "position": 0,
                "event_type": "impression",
                "propensity": None,
                "event_timestamp": at,
                "variant": "champion",
            },
        ]
    ).assign(tenant_id="shop")
    slates = logged_slates(events)
    rows = slates.rows
    # no propensity, or a certain one (a greedy list): no row
    assert rows["request_id"].tolist() == ["r1", "r1", "r2"]
    assert rows["reward"].tolist() == [0.0, 1.0, 0.0]
    assert rows["consumed"].tolist() == [(), (), ("b",)]
    assert slates.k == 2
    only = logged_slates(events, variants=("e:y",))
    assert only.rows.empty
