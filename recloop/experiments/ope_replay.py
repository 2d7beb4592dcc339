"""Off-policy evaluation of registry models on the logged traffic (recloop.experiments.ope_logged).

Daily user features come from a point-in-time join the caller passes in
(`features_as_of`: Feast's, in the pipeline), streaming ones are rebuilt from the log.

A target is a model served with a policy: for each logged request it ranks the
candidate pool from the user's features as of the request (Feast's point-in-time
join, as training does) without what the user had engaged with by then, and the
policy gives every candidate's probability at every position. Used twice:

- `ope_gate_result`: the promotion gate `ope_vs_logged` of a candidate, decided only
  when the log holds enough exploration (effective sample size) for it;
- `ope_next_to_truth`: in an experiment's readout, each variant's value estimated from
  each variant's traffic (its own: a replay check), beside what it earned online.

A request's candidate set leaves out what its user had clicked, bought or rated before
it: what the simulated app excludes, and what a client that excludes consumed items
does. A client that excludes something else makes the replay differ from what was
served (the own-traffic estimate shows it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from recloop.data.layout import DataLayout
from recloop.data.validated_log import engagements_of, logged_events
from recloop.evaluation.gates import GateConfig, GateResult
from recloop.experiments.ope import ope_gate
from recloop.experiments.ope_logged import (
    LoggedSlates,
    RewardModel,
    TargetPolicy,
    estimate,
    logged_slates,
    logged_value,
    target_log,
)
from recloop.experiments.routing import variant_label
from recloop.experiments.serving import variant_policy
from recloop.experiments.spec import ExperimentSpec
from recloop.features.feature_vectors import STREAM_VIEW
from recloop.features.stream_features import (
    FEATURE_COLUMNS,
    TIMESTAMP_DTYPE,
    stream_features_as_of,
)
from recloop.inference.policies import Policy
from recloop.inference.retrievers import Servable, servable
from recloop.registry.model_registry import Registry

# Daily user features as of each row's `event_timestamp` (columns `user_id`,
# `event_timestamp`), in the rows' order: a point-in-time join.
UserFeaturesAsOf = Callable[[pd.DataFrame], pd.DataFrame]
OPE_GATE = "ope_vs_logged"
# Logged requests a gate or a readout evaluates (a seeded sample): about a millisecond
# of ranking each.
MAX_REQUESTS = 2_000
# The gate looks at this much recent traffic.
GATE_WINDOW = timedelta(days=7)


def slates_with_history(
    layout: DataLayout, events: pd.DataFrame, variants: tuple[str, ...] | None = None
) -> LoggedSlates:
    """`logged_slates` of `events` (a seeded sample of MAX_REQUESTS requests), with each
    user's whole engagement history, so `consumed` is what the client excluded."""
    sample = logged_slates(events, variants, max_requests=MAX_REQUESTS)
    users = sorted(sample.rows["user_id"].astype(str).unique())
    history = engagements_of(layout, users)
    chosen = events.loc[events["request_id"].isin(set(sample.rows["request_id"]))]
    combined = pd.concat(
        [chosen, history.loc[~history["event_id"].isin(set(chosen["event_id"]))]],
        ignore_index=True,
    )
    return logged_slates(combined, variants)


def model_target(
    layout: DataLayout,
    features_as_of: UserFeaturesAsOf,
    slates: LoggedSlates,
    model: Servable,
    policy: Policy,
) -> TargetPolicy:
    """`model` served with `policy`, on the logged requests of `slates`: daily user
    features from the point-in-time join, streaming ones from the log."""
    requests = slates.requests
    features = None
    if model.needs_features and len(requests):
        entities = requests[["tenant_id", "user_id", "event_timestamp"]].assign(
            tenant_id=lambda f: f["tenant_id"].astype(str),
            user_id=lambda f: f["user_id"].astype(str),
            event_timestamp=lambda f: f["event_timestamp"].astype(TIMESTAMP_DTYPE),
        )
        joined = features_as_of(entities)
        users = sorted(requests["user_id"].astype(str).unique())
        # From the log rather than the dbt mart, which lags the traffic until the next dbt run.
        stream = stream_features_as_of(engagements_of(layout, users), requests)
        for column in FEATURE_COLUMNS:
            joined[f"{STREAM_VIEW}__{column}"] = stream[column].to_numpy()
        features = joined.set_index(requests["request_id"].to_numpy())

    def probabilities(request: pd.Series, k: int) -> tuple[list[str], np.ndarray]:
        user = str(request["user_id"])
        row = None
        if features is not None:
            row = features.loc[[request["request_id"]]].reset_index(drop=True)
        pool = model.recommend(user, row, max(policy.pool_size(k), k), list(request["consumed"]))
        if not pool.item_ids:
            return [], np.zeros((0, k))
        return pool.item_ids, policy.position_probabilities(
            np.asarray(pool.scores), min(k, len(pool.item_ids))
        )

    return probabilities


