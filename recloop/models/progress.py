"""How long fits say what they are doing: one line per step (an epoch, a label window, a
fitted state), to a callable the caller chooses (Dagster's run log, a terminal)."""

from __future__ import annotations

from collections.abc import Callable

ProgressLog = Callable[[str], None]


def silent(_: str) -> None:
    """A ProgressLog that reports nothing."""
