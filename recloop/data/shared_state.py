"""The service's request state in Redis, so that every worker (and a restarted one)
answers feedback on any worker's responses.

One service process keeps its served lists in memory (`ServedLists`); several workers
behind one port, or several replicas, cannot: a click can reach a worker that did not
serve its list. `RedisServedLists` has the same contract with the lists and the
feedback ledger in Redis, each key expiring after `SERVED_TTL` (the two days of
impressions a restarted single process replays from the log).

Keys are `<namespace>:served:<request id>` and `<namespace>:feedback:<request
id>:<hash of item, event type, value>`; the namespace is the Feast project, so two
deployments sharing a Redis never read each other's requests.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recloop.data.event_log import FeedbackKey, ServedList

SERVED_TTL = timedelta(days=2)
# `ServedList` fields that are tuples (JSON gives them back as lists).
_TUPLE_FIELDS = ("item_ids", "item_versions", "item_variants", "propensities")


class RedisConnectionError(ValueError):
    """A Redis connection string recloop cannot read."""


class RequestStateUnavailable(RuntimeError):
    """Redis, which holds the request state, did not answer: the service answers 503."""


@contextmanager
def redis_errors(doing: str) -> Iterator[None]:
    """Redis's own errors as `RequestStateUnavailable`, saying what was being done."""
    try:
        yield
    except redis.RedisError as error:
        raise RequestStateUnavailable(
            f"the request state in Redis is unavailable ({doing}): {error}"
        ) from error


def redis_client(connection: str) -> redis.Redis:
    """A client for a connection string in Feast's format, `host:port[,password=...]
    [,db=N][,ssl=true]`, so the service and Feast read one setting (RECLOOP_REDIS_URL)."""
    address, *options = [part.strip() for part in connection.split(",") if part.strip()]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RedisConnectionError(f"{connection!r}: expected host:port[,password=...]")
    settings: dict[str, object] = {"host": host, "port": int(port)}
    for option in options:
        name, _, value = option.partition("=")
        if name == "password":
            settings["password"] = value
        elif name == "db" and value.isdigit():
            settings["db"] = int(value)
        elif name == "ssl":
            settings["ssl"] = value.lower() == "true"
        else:
            raise RedisConnectionError(
                f"{connection!r}: unknown option {option!r}; expected password=, db= or ssl="
            )
    # Fail fast: a request waits on Redis, and an outage must answer 503 within the
    # request timeout, not after redis-py's default retries with backoff (about 8 s).
    return redis.Redis(
        **settings,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), retries=1),
    )


class RedisServedLists:
    """`ServedLists` shared by every worker through Redis.

    A feedback key is claimed with SET NX before its event is logged, so two workers
    given the same click at once log it once. The ledger entry names the worker and its
    sequence number: a repeat at the same worker waits for the first one's write like
    a single process does; a repeat at another worker is acknowledged as soon as the
    claim exists (the first worker answers only once its own write is done).
    """

    shared = True

    def __init__(self, client: redis.Redis, namespace: str, ttl: timedelta = SERVED_TTL):
        self.client = client
        self.namespace = namespace
        self.ttl = ttl
        self.worker = uuid.uuid4().hex
        self._remembered = 0

    def _served_key(self, request_id: str) -> str:
        return f"{self.namespace}:served:{request_id}"

    def _feedback_key(self, key: FeedbackKey) -> str:
        request_id, *rest = key
        digest = hashlib.sha256(json.dumps(rest).encode()).hexdigest()[:24]
        return f"{self.namespace}:feedback:{request_id}:{digest}"

    def problem(self) -> str | None:
        """Why the request state cannot be read or written (None: Redis answers)."""
        try:
            with redis_errors("ping"):
                self.client.ping()
        except RequestStateUnavailable as error:
            return str(error)
        return None

    def remember(self, served: ServedList) -> None:
        with redis_errors("remembering a response"):
            self.client.set(
                self._served_key(served.request_id), json.dumps(asdict(served)), ex=self.ttl
            )
        self._remembered += 1

    def get(self, request_id: str) -> ServedList | None:
        with redis_errors("reading a response"):
            stored = self.client.get(self._served_key(request_id))
        if stored is None:
            return None
        fields = json.loads(stored)
        for name in _TUPLE_FIELDS:
            if fields[name] is not None:
                fields[name] = tuple(fields[name])
        return ServedList(**fields)

    def claim_feedback(self, key: FeedbackKey) -> int | None:
        """None when this call is the first with `key` (the caller logs the event and
        calls `record_feedback`); else the sequence number to wait for: the first one's
        at this worker, 0 when another worker logged it."""
        name = self._feedback_key(key)
        with redis_errors("claiming feedback"):
            if self.client.set(name, f"{self.worker}:0", nx=True, ex=self.ttl):
                return None
            stored = self.client.get(name)
        worker, _, seq = (stored or b"").decode().partition(":")
        return int(seq) if worker == self.worker and seq.isdigit() else 0

    def record_feedback(self, key: FeedbackKey, seq: int) -> None:
        with redis_errors("recording feedback"):
            self.client.set(self._feedback_key(key), f"{self.worker}:{seq}", xx=True, ex=self.ttl)

    def __len__(self) -> int:
        """The lists this worker remembered (Redis holds every worker's)."""
        return self._remembered
