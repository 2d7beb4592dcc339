"""MovieLens-100K trained once per test session, and small HTTP helpers for its service.

The pipeline run (features, PIT training set, gated candidate, champion) takes about
a minute and a half on 2 cores; every test module that needs a real champion shares it
through the session fixture `trained` (registered in conftest.py).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import dagster as dg
import pytest

from drivers.demo import build_features, train_and_promote
from recloop.data.layout import DataLayout
from recloop.registry.model_registry import Registry
from recloop.settings import Settings

API_KEY = "test-key"


@dataclass
class TrainedSystem:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def registry(self) -> Registry:
        return Registry(DataLayout(self.settings.data_dir).registry)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> TrainedSystem:
    data_dir = tmp_path_factory.mktemp("ml100k")
    settings = Settings(data_dir=data_dir, champion_algorithm="two_tower")
    (data_dir / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(data_dir / "dagster")) as instance:
        defs = build_features(settings, instance)
        train_and_promote(defs, instance)
        yield TrainedSystem(settings, defs, instance)


def call(url: str, body: object, headers: dict | None = None) -> tuple[int, dict]:
    """POST JSON; (status, decoded body) also for 4xx/5xx answers."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_alive(url: str, attempts: int = 600) -> None:
    for _ in range(attempts):
        try:
            urllib.request.urlopen(f"{url}/livez", timeout=1)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url}/livez never answered")
