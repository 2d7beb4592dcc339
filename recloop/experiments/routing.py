"""Per-request routing: which experiment and variant serve a request, and how lists merge.

Pure and cheap (a few microseconds a request), so the service calls it on every request.

- Assignment is sticky without storage: bucket = first 8 bytes of
  sha256("<salt>:<user id>") as a big-endian integer, mod 10,000 (basis points), mapped
  onto the cumulative allocation in spec order. Analysts can recompute it from the log;
  changing the salt reshuffles users independently of the old assignment.
- Overlaps: specs are tried in name order and the first active one whose audience
  matches wins (`find_overlaps` in recloop.experiments.plan reports where that happens).
- Interleaving merges both variants' lists by team draft (Radlinski et al. 2008), with a
  coin seeded from sha256("<salt>:<request id>"), so a request's list can be replayed.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate

from recloop.experiments.spec import (
    BASIS_POINTS,
    ABTest,
    ExperimentSpec,
    specs_digest,
)


def _hash64(salt: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big")


def variant_label(experiment: str, variant: str) -> str:
    """The `variant` value the event log records, "<experiment>:<variant>" (recloop/experiments/readout.py)."""
    return f"{experiment}:{variant}"


def assignment_bucket(salt: str, user_id: str) -> int:
    """The user's basis point in [0, 10,000) for this salt; the same for every call."""
    return _hash64(salt, user_id) % BASIS_POINTS


def request_rng(salt: str, request_id: str) -> random.Random:
    """The coin of one request's interleaving: stable across processes (unlike `hash()`)."""
    return random.Random(_hash64(salt, request_id))


@dataclass(frozen=True)
class Route:
    """What serves one request: a spec and the variant (A/B) or the two variants
    (interleaving, in spec order; team 0 is `variants[0]`)."""

    spec: ExperimentSpec
    variants: tuple[str, ...]

    @property
    def experiment(self) -> str:
        return self.spec.name

    @property
    def labels(self) -> tuple[str, ...]:
        """The event-log labels of `variants`, in the same order."""
        return tuple(variant_label(self.spec.name, variant) for variant in self.variants)

    @property
    def interleaved(self) -> bool:
        return self.spec.test.kind == "interleaving"

    def chain(self, variant: str) -> tuple[str, ...]:
        """`variant` then its fallbacks: the lists `fill_with_fallback` takes, in order."""
        return (variant, *self.spec.variants[variant].fallback)

    def rng(self, request_id: str) -> random.Random:
        """The interleaving coin for this request."""
        return request_rng(self.spec.test.salt, request_id)


@dataclass(frozen=True)
class _CompiledSpec:
    """A spec with everything `route` needs precomputed: no allocation per request."""

    spec: ExperimentSpec
    salt: str
    # A/B: cumulative basis-point bounds and the route of each slice; interleaving: one route.
    bounds: tuple[int, ...]
    routes: tuple[Route, ...]


def _compile(spec: ExperimentSpec) -> _CompiledSpec:
    if isinstance(spec.test, ABTest):
        names = tuple(spec.test.allocation)
        bounds = tuple(accumulate(spec.test.allocation.values()))
        routes = tuple(Route(spec, (name,)) for name in names)
        return _CompiledSpec(spec, spec.test.salt, bounds, routes)
    return _CompiledSpec(spec, spec.test.salt, (), (Route(spec, spec.test.variants),))


class Router:
    """Routes requests over a fixed set of specs; build a new one when `directory_digest`
    changes (recloop.experiments.spec) to pick up edited specs without a restart."""

    def __init__(self, specs: Iterable[ExperimentSpec]) -> None:
        self.specs = tuple(sorted(specs, key=lambda spec: spec.name))
        self.digest = specs_digest(self.specs)
        # Whether any audience splits new from existing users: if not, the caller need not
        # count the user's events.
        self.needs_user_events = any(spec.audience.users != "all" for spec in self.specs)
        self._compiled = tuple(_compile(spec) for spec in self.specs)

    def route(
        self,
        user_id: str,
        tenant: str,
        context: Mapping[str, object],
        user_events: int | None,
        now: datetime,
    ) -> Route | None:
        """The first active spec (by name) whose audience holds the request, with the
        user's variant; None when no spec applies (the service serves its champion).

        `now` must carry a time zone; `user_events` None means "not counted" (such a
        request matches only audiences that do not split new from existing users).
        """
        for compiled in self._compiled:
            spec = compiled.spec
            if not spec.start <= now < spec.stop:
                continue
            if not spec.audience.matches(tenant, context, user_events):
                continue
            if not compiled.bounds:
                return compiled.routes[0]
            bucket = _hash64(compiled.salt, user_id) % BASIS_POINTS
            return compiled.routes[bisect_right(compiled.bounds, bucket)]
        return None


def team_draft(
    ranking_a: Sequence[str], ranking_b: Sequence[str], k: int, rng: random.Random
) -> tuple[list[str], list[int]]:
    """Team-draft interleaving (Radlinski, Kurup and Joachims 2008).

    Each round a coin decides which team picks first; a team picks its highest-ranked
    item not yet in the list, and the team with fewer picks goes next. When one ranking
    has nothing left the other keeps picking. Stops at k items or when both rankings are
    exhausted. Returns the merged ids and, per position, the team (0: A, 1: B) whose
    pick it was; clicks are credited to that team.
    """
    rankings = (ranking_a, ranking_b)
    next_index = [0, 0]
    picks = [0, 0]
    merged: list[str] = []
    teams: list[int] = []
    taken: set[str] = set()
    while len(merged) < k:
        for team in (0, 1):
            ranking = rankings[team]
            while next_index[team] < len(ranking) and ranking[next_index[team]] in taken:
                next_index[team] += 1
        has_a, has_b = (next_index[team] < len(rankings[team]) for team in (0, 1))
        if has_a and has_b:
            if picks[0] == picks[1]:
                team = 0 if rng.random() < 0.5 else 1
            else:
                team = 0 if picks[0] < picks[1] else 1
        elif has_a or has_b:
            team = 0 if has_a else 1
        else:
            break
        item = rankings[team][next_index[team]]
        taken.add(item)
        merged.append(item)
        teams.append(team)
        picks[team] += 1
    return merged, teams


def team_draft_credit(teams: Sequence[int], clicked_positions: Iterable[int]) -> tuple[int, int]:
    """Clicks per team (A, B) for one interleaved impression; positions are 0-based.

    A position clicked twice counts once. The team with more clicks wins the impression;
    equal counts (including none) are a tie.
    """
    clicks = [0, 0]
    for position in set(clicked_positions):
        if not 0 <= position < len(teams):
            raise ValueError(f"clicked position {position} is outside the {len(teams)} shown")
        clicks[teams[position]] += 1
    return clicks[0], clicks[1]


def fill_with_fallback(
    primary: Sequence[str], fallbacks: Sequence[Sequence[str]], k: int
) -> tuple[list[str], list[int]]:
    """Up to k distinct items: the primary list first, then each fallback list in order.

    Returns the items and, per position, which list supplied it (0: primary, i: the
    i-th fallback), so the log can say which variant filled each slot.
    """
    items: list[str] = []
    sources: list[int] = []
    seen: set[str] = set()
    for source, ranking in enumerate((primary, *fallbacks)):
        for item in ranking:
            if len(items) == k:
                return items, sources
            if item not in seen:
                seen.add(item)
                items.append(item)
                sources.append(source)
    return items, sources
