"""A data directory of its own for a service under test, cut from the trained system."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from recloop.settings import Settings
from tests.trained_system import TrainedSystem


def copy_for_serving(trained: TrainedSystem, target: Path) -> Settings:
    """The trained registry and Feast stores under `target`, and no raw events: every event
    file there is the test's own service's, and promotions there leave the session's
    champion alone."""
    for part in ("registry", "feast"):
        shutil.copytree(trained.settings.data_dir / part, target / part)
    return replace(trained.settings, data_dir=target)
