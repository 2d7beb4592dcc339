"""Fixtures that need a server or Dagster: imported by the integration and e2e tiers'
conftest.py only, so the unit tier starts without loading Dagster or a Redis client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg2
import pytest
import redis


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def redis_url() -> str:
    """The real Redis on 127.0.0.1:6379 (CI starts it); a test needing it fails if it is down."""
    url = "127.0.0.1:6379"
    redis.Redis(host="127.0.0.1", port=6379).ping()
    return url


@pytest.fixture
def redis_project() -> str:
    """A Feast project name of its own, so parallel or repeated runs never share Redis keys."""
    project = f"t{uuid.uuid4().hex[:10]}"
    yield project
    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
        client.delete(key)


SERVER = "postgresql://postgres@127.0.0.1:5432"


def _admin(statement: str) -> None:
    connection = psycopg2.connect(f"{SERVER}/postgres")
    connection.autocommit = True  # CREATE / DROP DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@contextmanager
def scratch_database() -> Iterator[str]:
    """A PostgreSQL database of the caller's own on the real server (CI starts it),
    dropped afterwards; its URL."""
    name = f"recloop_test_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        _admin(f"DROP DATABASE {name} WITH (FORCE)")
