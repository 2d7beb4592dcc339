"""Model registry: content-addressed model directories, a champion, an audit log.

Each candidate is a directory `models/<name>/<version>/` (`two_tower/tt-<hash>`,
`popularity/pop-<hash>`, `ease/ease-<hash>` or `multi_stage/ms-<hash>`; `KINDS` says how
each kind is stored, one entry per kind): the artifact files with their manifest, and
`registry.json` with labels and metadata (metrics, gate verdict, training partitions,
feature service, code version). The version is the hash of the manifest, so the same
model is stored once and a directory is never rewritten; a new one appears by an atomic
rename, so readers never see half a model. Which one serves is decided by an
append-only promotion log (`promotions.jsonl`, one fsync'd JSON line per promote or
rollback); the champion is the top of the stack that log replays to. Loading a model
re-checks every file's sha256 (recloop.models.model_artifact).

Plain files rather than a serving framework's model store: the Dagster process, the
CLI and the service read the same registry without importing BentoML.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recloop.inference.retrievers import ServableModel
from recloop.models import ease_model, model_artifact, multi_stage_model, popularity_model
from recloop.models.ease_model import EaseModel, load_ease, save_ease
from recloop.models.model_artifact import ModelBundle, load_bundle, read_manifest, save_bundle
from recloop.models.multi_stage_model import MultiStageModel, load_multi_stage, save_multi_stage
from recloop.models.popularity_model import PopularityModel, load_popularity, save_popularity
from recloop.settings import actor_from_env

REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class ModelKind:
    """How one model kind is stored: its directory under `models/`, the prefix of its
    versions, and the functions that write, verify-and-read and re-hash its artifact."""

    name: str
    model_type: type
    version_prefix: str
    save: Callable[[Any, Path], str]
    # (directory, expected version, with_evaluated): a refit two-tower, EASE and a
    # multi-stage model have a second, judged state to load
    load: Callable[[Path, str, bool], ServableModel]
    manifest_version: Callable[[dict[str, object]], str]


KINDS = (
    ModelKind(
        "two_tower",
        ModelBundle,
        model_artifact.VERSION_PREFIX,
        save_bundle,
        load_bundle,
        model_artifact.manifest_version,
    ),
    ModelKind(
        "popularity",
        PopularityModel,
        popularity_model.VERSION_PREFIX,
        save_popularity,
        lambda directory, version, _: load_popularity(directory, version),
        popularity_model.manifest_version,
    ),
    ModelKind(
        "ease",
        EaseModel,
        ease_model.VERSION_PREFIX,
        save_ease,
        load_ease,
        ease_model.manifest_version,
    ),
    ModelKind(
        "multi_stage",
        MultiStageModel,
        multi_stage_model.VERSION_PREFIX,
        save_multi_stage,
        load_multi_stage,
        multi_stage_model.manifest_version,
    ),
)


def kind_of_version(version: str) -> ModelKind:
    """The kind a version belongs to, from its prefix; the two-tower for any other string
    (which then names no stored model)."""
    return next((k for k in KINDS if version.startswith(k.version_prefix)), KINDS[0])


def model_name(version: str) -> str:
    """The model name a version is stored under, from its prefix."""
    return kind_of_version(version).name


def kind_of_model(model: ServableModel) -> ModelKind:
    """The kind that stores `model`; a TypeError for anything no kind stores."""
    for kind in KINDS:
        if isinstance(model, kind.model_type):
            return kind
    raise TypeError(f"no registered model kind stores a {type(model).__name__}")


class PromotionError(RuntimeError):
    """A promote or rollback that the registry refuses, with the reason."""


@dataclass(frozen=True)
class PromotionRecord:
    action: str  # "promote" | "rollback"
    version: str  # the champion after this record
    previous: str | None
    actor: str
    reason: str
    at: str
    forced: bool = False


@dataclass(frozen=True)
class VariantDeployment:
    """An experiment variant's model, put live after its gates passed."""

    experiment: str
    variant: str
    version: str
    # recloop.experiments.Variant.training_digest of the spec that trained it: the
    # service serves the record only while the spec still describes this training.
    training_digest: str
    actor: str
    reason: str
    at: str
    gate: dict = field(default_factory=dict)


