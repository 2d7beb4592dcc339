"""The Bento's requirements (services/requirements.txt) cover every distribution the
service imports: a missing one passes every other test, where the project's virtualenv
has it, and fails only in the built image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "services" / "requirements.txt"
FIRST_PARTY = {"recloop", "services", "feature_repo", "__main__"}
# Imported only when installed (each inside a try), so the Bento works without them.
OPTIONAL = {
    "scikit-learn": "lightgbm.compat imports it when present",
    "joblib": "scikit-learn's",
    "sqlglotrs": "sqlglot's Rust tokenizer, used when present",
    "orjson": "fastapi.responses imports it when present",
}


# What the service imports: the BentoML service module, and each model kind's module,
# which the registry imports only when it loads a model of that kind.
SERVICE_IMPORTS = """
import importlib, json, sys
import services.service
from recloop.registry.model_registry import KINDS
for kind in KINDS:
    importlib.import_module(kind.module)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def imported_distributions() -> set[str]:
    """The distributions of the third-party modules the service imports, in a process of
    its own (this one has imported more)."""
    completed = subprocess.run(
        [sys.executable, "-c", SERVICE_IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "True"},
    )
    modules = json.loads(completed.stdout.strip().splitlines()[-1])
    by_module = packages_distributions()
    return {
        _normal(distribution)
        for module in modules
        if module not in FIRST_PARTY and module not in sys.stdlib_module_names
        for distribution in by_module.get(module, [])
    }


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    return _normal(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def installed_by_requirements() -> set[str]:
    """The listed distributions and everything they require, as installed here."""
    listed = [
        line.strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pending = [_name(line) for line in listed]
    extras = {_name(line): re.findall(r"\[([^\]]*)\]", line) for line in listed}
    closed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in closed:
            continue
        closed.add(name)
        try:
            requirements = requires(name) or []
        except PackageNotFoundError:
            continue
        wanted = {e.strip() for group in extras.get(name, []) for e in group.split(",")}
        for requirement in requirements:
            marker = requirement.partition(";")[2]
            if "extra ==" in marker and not any(f'"{e}"' in marker for e in wanted):
                continue
            pending.append(_name(requirement))
    return closed


def test_every_distribution_the_bento_imports_is_required() -> None:
    available = installed_by_requirements()
    missing = sorted(imported_distributions() - available - OPTIONAL.keys())
    assert missing == [], f"the service imports these; add them to {REQUIREMENTS}: {missing}"
