"""`recloop models ...`: list, inspect, promote and roll back registered models.

Every promote and rollback is appended to the registry's promotion log with
who, when and why; the running service picks the new champion up through
POST /admin/reload (or at its next start).
"""

from __future__ import annotations

import argparse
import json
import sys

from recloop.data.layout import DataLayout
from recloop.models.model_artifact import CorruptArtifactError
from recloop.registry.model_registry import PromotionError, Registry
from recloop.settings import Settings

NDCG = "ndcg@10"


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `recloop models` action; registry refusals print and return 2."""
    try:
        return _run(args, Registry(DataLayout(settings.data_dir).registry))
    except (PromotionError, CorruptArtifactError) as exc:
        print(f"recloop models: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, registry: Registry) -> int:
    champion = registry.champion()
    if args.action == "list":
        versions = registry.versions()
        if not versions:
            print(f"no models registered under {registry.root}; run the train_and_promote job")
        deployed = {d.version: f"{d.experiment}:{d.variant}" for d in registry.deployments()}
        for version in versions:
            metadata = registry.metadata(version)
            marker = "*" if version == champion else " "
            code = f"code {metadata.get('code_version')}"
            if "experiment" in metadata:  # gated by its evaluation, recorded when deployed
                variant = f"{metadata['experiment']}:{metadata['variant']}"
                state = (
                    f"deployed for {deployed[version]}" if version in deployed else "not deployed"
                )
                print(f"{marker} {version}  experiment {variant}, {state}  {code}")
                continue
            gate = "passed" if metadata.get("gate", {}).get("passed") else "FAILED"
            ndcg = metadata.get("metrics", {}).get("all", {}).get(NDCG, float("nan"))
            print(f"{marker} {version}  gate {gate:<6}  ndcg@10 {ndcg:.4f}  {code}")
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
                f"{record.at}  {record.action:<8} {record.previous} -> {record.version}{forced}"
                f"  by {record.actor}: {record.reason}"
            )
    elif args.action == "promote":
        record = registry.promote(args.version, reason=args.reason, force=args.force)
        print(f"champion is now {record.version} (was {record.previous})")
    elif args.action == "rollback":
        record = registry.rollback(reason=args.reason)
        print(f"rolled back: champion is now {record.version} (was {record.previous})")
    return 0
