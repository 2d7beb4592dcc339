"""Off-policy evaluation on the service's own log: what a model would have earned on the
requests another policy served.

The log (validated raw events) holds one impression row per shown item with the
serving policy's propensity (recloop.inference.policies, logged by the service) and click rows
that name the request and position they answer. `logged_slates` turns it into one
row per (request, position) with its click; `target_log` asks a target policy, request
by request, for the marginal probability of every candidate at every position, and
builds the `recloop.experiments.ope.SlateLog` the estimators read; `estimate` runs them.

The reward model for DM and DR is deliberately simple and position-based:
qhat(item, p) = ctr(p) * lift(item), with ctr(p) the logged click rate at p and
lift(item) the item's shrunken click rate relative to the overall one. DR stays
unbiased however rough it is; DM is only as good as it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recloop.experiments.ope import (
    OPEEstimate,
    SlateLog,
    direct_method,
    doubly_robust,
    ips,
    observed_value,
    snips,
)

# What earns a reward, and what a user has consumed (the client leaves it out of later lists).
ENGAGEMENTS = ("click", "purchase")
CONSUMPTION = ("click", "purchase", "rating")
# A position its policy filled with certainty (a greedy list logs propensity 1) says
# nothing about the other items that could have been there: such rows break the
# estimators' overlap condition and are left out.
CERTAIN = 1.0 - 1e-9
# Impressions an item needs before its own click rate outweighs the overall one.
ITEM_PRIOR_IMPRESSIONS = 20.0


@dataclass(frozen=True)
class LoggedSlates:
    """Rows: request_id, user_id, event_timestamp, position, item_id, propensity, reward."""

    rows: pd.DataFrame

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request: request_id, tenant_id, user_id, event_timestamp, and the
        items the user engaged with before it (what the app would have excluded)."""
        return self.rows.drop_duplicates("request_id")[
            ["request_id", "tenant_id", "user_id", "event_timestamp", "consumed"]
        ].reset_index(drop=True)

    @property
    def k(self) -> int:
        return int(self.rows["position"].max()) + 1 if len(self.rows) else 0


def logged_slates(
    events: pd.DataFrame,
    variants: tuple[str, ...] | None = None,
    max_requests: int | None = None,
    seed: int = 0,
) -> LoggedSlates:
    """Impressions a stochastic policy served, with their propensity (optionally only by
    `variants`), and whether each was engaged with; at most `max_requests` requests, a
    seeded sample."""
    events = events.assign(event_timestamp=pd.to_datetime(events["event_timestamp"], utc=True))
    propensity = pd.to_numeric(events["propensity"], errors="coerce")
    shown = events.loc[
        (events["event_type"] == "impression") & propensity.notna() & (propensity < CERTAIN)
    ]
    if variants is not None:
        shown = shown.loc[shown["variant"].isin(variants)]
    requests = shown["request_id"].unique()
    if max_requests is not None and len(requests) > max_requests:
        requests = np.random.default_rng(seed).choice(requests, max_requests, replace=False)
        shown = shown.loc[shown["request_id"].isin(requests)]
    engaged = events.loc[events["event_type"].isin(ENGAGEMENTS)]
    clicked = set(zip(engaged["request_id"], engaged["position"].astype("Int64"), strict=True))
    rows = shown[
        [
            "request_id",
            "tenant_id",
            "user_id",
            "event_timestamp",
            "position",
            "item_id",
            "propensity",
        ]
    ].copy()
    rows["position"] = rows["position"].astype(int)
    rows["reward"] = [
        float((r, p) in clicked) for r, p in zip(rows["request_id"], rows["position"], strict=True)
    ]
    rows["consumed"] = _consumed_before(rows, events.loc[events["event_type"].isin(CONSUMPTION)])
    return LoggedSlates(rows.sort_values(["request_id", "position"]).reset_index(drop=True))


