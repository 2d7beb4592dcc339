"""`recloop models ...`: list, inspect, promote and roll back registered models.

Every promote and rollback is appended to the registry's promotion log with
who, when and why; the running service picks the new champion up through
POST /admin/reload (or at its next start).
"""

from __future__ import annotations

import argparse
import json
import sys

from recloop.models.kinds import CorruptArtifactError
from recloop.registry.model_registry import PromotionError, Registry
from recloop.settings import Settings

NDCG = "ndcg@10"
LIST_COLUMNS = ("champion", "version", "created_at", "gate", NDCG, "served_for", "code_version")


def _list_row(registry: Registry, version: str, champions: set[str]) -> dict[str, object]:
    """One registered model as `models list` shows it (`champions`: every tenant's)."""
    metadata = registry.metadata(version)
    deployed = {d.version: f"{d.experiment}:{d.variant}" for d in registry.deployments()}
    if "experiment" in metadata:  # gated by its evaluation, recorded when deployed
        variant = f"{metadata['experiment']}:{metadata['variant']}"
        served_for = f"experiment {variant}" + ("" if version in deployed else " (not deployed)")
    else:
        served_for = f"champion of {registry.tenant_of(version)}" if version in champions else ""
    gate = metadata.get("gate", {})
    ndcg = metadata.get("metrics", {}).get("all", {}).get(NDCG)
    return {
        "champion": version in champions,
        "version": version,
        "created_at": registry.created_at(version),
        "gate": ("passed" if gate.get("passed") else "failed") if gate else "",
        NDCG: None if ndcg is None else round(float(ndcg), 4),
        "served_for": served_for,
        "code_version": metadata.get("code_version"),
    }


def _table(rows: list[dict[str, object]]) -> str:
    """Aligned columns under a header; each tenant's champion marked with *."""
    cells = [
        [
            "*" if row["champion"] else "",
            *("" if row[c] is None else str(row[c]) for c in LIST_COLUMNS[1:]),
        ]
        for row in rows
    ]
    header = ["", *(c.upper() for c in LIST_COLUMNS[1:])]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `recloop models` action; registry refusals print and return 2."""
    try:
        return _run(args, Registry.of(settings))
    except (PromotionError, CorruptArtifactError) as exc:
        print(f"recloop models: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, registry: Registry) -> int:
    if args.action == "list":
        champions = set(registry.champions().values())
        rows = sorted(
            (_list_row(registry, version, champions) for version in registry.versions()),
            key=lambda row: str(row["created_at"]),
        )
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no models registered under {registry.root}; run `make demo` or `recloop run`")
        else:
            print(_table(rows))
    elif args.action == "show":
        print(
            json.dumps(
                {
                    "labels": registry.labels(args.version),
                    "metadata": registry.metadata(args.version),
                },
                indent=2,
                default=str,
            )
        )
    elif args.action == "history":
        for record in registry.history():
            forced = " (forced)" if record.forced else ""
            print(
                f"{record.at}  {record.tenant}  {record.action:<8} {record.previous} -> "
                f"{record.version}{forced}  by {record.actor}: {record.reason}"
            )
    elif args.action == "promote":
        record = registry.promote(args.version, reason=args.reason, force=args.force)
        print(f"champion of {record.tenant} is now {record.version} (was {record.previous})")
    elif args.action == "rollback":
        record = registry.rollback(reason=args.reason, tenant=args.tenant)
        print(
            f"rolled back: champion of {record.tenant} is now {record.version} "
            f"(was {record.previous})"
        )
    return 0
