"""A trained retrieval model on disk: weights, index, id maps and a manifest of sha256s.

Nothing in it can execute code on load: weights are safetensors, the index is
faiss's binary format or a raw float32 matrix, the history a NumPy archive read
with `allow_pickle=False`, the rest JSON. Every file's sha256 is in the manifest
and checked before use; the version is a hash of the manifest itself, so the
same content always has the same version and a changed one cannot keep it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load, save

from recloop.data.layout import sha256_file
from recloop.features.feature_vectors import FeatureSpec
from recloop.models.configs import TwoTowerConfig
from recloop.models.kinds import TWO_TOWER_PREFIX, CorruptArtifactError
from recloop.models.retrieval_index import RetrievalIndex
from recloop.models.two_tower import TwoTowerModel

# 2: the user tower reads the recent-items summary (recloop.models.two_tower).
FORMAT_VERSION = 2
VERSION_PREFIX = TWO_TOWER_PREFIX
WEIGHTS = "weights.safetensors"
INDEX = "index.bin"
HISTORY = "history.npz"
MANIFEST = "manifest.json"
EVALUATED_WEIGHTS = "evaluated_weights.safetensors"
EVALUATED_INDEX = "evaluated_index.bin"


@dataclass
class ModelBundle:
    """Everything inference needs, in memory."""

    model: TwoTowerModel
    config: TwoTowerConfig
    spec: FeatureSpec
    user_ids: np.ndarray  # index -> external user id (str)
    item_ids: np.ndarray  # index -> external item id (str)
    history: sp.csr_matrix  # users x items the model knows each user interacted with
    item_popularity: np.ndarray  # (n_items,) interaction counts in training
    index: RetrievalIndex
    metadata: dict[str, object] = field(default_factory=dict)
    version: str = ""
    # The weights the gates judged (train part only) and their index, when `model` is their
    # refit on every label; None when `model` itself was judged. Shares the rest.
    evaluated: ModelBundle | None = None

    def judged(self) -> ModelBundle:
        """What offline evaluation must score: never weights that saw the test labels."""
        if self.evaluated is not None:
            return self.evaluated
        if "refit" in self.metadata:
            raise ValueError(
                f"model {self.version or '(unsaved)'} was refit on its test labels and was "
                "loaded without its evaluated weights: load it with with_evaluated=True"
            )
        return self


def refit_bundle(
    evaluated: ModelBundle, model: TwoTowerModel, index: RetrievalIndex, refit: dict[str, object]
) -> ModelBundle:
    """`evaluated`'s configuration refit on more labels: serves `model`, keeps `evaluated`
    for judging; `refit` (what the refit trained on) joins the metadata."""
    return replace(
        evaluated,
        model=model,
        index=index,
        metadata={**evaluated.metadata, "refit": refit},
        evaluated=evaluated,
    )


def weights_bytes(model: TwoTowerModel) -> bytes:
    """The state dict as safetensors bytes: the same weights give the same bytes."""
    return save({name: tensor.contiguous() for name, tensor in model.state_dict().items()})


def weights_sha256(model: TwoTowerModel) -> str:
    """sha256 of `weights_bytes`, equal to the saved weight file's hash in the manifest."""
    return hashlib.sha256(weights_bytes(model)).hexdigest()


def weight_arrays(model: TwoTowerModel) -> list[np.ndarray]:
    """Every parameter and buffer as an array (what the sanity gate checks is finite)."""
    return [tensor.detach().cpu().numpy() for tensor in model.state_dict().values()]


def content_version(manifest: Mapping[str, object], prefix: str) -> str:
    """`prefix` + the hash of the manifest without its own version: every model kind is
    versioned by its content this way, so the same content always has the same version."""
    body = json.dumps({k: v for k, v in manifest.items() if k != "version"}, sort_keys=True)
    return prefix + hashlib.sha256(body.encode()).hexdigest()[:16]


def manifest_version(manifest: dict[str, object]) -> str:
    return content_version(manifest, VERSION_PREFIX)


