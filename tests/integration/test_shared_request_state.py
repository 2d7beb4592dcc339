"""The service's request state in the real Redis: what one worker remembers or counts,
another worker (or a restarted one) reads, with the same answers as one process."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import redis

from recloop.data.event_log import ServedList, ServedLists
from recloop.data.shared_state import (
    RedisConnectionError,
    RedisServedLists,
    RequestStateUnavailable,
    redis_client,
)
from recloop.features.shared_stream_state import SharedStreamState
from recloop.features.stream_features import (
    KEY_COLUMNS,
    stream_feature_rows,
    stream_features_as_of,
)
from services.runtime import Refused, StoreHealth, refused_while_request_state_is_down
from tests.unit.test_stream_features import engaged, event, random_stream

SERVED = ServedList(
    "r1",
    "shop",
    "u1",
    ("i1", "i2"),
    "ms-1+pop-2",
    "a+b",
    item_versions=("ms-1", "pop-2"),
    item_variants=("a", "b"),
    propensities=(0.5, None),
)


@pytest.fixture
def namespace(redis_url: str) -> str:
    """Keys of this test's own, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis_client(redis_url)
    for key in client.scan_iter(match=f"{name}:*", count=1000):
        client.delete(key)


def test_a_list_served_by_one_worker_is_known_to_another_and_after_a_restart(
    redis_url: str, namespace: str
) -> None:
    serving, other = (RedisServedLists(redis_client(redis_url), namespace) for _ in range(2))
    serving.remember(SERVED)
    assert other.get("r1") == SERVED and other.get("r9") is None
    assert len(serving) == 1 and len(other) == 0  # each counts what it remembered
    restarted = RedisServedLists(redis_client(redis_url), namespace)
    assert restarted.get("r1") == SERVED
    ttl = redis_client(redis_url).ttl(f"{namespace}:served:r1")
    assert timedelta(days=2) - timedelta(minutes=1) < timedelta(seconds=ttl) <= timedelta(days=2)


def test_the_same_feedback_is_claimed_once_across_workers(redis_url: str, namespace: str) -> None:
    first, second = (RedisServedLists(redis_client(redis_url), namespace) for _ in range(2))
    click = ("r1", "i2", "click", None)
    assert first.claim_feedback(click) is None  # first: log it
    assert second.claim_feedback(click) == 0  # claimed elsewhere: nothing to wait for here
    first.record_feedback(click, 7)
    assert first.claim_feedback(click) == 7  # the same worker waits for its own write
    assert second.claim_feedback(click) == 0
    # Another item, event type or value is other feedback.
    assert second.claim_feedback(("r1", "i2", "rating", 4.0)) is None
    assert second.claim_feedback(("r1", "i1", "click", None)) is None
    assert RedisServedLists(redis_client(redis_url), namespace).claim_feedback(click) == 0


def test_memory_and_redis_served_lists_say_whether_workers_share_them(
    redis_url: str, namespace: str
) -> None:
    assert ServedLists.shared is False
    assert RedisServedLists(redis_client(redis_url), namespace).shared is True


@pytest.mark.parametrize("seed", [0, 1])
def test_two_workers_answer_a_request_as_the_log_replay_of_every_event_does(
    redis_url: str, namespace: str, seed: int
) -> None:
    """Events spread at random over two workers: either worker answers a request as
    off-policy replay and training rebuild it from the whole log."""
    stream = random_stream(seed, 500, timedelta(0))
    workers = [SharedStreamState(redis_client(redis_url), namespace) for _ in range(2)]
    rng = np.random.default_rng(seed)
    seen: list[dict[str, object]] = []
    compared = fresh = 0
    for item in stream:
        if seen and rng.random() < 0.3:
            at = seen[-1]["event_timestamp"] + timedelta(minutes=float(rng.choice([0, 1, 70])))
            tenant, user = str(item["tenant_id"]), str(item["user_id"])
            request = pd.DataFrame(
                {"tenant_id": [tenant], "user_id": [user], "event_timestamp": [at]}
            )
            expected = stream_features_as_of(pd.DataFrame(seen), request).to_dict("records")[0]
            answer = workers[rng.integers(2)].features_as_of(tenant, user, at) or {
                "engagements_1h": None
            }
            assert engaged(answer) == engaged(expected), (answer, expected, at)
            compared += 1
            fresh += engaged(answer) is not None
        workers[rng.integers(2)].add([item])
        seen.append(item)
    assert compared > 100 and fresh > 25


