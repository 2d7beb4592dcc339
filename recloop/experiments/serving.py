"""One experiment response: the routed variants' lists, filled and merged, with what
the event log must say about each position.

The service routes a request (recloop.experiments.Router) and asks each variant it
needs for a list; this module applies the spec's fallback chain and, for an
interleaving test, the team draft, and says per position which model supplied the
item, which variant is credited with it, and the policy's propensity (known only for
positions the routed variant's own policy drew).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from recloop.experiments import Route, Variant, fill_with_fallback, team_draft
from recloop.inference.policies import Greedy, Policy, policy_from_config
from recloop.inference.retrievers import Recommendation


@dataclass(frozen=True)
class VariantList:
    """A variant's own list for one request and the model version that produced it."""

    recommendation: Recommendation
    model_version: str


@dataclass(frozen=True)
class ExperimentResponse:
    """The served list; every field has one entry per position."""

    item_ids: list[str]
    scores: list[float]
    item_versions: list[str]  # the model that supplied each item
    item_variants: list[str]  # the variant label credited ("<experiment>:<variant>")
    propensities: list[float | None]


VariantLists = Callable[[str, int], VariantList]


def variant_policy(variant: Variant) -> Policy:
    """The variant's serving policy: its spec's `policy`, greedy when it sets none."""
    return policy_from_config(variant.policy) if variant.policy else Greedy()


@dataclass(frozen=True)
class _Filled:
    item_ids: list[str]
    scores: list[float]
    versions: list[str]
    propensities: list[float | None]


def _filled(route: Route, variant: str, lists: VariantLists, k: int) -> _Filled:
    """The variant's list, filled from its fallback chain when it has fewer than k items
    (fallback lists are asked for only when needed)."""
    chain = route.chain(variant)
    fetched = [lists(chain[0], k)]
    for fallback in chain[1:]:
        if len({*(i for f in fetched for i in f.recommendation.item_ids)}) >= k:
            break
        fetched.append(lists(fallback, k))
    items, sources = fill_with_fallback(
        fetched[0].recommendation.item_ids, [f.recommendation.item_ids for f in fetched[1:]], k
    )
    scores = [
        dict(zip(f.recommendation.item_ids, f.recommendation.scores, strict=True)) for f in fetched
    ]
    primary = fetched[0].recommendation
    drawn = (
        dict(zip(primary.item_ids, primary.propensities, strict=True))
        if primary.propensities
        else {}
    )
    return _Filled(
        item_ids=items,
        scores=[scores[source][item] for item, source in zip(items, sources, strict=True)],
        versions=[fetched[source].model_version for source in sources],
        propensities=[
            drawn.get(item) if source == 0 else None
            for item, source in zip(items, sources, strict=True)
        ],
    )


def serve_route(route: Route, lists: VariantLists, k: int, request_id: str) -> ExperimentResponse:
    """The response for a routed request.

    A/B: the user's variant, filled from its fallbacks; every position is credited to
    the variant (the randomisation unit is the user). Interleaving: both variants' filled
    lists merged by team draft with the request's coin; each position is credited to
    the team that picked it, and no position has a propensity (the merge is not a policy
    OPE can replay).
    """
    if not route.interleaved:
        (variant,), (label,) = route.variants, route.labels
        filled = _filled(route, variant, lists, k)
        return ExperimentResponse(
            filled.item_ids,
            filled.scores,
            filled.versions,
            [label] * len(filled.item_ids),
            filled.propensities,
        )
    teams = [_filled(route, variant, lists, k) for variant in route.variants]
    merged, picked_by = team_draft(teams[0].item_ids, teams[1].item_ids, k, route.rng(request_id))
    where = [{item: n for n, item in enumerate(team.item_ids)} for team in teams]
    return ExperimentResponse(
        merged,
        [teams[t].scores[where[t][item]] for item, t in zip(merged, picked_by, strict=True)],
        [teams[t].versions[where[t][item]] for item, t in zip(merged, picked_by, strict=True)],
        [route.labels[t] for t in picked_by],
        [None] * len(merged),
    )
