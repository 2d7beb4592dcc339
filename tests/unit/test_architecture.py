"""The layering the folder list promises: import contracts and private APIs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("recloop", "assets", "services", "feature_repo", "drivers", "bench", "tests")
# Each dependency's private API, and the one documented adapter allowed to import it
# (its docstring says what and why).
ADAPTERS = {
    "bentoml._internal": Path("services/serving_stack.py"),
    "_bentoml_impl": Path("services/serving_stack.py"),
    "dagster._core": Path("drivers/dagster_runs.py"),
}
# Dagster decorators whose functions must stay thin: they wire resources to domain code.
DAGSTER_BODIES = {"asset", "multi_asset", "asset_check", "sensor", "schedule"}
MAX_BODY_LINES = 30


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_import_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts: the domain layers import only
    downwards; the domain package imports no Dagster, BentoML, assets, service or
    driver code; assets import no service code; the service imports no Dagster code."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    completed = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 broken" in completed.stdout


def test_private_dependency_apis_only_in_their_adapter() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for module in _imported_modules(path)
        for private, adapter in ADAPTERS.items()
        if module.startswith(private) and path.relative_to(REPO) != adapter
    ]
    assert offenders == []


def test_private_api_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The AST walk finds a private import wherever it is written (guards the check above)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from dagster._core.definitions import x\n")
    assert "dagster._core.definitions" in _imported_modules(probe)


def _decorated_bodies(path: Path) -> list[tuple[str, int]]:
    """(name, body lines without the docstring) of every Dagster-decorated function."""
    bodies = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.FunctionDef):
            continue
        names = {ast.unparse(d).split("(")[0].rsplit(".", 1)[-1] for d in node.decorator_list}
        if not names & DAGSTER_BODIES:
            continue
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        bodies.append((node.name, body[-1].end_lineno - body[0].lineno + 1))
    return bodies


def test_asset_and_sensor_bodies_are_thin() -> None:
    """Assets, checks, sensors and schedules call tested domain helpers; a long body is
    logic that belongs in recloop/."""
    long_bodies = [
        f"{path.relative_to(REPO)}:{name} ({lines} lines)"
        for path in sorted((REPO / "assets").glob("*.py"))
        for name, lines in _decorated_bodies(path)
        if lines > MAX_BODY_LINES
    ]
    assert long_bodies == []


def test_body_measure_skips_the_docstring(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        '@dg.asset(key=\'a\')\ndef a():\n    """Doc\n    string."""\n    x = 1\n    return x\n'
    )
    assert _decorated_bodies(probe) == [("a", 2)]