class Registry:
    def __init__(self, root: Path):
        self.root = root
        # Nothing is created until something is written: reading a registry that does
        # not exist (a mistyped data directory) must leave no trace.
        self.models_dir = root / "models"
        self.log_file = root / "promotions.jsonl"
        self.deployments_file = root / "experiments.jsonl"

    def register(self, model: ServableModel, labels: dict[str, str], metadata: dict) -> str:
        """Save `model` as a candidate (idempotent: the same content is stored once)."""
        staging = self.root / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        version = kind_of_model(model).save(model, staging)
        target = self._directory(version)
        if target.exists():
            shutil.rmtree(staging)
            return version
        record = {
            "name": model_name(version),
            "version": version,
            "created_at": _now(),
            "labels": {"stage": "candidate", **labels},
            "metadata": metadata,
        }
        (staging / REGISTRY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        return version

    def versions(self) -> list[str]:
        """Every registered version, all kinds."""
        return sorted(
            path.parent.name
            for kind in KINDS
            for path in (self.models_dir / kind.name).glob(f"*/{REGISTRY_FILE}")
        )

    def _directory(self, version: str) -> Path:
        return self.models_dir / model_name(version) / version

    def _record(self, version: str) -> dict:
        path = self._directory(version) / REGISTRY_FILE
        if not path.exists():
            raise PromotionError(
                f"no model {model_name(version)}:{version} in {self.models_dir}; "
                f"known: {self.versions()}"
            )
        return json.loads(path.read_text())

    def path(self, version: str) -> Path:
        self._record(version)
        return self._directory(version)

    def metadata(self, version: str) -> dict:
        return dict(self._record(version)["metadata"])

    def labels(self, version: str) -> dict[str, str]:
        return dict(self._record(version)["labels"])

    def created_at(self, version: str) -> str:
        """When the version was registered (ISO 8601, UTC)."""
        return str(self._record(version)["created_at"])

    def load(self, version: str, with_evaluated: bool = False) -> ServableModel:
        """The model, every file checked against its sha256 and the version.
        `with_evaluated`: a refit two-tower, EASE or a multi-stage model also brings the
        state its gates judged (`judged()`), which offline comparisons must score."""
        return kind_of_version(version).load(self.path(version), version, with_evaluated)

    def manifest(self, version: str) -> dict[str, object]:
        """The version's manifest, checked against its own hash."""
        return read_manifest(self.path(version), kind_of_version(version).manifest_version)

    def history(self) -> list[PromotionRecord]:
        if not self.log_file.exists():
            return []
        return [
            PromotionRecord(**json.loads(line))
            for line in self.log_file.read_text().splitlines()
            if line.strip()
        ]

    def _stack(self) -> list[str]:
        stack: list[str] = []
        for record in self.history():
            if record.action == "promote":
                stack.append(record.version)
            else:
                stack.pop()
        return stack

    def champion(self) -> str | None:
        stack = self._stack()
        return stack[-1] if stack else None

    def _append(self, record: PromotionRecord) -> PromotionRecord:
        _append_line(self.log_file, asdict(record))
        return record

    def deploy_variant(
        self,
        experiment: str,
        variant: str,
        version: str,
        training_digest: str,
        gate: dict,
        reason: str,
        actor: str | None = None,
    ) -> VariantDeployment:
        """Serve `version` for the variant; refused when `gate` (the variant's evaluation:
        passed, results) did not pass. The verdict is kept in the record."""
        self.manifest(version)
        if not gate.get("passed", False):
            failed = [r["name"] for r in gate.get("results", []) if not r["passed"]]
            raise PromotionError(
                f"{version} did not pass its gates (failed: {failed or 'no gate verdict'}); "
                f"it cannot serve {experiment}:{variant}"
            )
        record = VariantDeployment(
            experiment,
            variant,
            version,
            training_digest,
            actor or actor_from_env(),
            reason,
            _now(),
            gate,
        )
        _append_line(self.deployments_file, asdict(record))
        return record

    def deployments(self) -> list[VariantDeployment]:
        """Every variant deployment, oldest first."""
        if not self.deployments_file.exists():
            return []
        return [
            VariantDeployment(**json.loads(line))
            for line in self.deployments_file.read_text().splitlines()
            if line.strip()
        ]

    def deployment_gate(self, version: str) -> dict:
        """The gate verdict of `version`'s newest variant deployment; {} if never deployed."""
        gates = [d.gate for d in self.deployments() if d.version == version]
        return gates[-1] if gates else {}

    def deployed_version(self, experiment: str, variant: str, training_digest: str) -> str | None:
        """The newest model deployed for the variant as the spec now describes it."""
        matching = [
            d.version
            for d in self.deployments()
            if (d.experiment, d.variant, d.training_digest)
            == (experiment, variant, training_digest)
        ]
        return matching[-1] if matching else None

    def promote(
        self, version: str, reason: str, actor: str | None = None, force: bool = False
    ) -> PromotionRecord:
        """Make `version` the champion; refused when its gates failed, unless `force`.
        An experiment variant's model is judged when it is deployed: its verdict is the
        newest deployment record's (so an A/B test's winner is promoted as it stands)."""
        metadata = self.metadata(version)
        self.manifest(version)
        gate = metadata.get("gate") or self.deployment_gate(version)
        if not gate.get("passed", False) and not force:
            failed = [r["name"] for r in gate.get("results", []) if not r["passed"]]
            raise PromotionError(
                f"{version} did not pass its gates (failed: {failed or 'no gate verdict'}); "
                "use --force to promote anyway (audit-logged)"
            )
        current = self.champion()
        if current == version:
            raise PromotionError(f"{version} is already the champion")
        return self._append(
            PromotionRecord(
                "promote", version, current, actor or actor_from_env(), reason, _now(), forced=force
            )
        )

    def rollback(self, reason: str, actor: str | None = None) -> PromotionRecord:
        """Return to the champion before the current one."""
        stack = self._stack()
        if len(stack) < 2:
            raise PromotionError(
                "nothing to roll back to: "
                + ("no champion yet" if not stack else f"{stack[0]} is the only champion so far")
            )
        return self._append(
            PromotionRecord(
                "rollback", stack[-2], stack[-1], actor or actor_from_env(), reason, _now()
            )
        )


def _append_line(path: Path, record: dict) -> None:
    """One JSON line, fsync'd: the audit logs survive a crash right after the call."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
