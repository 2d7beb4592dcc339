"""Where the registry's append-only decision logs live: promotions and rollbacks, and
experiment variant deployments.

The champion is whatever the promotion log replays to, so every process that serves
or promotes must read one log. `FileDecisionLog` keeps each log as fsync'd JSON lines
beside the model directories: right for one machine. `PostgresDecisionLog` keeps them in
one PostgreSQL table, so pipelines and service replicas on other machines read the same
champion; the model directories themselves, content-addressed and written by atomic
rename, go on storage every node mounts (ARCHITECTURE.md, "From laptop to cluster").

A promote reads the champion, checks, then appends: `decide()` holds a lock for that
span (an exclusive file lock, or a transaction-scoped PostgreSQL advisory lock), so two
promoters never both append on top of the same champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psycopg2

LOGS = ("promotions", "experiments")
# The key of the advisory lock promoters take (any constant both sides agree on).
DECISION_LOCK_KEY = 7_312_025


class DecisionLog(Protocol):
    """Append-only logs of JSON records, by name (`LOGS`)."""

    def records(self, log: str) -> list[dict]:
        """Every record of `log`, oldest first."""

    def append(self, log: str, record: dict) -> None:
        """Add a record, durably, before returning."""

    def decide(self) -> contextlib.AbstractContextManager[None]:
        """Hold off every other promoter while a decision reads, checks and appends."""


class FileDecisionLog:
    """`<root>/<log>.jsonl`: one fsync'd JSON line per record."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, log: str) -> Path:
        return self.root / f"{log}.jsonl"

    def records(self, log: str) -> list[dict]:
        path = self.path(log)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def append(self, log: str, record: dict) -> None:
        path = self.path(log)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @contextlib.contextmanager
    def decide(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".decisions.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class PostgresDecisionLog:
    """The logs as rows of one table, `recloop_decisions` (created on first use), in the
    database of `url` (postgresql://user:password@host:5432/db)."""

    TABLE = "recloop_decisions"

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: psycopg2.extensions.connection | None = None
        # One connection for the process's threads (the service's watcher and its admin
        # endpoints): one statement, or one whole decision, at a time.
        self._lock = threading.RLock()
        self._deciding = False

    def _connect(self) -> psycopg2.extensions.connection:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self.url, connect_timeout=10)
            with self._connection, self._connection.cursor() as cursor:
                # Under the lock: CREATE TABLE IF NOT EXISTS races with itself.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (DECISION_LOCK_KEY,))
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.TABLE} ("
                    "id BIGSERIAL PRIMARY KEY, log TEXT NOT NULL, record JSONB NOT NULL, "
                    "written_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
        return self._connection

    def records(self, log: str) -> list[dict]:
        with self._lock, contextlib.ExitStack() as stack:
            connection = self._connect()
            if not self._deciding:  # inside decide(), its transaction reads
                stack.enter_context(connection)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT record FROM {self.TABLE} WHERE log = %s ORDER BY id", (log,)
                )
                return [row[0] for row in cursor.fetchall()]

    def append(self, log: str, record: dict) -> None:
        with self._lock, contextlib.ExitStack() as stack:
            connection = self._connect()
            if not self._deciding:  # inside decide(), committed when the decision ends
                stack.enter_context(connection)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {self.TABLE} (log, record) VALUES (%s, %s)",
                    (log, json.dumps(record, sort_keys=True)),
                )

    @contextlib.contextmanager
    def decide(self) -> Iterator[None]:
        """One transaction under an advisory lock: reads see every committed decision,
        and the append commits (or, on an error, rolls back) as the lock is released."""
        with self._lock:
            connection = self._connect()
            with connection, connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (DECISION_LOCK_KEY,))
                self._deciding = True
                try:
                    yield
                finally:
                    self._deciding = False

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
