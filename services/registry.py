"""Model registry: candidates in the BentoML model store, a champion, an audit log.

Each candidate is a BentoML model `two_tower:<content version>` whose labels and
metadata carry its metrics, gate verdict, training partitions, feature service
and code version. Which one serves is decided by an append-only promotion log
(`promotions.jsonl`, one fsync'd JSON line per promote or rollback); the champion
is the top of the stack that log replays to. Loading a model re-checks every
file's sha256 (recloop.model_artifact).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import bentoml
from bentoml._internal.models.model import ModelStore
from bentoml.exceptions import NotFound

from recloop.model_artifact import ModelBundle, load_bundle, read_manifest, save_bundle

MODEL_NAME = "two_tower"


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


class Registry:
    def __init__(self, root: Path):
        self.root = root
        (root / "models").mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(str(root / "models"))
        self.log_file = root / "promotions.jsonl"

    def register(self, bundle: ModelBundle, labels: dict[str, str], metadata: dict) -> str:
        """Save `bundle` as a candidate (idempotent: the same content is stored once)."""
        staging = self.root / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        version = save_bundle(bundle, staging)
        if version not in self.versions():
            with bentoml.models.create(
                f"{MODEL_NAME}:{version}",
                labels={"stage": "candidate", **labels},
                metadata=metadata,
                _model_store=self.store,
            ) as model:
                for path in staging.iterdir():
                    shutil.copy2(path, Path(model.path) / path.name)
        shutil.rmtree(staging, ignore_errors=True)
        return version

    def versions(self) -> list[str]:
        try:
            models = bentoml.models.list(MODEL_NAME, _model_store=self.store)
        except NotFound:
            return []
        return sorted(str(m.tag.version) for m in models)

    def _model(self, version: str) -> bentoml.Model:
        try:
            return bentoml.models.get(f"{MODEL_NAME}:{version}", _model_store=self.store)
        except NotFound as exc:
            raise PromotionError(
                f"no model {MODEL_NAME}:{version} in {self.root / 'models'}; known: {self.versions()}"
            ) from exc

    def path(self, version: str) -> Path:
        return Path(self._model(version).path)

    def metadata(self, version: str) -> dict:
        return dict(self._model(version).info.metadata)

    def labels(self, version: str) -> dict[str, str]:
        return dict(self._model(version).info.labels)

    def load(self, version: str) -> ModelBundle:
        """The bundle, every file checked against its sha256 and the version."""
        return load_bundle(self.path(version), expected_version=version)

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
        with self.log_file.open("a") as handle:
            handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def promote(
        self, version: str, reason: str, actor: str | None = None, force: bool = False
    ) -> PromotionRecord:
        """Make `version` the champion; refused when its gates failed, unless `force`."""
        metadata = self.metadata(version)
        read_manifest(self.path(version))
        gate = metadata.get("gate", {})
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
                "promote", version, current, actor or _actor(), reason, _now(), forced=force
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
            PromotionRecord("rollback", stack[-2], stack[-1], actor or _actor(), reason, _now())
        )


def _actor() -> str:
    return os.environ.get("RECLOOP_ACTOR") or getpass.getuser()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
