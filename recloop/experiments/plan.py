"""What a set of specs would build and serve: asset keys, overlaps, the plan.

`variant_asset_keys` is the naming contract between `recloop experiments plan` and the
Dagster factory that compiles specs into assets; both call it, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from recloop.experiments.spec import BASIS_POINTS, ABTest, Audience, ExperimentSpec, Variant

ASSET_PREFIX = "experiments"


def variant_asset_keys(spec: ExperimentSpec, variant_name: str) -> dict[str, tuple[str, ...]]:
    """Role -> asset key path of the assets one variant needs.

    An `algorithm` variant: training_set (point-in-time examples with the variant's
    features), model (the trained candidate), evaluation (offline metrics on the test
    part; the gates are blocking checks on it), then what puts it live: deployment
    (realtime) or batch_lists (batch: the precomputed top-k lists, pushed to the online
    store and refreshed on `refresh_cron`). A `model` variant serves an existing model:
    only batch_lists when it runs in batch mode, nothing otherwise.
    """
    variant = spec.variants[variant_name]
    roles = ["training_set", "model", "evaluation"] if variant.trains else []
    if variant.inference == "batch":
        roles.append("batch_lists")
    elif variant.trains:
        roles.append("deployment")
    return {role: (ASSET_PREFIX, spec.name, variant_name, role) for role in roles}


def readout_asset_key(spec: ExperimentSpec) -> tuple[str, ...]:
    """The experiment's readout: per-variant results, significance, SRM, OPE, plots."""
    return (ASSET_PREFIX, spec.name, "readout")


def format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def status(spec: ExperimentSpec, now: datetime) -> tuple[str, str]:
    """("scheduled" | "active" | "ended", why, from its dates)."""
    if now < spec.start:
        return "scheduled", f"starts {format_time(spec.start)}, in {_duration(spec.start - now)}"
    if now < spec.stop:
        return "active", f"since {format_time(spec.start)}, stops in {_duration(spec.stop - now)}"
    return "ended", f"stopped {format_time(spec.stop)}"


@dataclass(frozen=True)
class Overlap:
    """Two specs that can both match a request at the same time: the first by name wins."""

    winner: str
    shadowed: str
    start: datetime
    stop: datetime

    def __str__(self) -> str:
        return (
            f"{self.winner} and {self.shadowed} overlap from {format_time(self.start)} to "
            f"{format_time(self.stop)}: requests in both audiences go to {self.winner} "
            f"(first by name), so {self.shadowed} never sees them"
        )


def find_overlaps(specs: Iterable[ExperimentSpec], now: datetime) -> list[Overlap]:
    """Pairs of specs whose schedules (from now on) and audiences intersect."""
    ordered = sorted(specs, key=lambda spec: spec.name)
    overlaps = []
    for index, first in enumerate(ordered):
        for second in ordered[index + 1 :]:
            start = max(first.start, second.start, now)
            stop = min(first.stop, second.stop)
            if start < stop and first.audience.overlaps(second.audience):
                overlaps.append(Overlap(first.name, second.name, start, stop))
    return overlaps


def _audience(audience: Audience) -> dict[str, Any]:
    return {
        "users": audience.users,
        "activity_threshold": audience.activity_threshold,
        "tenants": sorted(audience.tenants) if audience.tenants is not None else None,
        "context": {name: list(values) for name, values in audience.context.items()},
        "description": audience.describe(),
    }


def _variant(spec: ExperimentSpec, variant: Variant) -> dict[str, Any]:
    test = spec.test
    share = test.allocation.get(variant.name) if isinstance(test, ABTest) else None
    return {
        "name": variant.name,
        "served": variant.name in test.served,
        "allocation_percent": share * 100 / BASIS_POINTS if share is not None else None,
        "algorithm": variant.algorithm,
        "model": variant.model,
        "params": dict(variant.params),
        "feature_service": variant.feature_service,
        "inference": variant.inference,
        "batch": (
            {"k": variant.batch.k, "refresh_cron": variant.batch.refresh_cron}
            if variant.batch
            else None
        ),
        "policy": dict(variant.policy) if variant.policy is not None else None,
        "fallback": list(variant.fallback),
        "assets": {role: list(key) for role, key in variant_asset_keys(spec, variant.name).items()},
    }


