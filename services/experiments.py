"""Online experiments inside the running service.

The spec files of `RECLOOP_EXPERIMENTS_DIR` (recloop.experiments) are read again
whenever their content hash or the registry's variant deployments change, so adding,
editing or removing a spec takes effect without a restart. Each variant resolves to
what serves it:

- `algorithm` variants: the model the pipeline deployed for the variant as the spec now
  describes it (`Registry.deployed_version` with the variant's training digest);
- `model: champion`: whichever champion serves the request; `model: <version>`: that
  registered version;
- `inference: batch`: the variant's precomputed list from Feast's `batch_lists` view.

A spec whose served variants are not all resolved yet (training, gates, or the first
batch push still to come) is left out of routing, and `waiting` says why: its requests
go to the champion until the whole test can run. A model serves only the tenant it was
trained for: a spec whose audience names no tenant is routed for its models' tenant
only, and one whose audience names another tenant waits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from feast import FeatureStore

from feature_repo.definitions import BATCH_LISTS_TTL, BATCH_LISTS_VIEW, TENANT_KEY
from feature_repo.store import without_stale_values
from recloop.experiments import (
    ExperimentSpec,
    Router,
    SpecError,
    Variant,
    directory_digest,
    load_specs,
    variant_label,
)
from recloop.experiments.serving import VariantList, variant_policy
from recloop.features.feature_vectors import FeatureColumns, feature_refs
from recloop.inference.policies import Policy, request_rng
from recloop.inference.retrievers import Recommendation, Servable, rank_with_policy, servable
from recloop.registry.model_registry import PromotionError, Registry

logger = logging.getLogger(__name__)

CHAMPION = "champion"
BATCH_COLUMNS = ("item_ids", "scores", "model_version")


class BatchLists:
    """Precomputed lists from the online store: one row per (user, variant label)."""

    def __init__(self, store: FeatureStore):
        self.store = store
        self.refs = feature_refs(BATCH_LISTS_VIEW, BATCH_COLUMNS)

    def lookup(
        self, tenant_id: str, user_id: str, label: str, now: datetime
    ) -> tuple[Recommendation, str] | None:
        """The tenant's user's list for `label` and the model version that computed it;
        None when the batch has no (fresh) row for the user."""
        response = self.store.get_online_features(
            features=self.refs,
            entity_rows=[{TENANT_KEY: tenant_id, "user_id": user_id, "list_id": label}],
            full_feature_names=True,
        )
        row = without_stale_values(
            response.to_dict(include_event_timestamps=True),
            {BATCH_LISTS_VIEW: BATCH_LISTS_TTL},
            now,
        )
        items, scores, version = (row[f"{BATCH_LISTS_VIEW}__{c}"][0] for c in BATCH_COLUMNS)
        if not items or version is None:
            return None
        return Recommendation([str(i) for i in items], [float(s) for s in scores], None), version


class _BatchServable:
    """A batch list seen through the `Servable` interface, so a policy can draw from it."""

    def __init__(self, recommendation: Recommendation, version: str):
        self.recommendation, self._version = recommendation, version

    @property
    def version(self) -> str:
        return self._version

    @property
    def needs_features(self) -> bool:
        return False

    def interactions(self, user_id: str) -> int:
        return 0

    def recommend(
        self, user_id: str, features: FeatureColumns | None, k: int, exclude: Iterable[str] = ()
    ) -> Recommendation:
        banned = set(exclude)
        kept = [
            (i, s)
            for i, s in zip(self.recommendation.item_ids, self.recommendation.scores, strict=True)
            if i not in banned
        ][:k]
        return Recommendation([i for i, _ in kept], [s for _, s in kept], None)


@dataclass(frozen=True)
class VariantSource:
    """How one variant produces its list."""

    label: str  # "<experiment>:<variant>", the event log's `variant`
    policy: Policy
    model: Servable | None = None  # a realtime model; None: the champion or a batch list
    batch: bool = False

    def list_for(
        self,
        champion: Servable,
        batch_lists: BatchLists,
        tenant_id: str,
        user_id: str,
        features: FeatureColumns | None,
        k: int,
        exclude: list[str],
        request_id: str,
        now: datetime,
    ) -> VariantList:
        """This variant's list for one request (`features`: the user's online features)."""
        if self.batch:
            found = batch_lists.lookup(tenant_id, user_id, self.label, now)
            if found is None:
                return VariantList(Recommendation([], [], None), "")
            model: Servable = _BatchServable(*found)
        else:
            model = self.model if self.model is not None else champion
        usable = features if model.needs_features else None
        rng = request_rng(f"{request_id}:{self.label}")
        recommendation = rank_with_policy(model, self.policy, user_id, usable, k, exclude, rng)
        return VariantList(recommendation, model.version)


@dataclass(frozen=True)
class ExperimentSet:
    """The specs the service routes with, and what each variant resolved to."""

    router: Router
    sources: Mapping[tuple[str, str], VariantSource]
    # Spec name -> why it is not routed yet (empty for the specs in `router`).
    waiting: Mapping[str, tuple[str, ...]]
    digest: str  # of the spec files and the deployment log it was built from
    error: str | None = None  # the last spec problem; the previous set keeps serving
    specs: tuple[ExperimentSpec, ...] = field(default=())

    @classmethod
    def empty(cls, error: str | None = None) -> ExperimentSet:
        return cls(Router(()), {}, {}, "", error)


class ExperimentLoader:
    """Builds `ExperimentSet`s; keeps loaded models by version across rebuilds."""

    def __init__(self, directory: Path, registry: Registry):
        self.directory = directory
        self.registry = registry
        self._models: dict[str, Servable] = {}

    def digest(self) -> str:
        specs = directory_digest(self.directory) if self.directory.is_dir() else "no directory"
        return f"{specs}:{self.registry.deployments_digest()}"

    def refresh(self, current: ExperimentSet) -> ExperimentSet:
        """`current` when nothing changed; a new set otherwise. A spec directory with a
        broken file keeps `current` serving and records the problems in `error`."""
        digest = self.digest()
        if digest == current.digest:
            return current
        if not self.directory.is_dir():
            return ExperimentSet(Router(()), {}, {}, digest)
        try:
            specs = load_specs(self.directory)
        except SpecError as exc:
            logger.error("experiment specs not reloaded, the previous ones stay live:\n%s", exc)
            return ExperimentSet(
                current.router,
                current.sources,
                current.waiting,
                digest,
                str(exc),
                current.specs,
            )
        sources: dict[tuple[str, str], VariantSource] = {}
        waiting: dict[str, tuple[str, ...]] = {}
        scoped = []
        for spec in specs:
            reasons = []
            for name, variant in spec.variants.items():
                source, reason = self._resolve(spec, variant)
                if source is None:
                    reasons.append(f"{name}: {reason}")
                else:
                    sources[(spec.name, name)] = source
            models = [
                s.model for (owner, _), s in sources.items() if owner == spec.name and s.model
            ]
            spec, problem = self._for_models_tenant(spec, models)
            waiting[spec.name] = tuple(reasons + ([problem] if problem else []))
            scoped.append(spec)
        specs = scoped
        ready = [spec for spec in specs if not waiting[spec.name]]
        used = {s.model.version for s in sources.values() if s.model is not None}
        self._models = {v: m for v, m in self._models.items() if v in used}
        return ExperimentSet(Router(ready), sources, waiting, digest, None, tuple(specs))

    def _for_models_tenant(
        self, spec: ExperimentSpec, models: list[Servable]
    ) -> tuple[ExperimentSpec, str | None]:
        """The spec routed only for the tenant its variants' models were trained for (its
        audience's tenants when they name that one), or why it cannot be routed."""
        tenants = sorted({self.registry.tenant_of(model.version) for model in models})
        if not tenants:
            return spec, None
        if len(tenants) > 1:
            return spec, f"its variants' models were trained for several tenants: {tenants}"
        named = spec.audience.tenants
        if named is None:
            audience = dataclasses.replace(spec.audience, tenants=frozenset(tenants))
            return dataclasses.replace(spec, audience=audience), None
        if named != frozenset(tenants):
            return spec, (
                f"its models were trained for tenant {tenants[0]}, but its audience names "
                f"{', '.join(sorted(named))}"
            )
        return spec, None

    def _resolve(self, spec: ExperimentSpec, variant: Variant) -> tuple[VariantSource | None, str]:
        label = variant_label(spec.name, variant.name)
        policy = variant_policy(variant)
        if variant.model == CHAMPION and variant.inference == "realtime":
            return VariantSource(label, policy), ""
        if variant.model is not None and variant.inference == "realtime":
            return self._loaded(label, policy, variant.model)
        version = self.registry.deployed_version(spec.name, variant.name, variant.training_digest)
        if version is None:
            step = "batch_lists" if variant.inference == "batch" else "deployment"
            return None, f"not deployed yet (its {step} asset has not run for this spec)"
        if variant.inference == "batch":
            return VariantSource(label, policy, batch=True), ""
        return self._loaded(label, policy, version)

    def _loaded(self, label: str, policy: Policy, version: str) -> tuple[VariantSource | None, str]:
        if version not in self._models:
            try:
                self._models[version] = servable(self.registry.load(version))
            except (PromotionError, ValueError, OSError) as exc:
                return None, f"model {version} cannot be loaded: {exc}"
        return VariantSource(label, policy, self._models[version]), ""
