"""The registry's decision logs in the real PostgreSQL (RECLOOP_REGISTRY_URL): processes
that share the model directories and the database agree on every tenant's champion,
and promoters racing each other never both promote over the same champion."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import psycopg2
import pytest

from recloop.registry.decision_log import PostgresDecisionLog
from recloop.registry.model_registry import PromotionError, Registry
from recloop.settings import Settings
from tests.server_fixtures import scratch_database
from tests.unit.test_registry import PASSED, register


@pytest.fixture
def registry_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def test_a_champion_promoted_by_one_process_is_every_process_champion(
    tmp_path, registry_url: str
) -> None:
    settings = Settings(data_dir=tmp_path, registry_url=registry_url)
    pipeline, service = Registry.of(settings), Registry.of(settings)
    first, second = register(pipeline, 1, PASSED), register(pipeline, 2, PASSED)
    books = register(pipeline, 3, PASSED, tenant="books")
    pipeline.promote(first, reason="initial", actor="pipeline")
    pipeline.promote(books, reason="initial", actor="pipeline")
    assert service.champions() == {"shop": first, "books": books}
    service.promote(second, reason="better", actor="cli")
    assert pipeline.champion("shop") == second
    pipeline.rollback(reason="bad clicks", tenant="shop")
    assert service.champion("shop") == first
    assert [r.action for r in service.history("shop")] == ["promote", "promote", "rollback"]
    # Nothing went to the files a local registry would write.
    assert not (tmp_path / "registry" / "promotions.jsonl").exists()
    connection = psycopg2.connect(registry_url)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT log, count(*) FROM recloop_decisions GROUP BY log")
        assert dict(cursor.fetchall()) == {"promotions": 4}
    connection.close()


def test_deployments_and_their_digest_are_shared(tmp_path, registry_url: str) -> None:
    settings = Settings(data_dir=tmp_path, registry_url=registry_url)
    writer, reader = Registry.of(settings), Registry.of(settings)
    version = register(writer, 1, PASSED)
    before = reader.deployments_digest()
    writer.deploy_variant("exp", "b", version, "digest-1", PASSED["gate"], reason="test")
    assert reader.deployed_version("exp", "b", "digest-1") == version
    assert reader.deployments_digest() != before


def test_racing_promoters_each_promote_over_the_champion_before_them(
    tmp_path, registry_url: str
) -> None:
    root = tmp_path / "registry"
    versions = [register(Registry(root), seed, PASSED) for seed in range(1, 5)]
    errors: list[str] = []

    def promote_all(worker: int) -> None:
        registry = Registry(root, PostgresDecisionLog(registry_url))
        for round_ in range(6):
            version = versions[(worker + round_) % len(versions)]
            try:
                registry.promote(version, reason=f"worker {worker}")
            except PromotionError as error:  # already the champion: a fair refusal
                assert "already the champion" in str(error)
            except Exception as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=promote_all, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    history = Registry(root, PostgresDecisionLog(registry_url)).history("shop")
    assert len(history) > 4
    # Each record names as previous the champion the record before it made: no two
    # promoters decided on top of the same champion.
    assert [r.previous for r in history] == [None, *[r.version for r in history[:-1]]]
    assert all(r.version != r.previous for r in history)


def test_an_unreachable_registry_database_is_named(tmp_path) -> None:
    settings = replace(
        Settings(data_dir=tmp_path), registry_url="postgresql://nobody@127.0.0.1:1/none"
    )
    with pytest.raises(psycopg2.OperationalError, match="127.0.0.1"):
        Registry.of(settings).champions()
