"""The service's view of its online store: probed at most once a second, outages logged
when they start and end (and once a minute between), never once per request."""

import logging

from services.runtime import OUTAGE_LOG_INTERVAL_S, STORE_PROBE_INTERVAL_S, StoreHealth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_outages_are_probed_sparingly_and_logged_once_per_interval(caplog) -> None:
    clock, answers, probes = Clock(), iter([None, "redis is down", "redis is down", None]), []

    def probe() -> str | None:
        probes.append(clock.now)
        return next(answers)

    health = StoreHealth(probe, clock)
    caplog.set_level(logging.WARNING, logger="services.runtime")
    assert health.problem() is None
    clock.now += STORE_PROBE_INTERVAL_S / 2
    assert health.problem() is None and len(probes) == 1  # cached between probes
    clock.now += STORE_PROBE_INTERVAL_S
    assert health.problem() == "redis is down"
    for _ in range(100):
        health.failed("reading the online store failed: refused")  # every request fails
    clock.now += OUTAGE_LOG_INTERVAL_S
    assert health.problem() == "redis is down"
    clock.now += STORE_PROBE_INTERVAL_S
    assert health.problem() is None
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "redis is down (the service answers 503 until it is back)",
        "redis is down (the service answers 503 until it is back)",  # a minute later
        "the online store answers again",
    ]


def test_a_failed_read_marks_the_store_down_until_the_next_probe() -> None:
    clock = Clock()
    health = StoreHealth(lambda: None, clock)
    assert health.problem() is None
    health.failed("reading the online store failed: timeout")
    assert health.problem() == "reading the online store failed: timeout"
    clock.now += STORE_PROBE_INTERVAL_S
    assert health.problem() is None