def test_a_worker_drains_rows_that_count_every_workers_events(
    redis_url: str, namespace: str
) -> None:
    first, second = (SharedStreamState(redis_client(redis_url), namespace) for _ in range(2))
    first.add([event("a", 0, "x", user="u"), event("b", 0, "p", user="w")])
    second.add([event("c", 1, "y", user="u"), event("d", 2, "view", "view", user="u")])
    drained = first.drain().set_index("user_id")
    assert drained.loc["u", "engagements_1h"] == 2 and drained.loc["u", "last_items"] == ["y", "x"]
    assert drained.loc["w", "last_items"] == ["p"]
    (row,) = second.drain().to_dict("records")  # second touched only u
    assert (row["user_id"], row["engagements_1h"]) == ("u", 2)
    assert first.drain().empty and first.users() == 0


def test_a_drain_drops_the_events_that_left_the_window_and_keys_expire(
    redis_url: str, namespace: str
) -> None:
    state = SharedStreamState(redis_client(redis_url), namespace, max_lateness=timedelta(0))
    state.add([event("a", 0, "old"), event("b", 90, "new")])
    expected = stream_feature_rows(pd.DataFrame([event("a", 0, "old"), event("b", 90, "new")]))
    pd.testing.assert_frame_equal(state.drain(), expected.sort_values(KEY_COLUMNS))
    client = redis.Redis(*redis_url.split(":"))
    key = f"{namespace}:engagements:t:u"
    assert client.hkeys(key) == [b"b"]
    assert 0 < client.ttl(key) <= 3600


def test_the_connection_string_is_read_as_feast_reads_it() -> None:
    client = redis_client("cache.internal:6380,password=s3cret,db=2")
    options = client.connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["password"], options["db"]) == (
        "cache.internal",
        6380,
        "s3cret",
        2,
    )
    for wrong, problem in (
        ("localhost", "expected host:port"),
        ("localhost:6379,user=me", "unknown option 'user=me'"),
    ):
        with pytest.raises(RedisConnectionError, match=problem):
            redis_client(wrong)


DOWN = "127.0.0.1:1"  # nothing listens there


def test_an_unreachable_redis_is_named_and_no_engagement_is_lost(
    redis_url: str, namespace: str
) -> None:
    lists = RedisServedLists(redis_client(DOWN), namespace)
    assert "request state in Redis is unavailable (ping)" in lists.problem()
    with pytest.raises(RequestStateUnavailable, match="remembering a response"):
        lists.remember(SERVED)
    assert RedisServedLists(redis_client(redis_url), namespace).problem() is None
    # A drain while Redis is down keeps the users it could not read for the next one.
    state = SharedStreamState(redis_client(redis_url), namespace)
    state.add([event("a", 0, "x", user="u")])
    working, state.client = state.client, redis_client(DOWN)
    with pytest.raises(RequestStateUnavailable, match="reading engagements"):
        state.drain()
    state.client = working
    (row,) = state.drain().to_dict("records")
    assert (row["user_id"], row["last_items"]) == ("u", ["x"])


def test_the_service_answers_503_naming_redis_while_it_is_down() -> None:
    class Runtime:
        request_state_health = StoreHealth(lambda: None, name="the request state")

        @refused_while_request_state_is_down
        def recommend(self) -> None:
            RedisServedLists(redis_client(DOWN), "x").remember(SERVED)

    runtime = Runtime()
    with pytest.raises(Refused) as refused:
        runtime.recommend()
    assert refused.value.status == 503
    assert "request state in Redis is unavailable" in refused.value.message
    assert "unavailable" in runtime.request_state_health.problem()  # until a probe answers
