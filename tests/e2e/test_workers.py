"""Two service workers behind one port, their request state in the real Redis: feedback
reaching either worker, or a restarted service, is checked against the list it
answers; the same click is logged once; SIGKILL of one worker under load loses no
acknowledged click and the other keeps answering."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import replace

import psutil
import pytest

from drivers.launcher import run_service
from recloop.data.layout import DataLayout
from recloop.data.shared_state import redis_client
from recloop.settings import Settings
from tests.e2e.test_event_capture import K, Traffic, raw_files, read_all
from tests.serving_copy import copy_for_serving
from tests.trained_system import TrainedSystem, call


@pytest.fixture
def two_workers(trained: TrainedSystem, tmp_path, redis_url: str) -> Settings:
    """The trained system's copy, served by two workers sharing their state in Redis."""
    settings = replace(
        copy_for_serving(trained, tmp_path / "data"),
        redis_url=redis_url,
        service_workers=2,
        request_state="redis",
    )
    client = redis_client(redis_url)
    namespace = f"recloop:{settings.feast_project}:*"
    for key in client.scan_iter(match=namespace, count=1000):  # an earlier run's
        client.delete(key)
    yield settings
    for key in client.scan_iter(match=namespace, count=1000):
        client.delete(key)


def click(url: str, shown: dict, user: str, item: str) -> tuple[int, dict]:
    body = {"request_id": shown["request_id"], "user_id": user, "item_id": item}
    return call(f"{url}/feedback", {**body, "event_type": "click", "durable": True})


def clicks_on_disk(settings: Settings) -> Counter:
    events = read_all(raw_files(DataLayout(settings.data_dir)))
    return Counter(
        events.loc[events["event_type"] == "click", ["request_id", "item_id"]].itertuples(
            index=False, name=None
        )
    )


def test_another_service_and_a_restarted_one_accept_feedback_on_any_list(
    two_workers: Settings,
) -> None:
    """Lists served by one service, clicks sent to another on the same Redis (as two pods
    behind one Service would get them): with lists in one process's memory, every one of
    these would be 404. Which of a service's own workers takes a connection is the
    kernel's choice, so the cross-process path is tested across services."""
    users = [str(user) for user in range(1, 41)]
    with (
        run_service(two_workers) as serving,
        run_service(two_workers, log_name="other-service.log") as other,
    ):
        assert len(worker_processes(serving)) == len(worker_processes(other)) == 2
        lists = {}
        for user in users:
            status, shown = call(f"{serving.url}/recommend", {"user_id": user, "k": K})
            assert status == 200, shown
            lists[user] = shown
        for user in users[:30]:
            status, answer = click(other.url, lists[user], user, lists[user]["items"][0]["item_id"])
            assert (status, answer["duplicate"]) == (200, False), answer
        # The same clicks again, at the service that served the lists: acknowledged, not
        # logged twice.
        repeats = [
            click(serving.url, lists[user], user, lists[user]["items"][0]["item_id"])
            for user in users[:10]
        ]
        assert all(status == 200 and answer["duplicate"] for status, answer in repeats), repeats
        status, stats = call(f"{other.url}/admin/stats", {})
        assert (status, stats["request_state"], stats["served_lists"]) == (200, "redis", 0)

    with run_service(two_workers) as server:  # a restart: nothing replayed, Redis remembers
        for user in users[30:]:
            status, answer = click(
                server.url, lists[user], user, lists[user]["items"][1]["item_id"]
            )
            assert (status, answer["duplicate"]) == (200, False), answer
        status, answer = click(
            server.url, lists[users[0]], users[0], lists[users[0]]["items"][0]["item_id"]
        )
        assert (status, answer["duplicate"]) == (200, True)
        status, stats = call(f"{server.url}/admin/stats", {})
        assert stats["restored_served_lists"] == 0
        other = {**lists[users[0]], "request_id": "never-served"}
        assert click(server.url, other, users[0], "1")[0] == 404

    on_disk = clicks_on_disk(two_workers)
    assert sum(on_disk.values()) == len(users) and set(on_disk.values()) == {1}


def worker_processes(server) -> list[psutil.Process]:
    """The worker processes under the `bentoml serve` arbiter."""
    found = []
    for process in psutil.Process(server.proc.pid).children(recursive=True):
        # A killed worker stays a zombie until the arbiter reaps it: not a worker.
        with contextlib.suppress(psutil.ZombieProcess, psutil.NoSuchProcess):
            if "_bentoml_impl.worker" in " ".join(process.cmdline()):
                found.append(process)
    return found


def test_killing_a_worker_under_load_loses_no_acknowledged_click(two_workers: Settings) -> None:
    with run_service(two_workers) as server, Traffic(server.url, through_crash=True) as load:
        workers = worker_processes(server)
        assert len(workers) == 2, [p.cmdline() for p in workers]
        load.wait_for(acked=60)
        load.killed.set()
        workers[0].kill()
        killed_at = time.monotonic()
        acked_at_kill = len(load.acked)
        load.wait_for(acked=acked_at_kill + 120)
        after_kill = len(load.acked) - acked_at_kill
        survivors = worker_processes(server)
        assert workers[1] in survivors
    assert load.failures == []
    print(
        f"\n{len(load.acked)} durable clicks acknowledged, {after_kill} after SIGKILL of one "
        f"worker in {time.monotonic() - killed_at:.1f} s; {load.dropped} requests dropped; "
        f"workers after the kill: {len(survivors)}"
    )
    on_disk = clicks_on_disk(two_workers)
    missing = [event for event in load.acked if on_disk[event] != 1]
    assert missing == [], f"{len(missing)} acknowledged clicks not on disk exactly once"
    assert load.dropped <= 2 * len(load.threads)