def build_plan(specs: Sequence[ExperimentSpec], now: datetime) -> dict[str, Any]:
    """The plan as JSON-ready data: per spec its status, routing table and assets."""
    experiments = []
    for spec in sorted(specs, key=lambda spec: spec.name):
        state, reason = status(spec, now)
        test: dict[str, Any] = {"kind": spec.test.kind, "salt": spec.test.salt}
        if isinstance(spec.test, ABTest):
            test["allocation_percent"] = {
                name: share * 100 / BASIS_POINTS for name, share in spec.test.allocation.items()
            }
            test["control"] = spec.test.control
        else:
            test["method"] = spec.test.method
            test["variants"] = list(spec.test.variants)
        experiments.append(
            {
                "name": spec.name,
                "file": str(spec.source),
                "description": spec.description,
                "owner": spec.owner,
                "status": state,
                "reason": reason,
                "start": format_time(spec.start),
                "stop": format_time(spec.stop),
                "primary_metric": spec.primary_metric,
                "audience": _audience(spec.audience),
                "test": test,
                "variants": [_variant(spec, variant) for variant in spec.variants.values()],
            }
        )
    return {
        "now": format_time(now),
        "experiments": experiments,
        "warnings": [str(overlap) for overlap in find_overlaps(specs, now)],
    }


def _policy_text(policy: dict[str, Any] | None) -> str:
    if policy is None:
        return "greedy (default)"
    settings = ", ".join(f"{key}={value}" for key, value in policy.items() if key != "kind")
    return f"{policy['kind']}({settings})" if settings else policy["kind"]


def _variant_lines(variant: dict[str, Any]) -> list[str]:
    if variant["algorithm"]:
        source = f"train {variant['algorithm']}"
        if variant["feature_service"]:
            source += f" on {variant['feature_service']}"
        if variant["params"]:
            source += " " + ", ".join(f"{key}={value}" for key, value in variant["params"].items())
    else:
        source = f"model {variant['model']}"
    if variant["batch"]:
        inference = (
            f"batch top-{variant['batch']['k']} refreshed '{variant['batch']['refresh_cron']}'"
        )
    else:
        inference = "realtime"
    if variant["allocation_percent"] is not None:
        share = f"{variant['allocation_percent']:g}%"
    else:
        share = "interleaved" if variant["served"] else "fallback only"
    fallback = " -> ".join(variant["fallback"]) or "none"
    return [
        f"    {variant['name']} [{share}]: {source}",
        f"      {inference}, policy {_policy_text(variant['policy'])}, fallback {fallback}",
        f"      assets ({ASSET_PREFIX}/<spec>/{variant['name']}/): "
        + (", ".join(variant["assets"]) or "none, the service loads the model"),
    ]


def render_plan(plan: dict[str, Any]) -> str:
    """`build_plan`'s data as plain text for people."""
    lines = [f"plan as of {plan['now']}: {len(plan['experiments'])} experiment(s)"]
    for experiment in plan["experiments"]:
        test = experiment["test"]
        if test["kind"] == "ab":
            split = "A/B " + ", ".join(
                f"{name} {share:g}%" for name, share in test["allocation_percent"].items()
            )
            split += f" (control {test['control']})"
        else:
            split = f"interleaving ({test['method']}) {' vs '.join(test['variants'])}"
        lines += [
            "",
            f"{experiment['name']} ({experiment['file']})",
            f"  {experiment['description']}",
            f"  status: {experiment['status']} ({experiment['reason']})",
            f"  audience: {experiment['audience']['description']}",
            f"  test: {split}; salt {test['salt']}; primary metric {experiment['primary_metric']}",
            "  variants:",
        ]
        for variant in experiment["variants"]:
            lines += _variant_lines(variant)
    if plan["warnings"]:
        lines += ["", "warnings:"] + [f"  {warning}" for warning in plan["warnings"]]
    return "\n".join(lines)


def render_list(specs: Sequence[ExperimentSpec], now: datetime) -> str:
    """One line per spec: name, status, test, variants, dates, metric."""
    rows = [("NAME", "STATUS", "TEST", "VARIANTS", "START", "STOP", "METRIC")]
    for spec in sorted(specs, key=lambda spec: spec.name):
        if isinstance(spec.test, ABTest):
            served = ", ".join(
                f"{name} {share * 100 / BASIS_POINTS:g}%"
                for name, share in spec.test.allocation.items()
            )
        else:
            served = " vs ".join(spec.test.variants)
        rows.append(
            (
                spec.name,
                status(spec, now)[0],
                spec.test.kind,
                served,
                format_time(spec.start),
                format_time(spec.stop),
                spec.primary_metric,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
