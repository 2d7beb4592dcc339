"""Model registry: content-addressed model directories, a champion, an audit log.

Each candidate is a directory `models/<name>/<version>/` (`two_tower/tt-<hash>`,
`popularity/pop-<hash>`, `ease/ease-<hash>` or `multi_stage/ms-<hash>`; `KINDS` says how
each kind is stored, one entry per kind): the artifact files with their manifest, and
`registry.json` with labels and metadata (metrics, gate verdict, training partitions,
feature service, code version). The version is the hash of the manifest, so the same
model is stored once and a directory is never rewritten; a new one appears by an atomic
rename, so readers never see half a model. Which one serves is decided by an
append-only promotion log (`promotions.jsonl`, one fsync'd JSON line per promote or
rollback; a PostgreSQL table when the registry is shared by several machines:
recloop.registry.decision_log); the champion is the top of the stack that log replays to. Loading a model
re-checks every file's sha256 (recloop.models.model_artifact).

Each tenant has a champion of its own: a model serves the tenant it was trained for
(`model_tenant`), a promote or rollback record names that tenant, and each tenant's
stack replays only its own records, so promoting one tenant's model never changes
another's champion. Records written before tenants were recorded name none; theirs is
read from the model.

Plain files rather than a serving framework's model store: the Dagster process, the
CLI and the service read the same registry without importing BentoML.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recloop.data.layout import DataLayout
from recloop.models.kinds import (
    EASE_PREFIX,
    MULTI_STAGE_PREFIX,
    POPULARITY_PREFIX,
    TWO_TOWER_PREFIX,
)
from recloop.registry.decision_log import DecisionLog, FileDecisionLog, PostgresDecisionLog
from recloop.settings import Settings, actor_from_env

if TYPE_CHECKING:
    from recloop.inference.retrievers import ServableModel

REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class ModelKind:
    """How one model kind is stored: its directory under `models/`, the prefix of its
    versions, and where its model class and the functions that write, verify-and-read
    and re-hash its artifact live. The module is imported only when a model of the kind
    is saved or loaded: listing the registry reads JSON, not torch or LightGBM."""

    name: str
    version_prefix: str
    module: str
    model_class: str
    save_function: str
    # (directory, expected version, with_evaluated): a refit two-tower, EASE and a
    # multi-stage model have a second, judged state to load
    load_function: str
    loads_judged_state: bool = True

    def _attribute(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)

    @property
    def model_type(self) -> type:
        return self._attribute(self.model_class)

    def save(self, model: Any, directory: Path) -> str:
        return self._attribute(self.save_function)(model, directory)

    def manifest_version(self, manifest: dict[str, object]) -> str:
        """The version a manifest of this kind hashes to."""
        return self._attribute("manifest_version")(manifest)

    def load(self, directory: Path, version: str, with_evaluated: bool) -> ServableModel:
        load = self._attribute(self.load_function)
        if self.loads_judged_state:
            return load(directory, version, with_evaluated)
        return load(directory, version)


KINDS = (
    ModelKind(
        "two_tower",
        TWO_TOWER_PREFIX,
        "recloop.models.model_artifact",
        "ModelBundle",
        "save_bundle",
        "load_bundle",
    ),
    ModelKind(
        "popularity",
        POPULARITY_PREFIX,
        "recloop.models.popularity_model",
        "PopularityModel",
        "save_popularity",
        "load_popularity",
        loads_judged_state=False,
    ),
    ModelKind(
        "ease", EASE_PREFIX, "recloop.models.ease_model", "EaseModel", "save_ease", "load_ease"
    ),
    ModelKind(
        "multi_stage",
        MULTI_STAGE_PREFIX,
        "recloop.models.multi_stage_model",
        "MultiStageModel",
        "save_multi_stage",
        "load_multi_stage",
    ),
)


def kind_of_version(version: str) -> ModelKind:
    """The kind a version belongs to, from its prefix; the two-tower for any other string
    (which then names no stored model)."""
    return next((k for k in KINDS if version.startswith(k.version_prefix)), KINDS[0])


def model_name(version: str) -> str:
    """The model name a version is stored under, from its prefix."""
    return kind_of_version(version).name


def model_tenant(metadata: dict[str, Any], version: str) -> str:
    """The tenant a model serves: the first its training set held (recorded as `tenants`)."""
    tenants = metadata.get("tenants")
    if not tenants:
        raise ValueError(f"model {version} records no tenant; retrain it with this recloop")
    return str(tenants[0])


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
    tenant: str = ""  # the tenant whose champion this record changes


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
    """The models under `root`; the promotion and deployment logs in `decisions` (files
    beside the models unless given: recloop.registry.decision_log)."""

    def __init__(self, root: Path, decisions: DecisionLog | None = None):
        self.root = root
        # Nothing is created until something is written: reading a registry that does
        # not exist (a mistyped data directory) must leave no trace.
        self.models_dir = root / "models"
        self.decisions = decisions or FileDecisionLog(root)

    @classmethod
    def of(cls, settings: Settings) -> Registry:
        """The registry `settings` name: the data directory's models, and the decision
        logs in PostgreSQL when RECLOOP_REGISTRY_URL is set."""
        url = settings.registry_url
        return cls(
            DataLayout(settings.data_dir).registry,
            PostgresDecisionLog(url) if url else None,
        )

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
        # Imported here: reading a manifest needs the artifact module, listing does not.
        from recloop.models.model_artifact import read_manifest

        return read_manifest(self.path(version), kind_of_version(version).manifest_version)

    def history(self, tenant: str | None = None) -> list[PromotionRecord]:
        """Every promote and rollback, oldest first (only `tenant`'s when given)."""
        records = [PromotionRecord(**record) for record in self.decisions.records("promotions")]
        records = [r if r.tenant else replace(r, tenant=self.tenant_of(r.version)) for r in records]
        return records if tenant is None else [r for r in records if r.tenant == tenant]

    def tenant_of(self, version: str) -> str:
        """The tenant `version` serves (`model_tenant` of its manifest's metadata)."""
        return model_tenant(dict(self.manifest(version).get("metadata") or {}), version)

    def champion_tenants(self) -> list[str]:
        """The tenants that have had a champion."""
        return sorted({record.tenant for record in self.history()})

    def _resolve(self, tenant: str | None) -> str | None:
        """`tenant`, or the only tenant with a champion (None when there is none yet); a
        registry serving several tenants must be told which."""
        if tenant is not None:
            return tenant
        tenants = self.champion_tenants()
        if len(tenants) > 1:
            raise PromotionError(
                f"the registry has champions for {len(tenants)} tenants "
                f"({', '.join(tenants)}): name the tenant"
            )
        return tenants[0] if tenants else None

    def _stack(self, tenant: str | None) -> list[str]:
        stack: list[str] = []
        resolved = self._resolve(tenant)
        for record in self.history(resolved) if resolved else []:
            if record.action == "promote":
                stack.append(record.version)
            else:
                stack.pop()
        return stack

    def champion(self, tenant: str | None = None) -> str | None:
        """`tenant`'s champion (with one tenant, it may go unnamed); None before the first
        promotion."""
        stack = self._stack(tenant)
        return stack[-1] if stack else None

    def champions(self) -> dict[str, str]:
        """Every tenant's champion."""
        found = {tenant: self.champion(tenant) for tenant in self.champion_tenants()}
        return {tenant: version for tenant, version in found.items() if version}

    def _append(self, record: PromotionRecord) -> PromotionRecord:
        self.decisions.append("promotions", asdict(record))
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
        self.decisions.append("experiments", asdict(record))
        return record

    def deployments(self) -> list[VariantDeployment]:
        """Every variant deployment, oldest first."""
        return [VariantDeployment(**record) for record in self.decisions.records("experiments")]

    def deployments_digest(self) -> str:
        """Changes whenever a variant deployment is added (the service's cue to reload)."""
        records = json.dumps(self.decisions.records("experiments"), sort_keys=True)
        return hashlib.sha256(records.encode()).hexdigest()

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
        tenant = self.tenant_of(version)
        with self.decisions.decide():
            current = self.champion(tenant)
            if current == version:
                raise PromotionError(f"{version} is already the champion of {tenant}")
            return self._append(
                PromotionRecord(
                    "promote",
                    version,
                    current,
                    actor or actor_from_env(),
                    reason,
                    _now(),
                    forced=force,
                    tenant=tenant,
                )
            )

    def rollback(
        self, reason: str, actor: str | None = None, tenant: str | None = None
    ) -> PromotionRecord:
        """Return `tenant`'s champion (the only tenant's, unnamed) to the one before."""
        with self.decisions.decide():
            resolved = self._resolve(tenant)
            stack = self._stack(resolved)
            if len(stack) < 2:
                raise PromotionError(
                    "nothing to roll back to: "
                    + (
                        "no champion yet"
                        if not stack
                        else f"{stack[0]} is the only champion so far"
                    )
                )
            return self._append(
                PromotionRecord(
                    "rollback",
                    stack[-2],
                    stack[-1],
                    actor or actor_from_env(),
                    reason,
                    _now(),
                    tenant=resolved or "",
                )
            )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