def _consumed_before(rows: pd.DataFrame, engaged: pd.DataFrame) -> list[tuple[str, ...]]:
    """Per row, the items its user (tenant and id: tenants share ids) clicked, bought or
    rated before the request's time."""

    def naive(stamps: pd.Series) -> np.ndarray:
        return stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")

    history = {
        user: (naive(group["event_timestamp"]), group["item_id"].astype(str).to_numpy())
        for user, group in engaged.sort_values("event_timestamp").groupby(["tenant_id", "user_id"])
    }
    empty = (np.array([], dtype="datetime64[ns]"), np.array([], dtype=str))
    out = []
    users = zip(rows["tenant_id"], rows["user_id"], strict=True)
    for user, at in zip(users, naive(rows["event_timestamp"]), strict=True):
        times, items = history.get(user, empty)
        out.append(tuple(items[: np.searchsorted(times, at, side="left")]))
    return out


@dataclass(frozen=True)
class RewardModel:
    """qhat(item, position) = position click rate x the item's shrunken click-rate lift."""

    position_ctr: np.ndarray  # (k,)
    item_lift: dict[str, float]

    @classmethod
    def fit(cls, slates: LoggedSlates) -> RewardModel:
        rows = slates.rows
        by_position = rows.groupby("position")["reward"].mean()
        position_ctr = by_position.reindex(range(slates.k), fill_value=0.0).to_numpy()
        overall = float(rows["reward"].mean()) if len(rows) else 0.0
        stats = rows.groupby("item_id")["reward"].agg(["sum", "count"])
        shrunk = (stats["sum"] + ITEM_PRIOR_IMPRESSIONS * overall) / (
            stats["count"] + ITEM_PRIOR_IMPRESSIONS
        )
        lift = shrunk / overall if overall > 0 else pd.Series(1.0, index=shrunk.index)
        return cls(position_ctr, {str(i): float(v) for i, v in lift.items()})

    def predict(self, items: list[str], position: int) -> np.ndarray:
        lifts = np.array([self.item_lift.get(str(i), 1.0) for i in items])
        return np.clip(self.position_ctr[position] * lifts, 0.0, 1.0)


# (request row: request_id, user_id, event_timestamp, consumed; k) ->
# (candidate item ids, (n_candidates, k) marginal P(candidate at position))
TargetPolicy = Callable[[pd.Series, int], tuple[list[str], np.ndarray]]


def target_log(slates: LoggedSlates, target: TargetPolicy, model: RewardModel) -> SlateLog:
    """The SlateLog of `target` on the logged requests: per logged row its target
    propensity, the reward model's prediction, and the target's expected model reward."""
    rows = slates.rows
    k = slates.k
    target_propensity = np.zeros(len(rows))
    target_reward = np.zeros(len(rows))
    starts = np.flatnonzero(
        np.r_[True, rows["request_id"].to_numpy()[1:] != rows["request_id"].to_numpy()[:-1]]
    )
    ends = np.r_[starts[1:], len(rows)]
    for start, end in zip(starts, ends, strict=True):
        request = rows.iloc[start]
        candidates, probabilities = target(request, k)
        index = {item: n for n, item in enumerate(candidates)}
        width = probabilities.shape[1] if len(candidates) else 0
        for row in range(start, end):
            position = int(rows["position"].iat[row])
            where = index.get(str(rows["item_id"].iat[row]))
            if where is not None and position < width:
                target_propensity[row] = probabilities[where, position]
            if position < width:
                target_reward[row] = float(
                    probabilities[:, position] @ model.predict(candidates, position)
                )
    return SlateLog(
        request=rows["request_id"].to_numpy(),
        position=rows["position"].to_numpy(),
        reward=rows["reward"].to_numpy(),
        logging_propensity=rows["propensity"].to_numpy(float),
        target_propensity=target_propensity,
        model_reward=np.array(
            [
                model.predict([item], int(position))[0]
                for item, position in zip(rows["item_id"], rows["position"], strict=True)
            ]
        ),
        target_model_reward=target_reward,
    )


def estimate(log: SlateLog, seed: int = 0, n_bootstrap: int = 500) -> dict[str, OPEEstimate]:
    """IPS, SNIPS, DM and DR of the log's target, same bootstrap seed for each."""
    return {
        name: estimator(log, n_bootstrap=n_bootstrap, seed=seed)
        for name, estimator in (
            ("ips", ips),
            ("snips", snips),
            ("dm", direct_method),
            ("dr", doubly_robust),
        )
    }


def logged_value(log: SlateLog) -> float:
    """The logging policy's own clicks per request on these requests."""
    return observed_value(log)
