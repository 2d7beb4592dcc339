"""Experiment specs for the tests of the algorithms a variant may train."""

from __future__ import annotations

from pathlib import Path

import pytest

from recloop.experiments import SpecError, load_spec


def against_champion_spec(
    name: str,
    variant: str,
    algorithm: str,
    params: str,
    start: str = "2026-12-01T00:00:00Z",
    stop: str = "2026-12-15T00:00:00Z",
) -> str:
    """An A/B spec, 50/50, of `variant` (training `algorithm` with the YAML flow mapping
    `params`) against the champion."""
    return f"""\
name: {name}
description: {algorithm} against the champion.
start: {start}
stop: {stop}
primary_metric: ctr
variants:
  {variant}:
    algorithm: {algorithm}
    params: {params}
  champion:
    model: champion
test:
  kind: ab
  salt: {variant}
  allocation: {{{variant}: 50, champion: 50}}
"""


def spec_problems(path: Path) -> list[str]:
    """The problems `load_spec` reports for an invalid spec file."""
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(problem) for problem in caught.value.problems]