def ope_gate_result(
    layout: DataLayout,
    features_as_of: UserFeaturesAsOf,
    model: Servable,
    policy: Policy,
    min_ess: float,
    tolerance: float,
    now: datetime | None = None,
) -> GateResult:
    """The `ope_vs_logged` gate: SNIPS of the candidate on the last week's logged traffic
    against what that traffic earned. Passes, saying it was skipped, when the log holds
    no propensities or too little exploration to decide (ESS below `min_ess`)."""
    since = (now or datetime.now(UTC)) - GATE_WINDOW
    slates = slates_with_history(layout, logged_events(layout, since))
    if slates.rows.empty:
        return GateResult(
            OPE_GATE,
            True,
            0.0,
            min_ess,
            "skipped: no logged impressions with propensities",
            skipped=True,
        )
    target = model_target(layout, features_as_of, slates, model, policy)
    log = target_log(slates, target, RewardModel.fit(slates))
    verdict = ope_gate(estimate(log)["snips"], logged_value(log), min_ess, tolerance)
    if not verdict.decided:
        return GateResult(
            OPE_GATE, True, verdict.ess, min_ess, f"skipped: {verdict.reason}", skipped=True
        )
    return GateResult(OPE_GATE, verdict.passed, verdict.ci_low, verdict.threshold, verdict.reason)


def ope_next_to_truth(
    layout: DataLayout,
    features_as_of: UserFeaturesAsOf,
    events: pd.DataFrame,
    targets: dict[str, tuple[Servable, Policy]],
) -> list[dict[str, object]]:
    """For each target variant label and each variant whose traffic carries propensities,
    its own included: the target's value estimated from that traffic (IPS, SNIPS, DM, DR,
    ESS), next to the clicks per request the target earned online. On its own traffic
    the estimate must match what it earned: a check that the replay (features as of the
    request, the candidate set, the policy's propensities) is faithful. On another
    variant's traffic it is the off-policy estimate proper."""
    results = []
    for label, (model, policy) in targets.items():
        own = events.loc[events["variant"] == label]
        requests = own.loc[own["event_type"] == "impression", "request_id"].nunique()
        clicks = int(own["event_type"].isin(("click", "purchase")).sum())
        online = clicks / requests if requests else float("nan")
        for other in sorted(set(events["variant"].dropna())):
            slates = slates_with_history(layout, events, variants=(other,))
            if slates.rows.empty:
                continue
            target = model_target(layout, features_as_of, slates, model, policy)
            log = target_log(slates, target, RewardModel.fit(slates))
            estimates = estimate(log)
            results.append(
                {
                    "target": label,
                    "logs_of": other,
                    "online_clicks_per_request": online,
                    "online_requests": int(requests),
                    "logging_clicks_per_request": logged_value(log),
                    **{
                        name: {"value": e.value, "ci": [e.ci_low, e.ci_high], "ess": e.ess}
                        for name, e in estimates.items()
                    },
                    # below the gate's effective sample size the other variant's lists
                    # rarely hold what the target would show: the estimates are noise
                    "enough_overlap": estimates["snips"].ess >= GateConfig.ope_min_ess,
                }
            )
    return results


def ope_targets(registry: Registry, spec: ExperimentSpec) -> dict[str, tuple[Servable, Policy]]:
    """The spec's realtime variants' models and policies, as the service serves them now."""
    targets = {}
    for name in spec.test.served:
        variant = spec.variants[name]
        if variant.inference == "batch":
            continue
        if variant.trains:
            version = registry.deployed_version(spec.name, name, variant.training_digest)
        else:
            version = (
                registry.champion(spec.tenant) if variant.model == "champion" else variant.model
            )
        if version is not None:
            model = servable(registry.load(version))
            targets[variant_label(spec.name, name)] = (model, variant_policy(variant))
    return targets