def write_manifest(
    directory: Path,
    manifest: dict[str, object],
    version_of: Callable[[dict[str, object]], str] = manifest_version,
) -> str:
    """Stamp `manifest` with its content version, write it beside the files it lists and
    return the version."""
    manifest["version"] = version_of(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return str(manifest["version"])


def save_bundle(bundle: ModelBundle, directory: Path) -> str:
    """Write the bundle's files and manifest into `directory`; return the content version."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WEIGHTS).write_bytes(weights_bytes(bundle.model))
    (directory / INDEX).write_bytes(bundle.index.to_bytes())
    files = [WEIGHTS, INDEX, HISTORY]
    if bundle.evaluated is not None:
        (directory / EVALUATED_WEIGHTS).write_bytes(weights_bytes(bundle.evaluated.model))
        (directory / EVALUATED_INDEX).write_bytes(bundle.evaluated.index.to_bytes())
        files += [EVALUATED_WEIGHTS, EVALUATED_INDEX]
    np.savez(
        directory / HISTORY,
        **binary_csr_arrays(bundle.history),
        item_popularity=bundle.item_popularity,
    )
    manifest: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "config": bundle.config.to_dict(),
        "feature_spec": bundle.spec.to_dict(),
        "n_user_features": bundle.model.n_user_features,
        "user_ids": [str(u) for u in bundle.user_ids],
        "item_ids": [str(i) for i in bundle.item_ids],
        "index_kind": bundle.index.kind,
        "metadata": bundle.metadata,
        "files": {name: sha256_file(directory / name) for name in files},
    }
    bundle.version = write_manifest(directory, manifest)
    if bundle.evaluated is not None:
        bundle.evaluated.version = bundle.version
    return bundle.version


def labels_manifest(
    kind: str,
    format_version: int,
    user_ids: Sequence[object],
    item_ids: Sequence[object],
    metadata: Mapping[str, object],
    arrays_file: Path,
    **fields: object,
) -> dict[str, object]:
    """The manifest of a labels-only kind (popularity, EASE): its ids, metadata, own
    fields and the sha256 of its one arrays file."""
    return {
        "kind": kind,
        "format_version": format_version,
        **fields,
        "user_ids": [str(u) for u in user_ids],
        "item_ids": [str(i) for i in item_ids],
        "metadata": dict(metadata),
        "files": {arrays_file.name: sha256_file(arrays_file)},
    }


def binary_csr_arrays(matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A 0/1 users x items matrix as the `indptr`, `indices` and `shape` arrays `binary_csr`
    reads back (the values are all ones, so they are not stored)."""
    matrix = matrix.tocsr()
    return {"indptr": matrix.indptr, "indices": matrix.indices, "shape": np.asarray(matrix.shape)}


def binary_csr(arrays: Mapping[str, np.ndarray]) -> sp.csr_matrix:
    """The 0/1 users x items matrix saved as `indptr`, `indices` and `shape` arrays."""
    return sp.csr_matrix(
        (np.ones(len(arrays["indices"]), dtype=np.float32), arrays["indices"], arrays["indptr"]),
        shape=tuple(int(x) for x in arrays["shape"]),
    )


def read_manifest(
    directory: Path, version_of: Callable[[dict[str, object]], str] = manifest_version
) -> dict[str, object]:
    """The manifest, checked against its own version (`version_of` hashes it)."""
    path = directory / MANIFEST
    if not path.is_file():
        raise CorruptArtifactError(f"{path}: manifest missing")
    manifest = json.loads(path.read_text())
    if version_of(manifest) != manifest.get("version"):
        raise CorruptArtifactError(f"{path}: manifest content does not match its version")
    return manifest


def verify_files(directory: Path, manifest: dict[str, object]) -> None:
    for name, expected in dict(manifest["files"]).items():
        path = directory / name
        if not path.is_file():
            raise CorruptArtifactError(f"{path}: file missing")
        actual = sha256_file(path)
        if actual != expected:
            raise CorruptArtifactError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's {expected[:12]}…"
            )


def verified_manifest(
    directory: Path,
    expected_version: str | None,
    kind: str,
    format_version: int,
    version_of: Callable[[dict[str, object]], str] = manifest_version,
) -> dict[str, object]:
    """The manifest of an artifact this recloop can read, every file checked against it:
    the version asked for, the format this code reads; raises CorruptArtifactError."""
    manifest = read_manifest(directory, version_of)
    if expected_version is not None and manifest["version"] != expected_version:
        raise CorruptArtifactError(
            f"{directory}: holds version {manifest['version']}, expected {expected_version}"
        )
    if manifest.get("format_version") != format_version:
        raise CorruptArtifactError(
            f"{directory}: {kind} format {manifest.get('format_version')}, this recloop reads "
            f"format {format_version}; retrain the model (`make demo` or the training job)"
        )
    verify_files(directory, manifest)
    return manifest


def _load_model(
    directory: Path, weights: str, index_file: str, manifest: dict[str, object], n_users: int
) -> tuple[TwoTowerModel, RetrievalIndex]:
    """One weight file and its index (both verified beforehand)."""
    state = load((directory / weights).read_bytes())
    model = TwoTowerModel(
        n_users,
        int(manifest["n_user_features"]),
        state["item_features"].numpy(),
        TwoTowerConfig(**manifest["config"]),
    )
    model.load_state_dict(state)
    model.eval()
    index = RetrievalIndex.from_bytes(
        manifest["index_kind"], (directory / index_file).read_bytes(), item_vectors_of(model)
    )
    return model, index


def load_bundle(
    directory: Path, expected_version: str | None = None, with_evaluated: bool = False
) -> ModelBundle:
    """Verify every file against the manifest, then load; raises CorruptArtifactError.

    `with_evaluated` also loads the weights the gates judged when the model was refit
    (offline evaluation needs them; serving does not, so it does not hold them).
    """
    manifest = verified_manifest(directory, expected_version, "two-tower", FORMAT_VERSION)
    with np.load(directory / HISTORY, allow_pickle=False) as arrays:
        history = binary_csr(arrays)
        popularity = arrays["item_popularity"]
    model, index = _load_model(directory, WEIGHTS, INDEX, manifest, history.shape[0])
    bundle = ModelBundle(
        model=model,
        config=TwoTowerConfig(**manifest["config"]),
        spec=FeatureSpec.from_dict(manifest["feature_spec"]),
        user_ids=np.asarray(manifest["user_ids"], dtype=object),
        item_ids=np.asarray(manifest["item_ids"], dtype=object),
        history=history,
        item_popularity=popularity,
        index=index,
        metadata=dict(manifest["metadata"]),
        version=str(manifest["version"]),
    )
    if with_evaluated and EVALUATED_WEIGHTS in dict(manifest["files"]):
        evaluated, evaluated_index = _load_model(
            directory, EVALUATED_WEIGHTS, EVALUATED_INDEX, manifest, history.shape[0]
        )
        metadata = {k: v for k, v in bundle.metadata.items() if k != "refit"}
        bundle.evaluated = replace(
            bundle, model=evaluated, index=evaluated_index, metadata=metadata
        )
    return bundle


@torch.no_grad()
def item_vectors_of(model: TwoTowerModel) -> np.ndarray:
    model.eval()
    return model.items(torch.arange(len(model.item_features))).numpy()
