"""Hot swap: a promotion or a rollback in the registry reaches the running service without
a restart and without one failed request, under concurrent load; a champion that fails
to load leaves the old one serving and says why.

The service runs on a data directory of its own (tests/serving_copy.py), so promotions
here never change the session's champion.
"""

from __future__ import annotations

import http.client
import itertools
import random
import time
import urllib.error
from collections.abc import Callable

import pytest

from drivers.demo import DEMO_TENANT
from drivers.launcher import Server, run_service
from recloop.data.layout import DataLayout
from recloop.models.model_artifact import WEIGHTS
from recloop.registry.model_registry import Registry
from tests.background import BackgroundLoad
from tests.serving_copy import copy_for_serving
from tests.trained_system import TrainedSystem, call

THREADS = 4
TRANSPORT_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


class Hammer(BackgroundLoad):
    """Threads that call /recommend back to back for as long as the block runs and keep
    (arrival time, model version) of every answer, and every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(THREADS)
        self.url = url
        self.seen: list[list[tuple[float, str]]] = [[] for _ in range(THREADS)]

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            body = {"user_id": str(rng.randint(1, 943)), "k": 10}
            try:
                status, answer = call(f"{self.url}/recommend", body)
            except TRANSPORT_ERRORS as exc:
                self.failures.append(f"transport: {type(exc).__name__}: {exc}")
                continue
            if status != 200:
                self.failures.append(f"{status}: {answer}")
                continue
            self.seen[n].append((time.monotonic(), answer["model_version"]))

    def wait_until(self, done: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert not self.failures, self.failures[:3]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def every_thread_saw(self, version: str, since: float) -> bool:
        return all(any(t > since and v == version for t, v in seen) for seen in self.seen)

    def first(self, version: str, since: float) -> float:
        return min(t for seen in self.seen for t, v in seen if t > since and v == version)

    def answered_between(self, start: float, end: float) -> int:
        return sum(start < t < end for seen in self.seen for t, _ in seen)


def register_copy(registry: Registry, version: str, note: str) -> str:
    """The champion's weights under a new version (its manifest records `note`): a second
    model with the same gate verdict, without a second training run."""
    bundle = registry.load(version)
    bundle.metadata = {**bundle.metadata, "note": note}
    copy = registry.register(bundle, registry.labels(version), registry.metadata(version))
    assert copy != version
    return copy


@pytest.fixture(scope="module")
def swap_service(trained: TrainedSystem, tmp_path_factory) -> tuple[Server, Registry]:
    settings = copy_for_serving(trained, tmp_path_factory.mktemp("hot-swap") / "data")
    with run_service(settings) as server:
        yield server, Registry(DataLayout(settings.data_dir).registry)


def stats(server: Server) -> dict:
    """The demo tenant's model stats, with the service's swap and failure counts."""
    status, answer = call(f"{server.url}/admin/stats", {})
    assert status == 200
    return {
        **answer["models"][DEMO_TENANT],
        "swaps": answer["swaps"],
        "load_failures": answer["load_failures"],
    }


def test_promotion_and_rollback_swap_under_load_without_a_failed_request(swap_service) -> None:
    server, registry = swap_service
    old = registry.champion()
    new = register_copy(registry, old, "hot-swap test")
    swaps_before = stats(server)["swaps"]
    with Hammer(server.url) as hammer:
        hammer.wait_until(lambda: all(len(s) >= 20 for s in hammer.seen), "warm-up")
        promoted = time.monotonic()
        registry.promote(new, reason="hot-swap test")
        hammer.wait_until(lambda: hammer.every_thread_saw(new, promoted), "the new version")
        rolled_back = time.monotonic()
        registry.rollback(reason="hot-swap test")
        hammer.wait_until(lambda: hammer.every_thread_saw(old, rolled_back), "the old version")
        time.sleep(1)
    assert hammer.failures == []
    for seen in hammer.seen:
        versions = [version for _, version in seen]
        assert [version for version, _ in itertools.groupby(versions)] == [old, new, old]
    swap_in = hammer.first(new, promoted) - promoted
    swap_back = hammer.first(old, rolled_back) - rolled_back
    during = hammer.answered_between(promoted, hammer.first(new, promoted))
    total = sum(len(seen) for seen in hammer.seen)
    print(
        f"\n{total} requests from {THREADS} threads, 0 failed; promotion -> first answer by "
        f"the new version {swap_in:.2f} s ({during} answers by the old one meanwhile), "
        f"rollback -> old version {swap_back:.2f} s"
    )
    after = stats(server)
    assert after["swaps"] == swaps_before + 2 and after["serving"] == old
    assert after["load_failures"] == 0 and after["load_error"] is None


def test_a_champion_that_fails_to_load_leaves_the_old_one_serving(swap_service) -> None:
    server, registry = swap_service
    old = registry.champion()
    broken = register_copy(registry, old, "corrupted on purpose")
    weights = registry.path(broken) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4] + b"oops")
    registry.promote(broken, reason="a corrupted champion")
    deadline = time.monotonic() + 60
    while (models := stats(server))["failed_version"] != broken:
        assert time.monotonic() < deadline, models
        time.sleep(0.1)
    assert models["serving"] == old and models["registry_champion"] == broken
    assert (
        models["load_error"].startswith("CorruptArtifactError") and WEIGHTS in models["load_error"]
    )
    status, answer = call(f"{server.url}/recommend", {"user_id": "1", "k": 3})
    assert status == 200 and answer["model_version"] == old
    registry.rollback(reason="the corrupted champion never served")
    while (models := stats(server))["load_error"] is not None:
        assert time.monotonic() < deadline, models
        time.sleep(0.1)
    assert models["serving"] == models["registry_champion"] == old
    assert models["failed_version"] is None and models["load_failures"] == 1
