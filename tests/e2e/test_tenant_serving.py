"""One service, many tenants, over HTTP: a request names its tenant (or not, while one
is served), each tenant gets its own champion's items from its own catalog, a tenant
promoted while the service runs is answered without a restart, and an API key scoped to
one tenant cannot act for another."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from drivers.launcher import Server, run_service
from recloop.data.layout import DataLayout
from recloop.registry.model_registry import Registry
from tests.trained_system import call
from tests.two_tenants import TENANTS, TwoTenants, catalog, two_tenant_system

ADMIN_KEY = "admin-key"
TENANT_KEYS = {"books": "books-key", "shop": "shop-key"}


@dataclass(frozen=True)
class TenantService:
    system: TwoTenants
    server: Server
    registry: Registry


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TenantService]:
    """Books trained and served; shop's features are built but it has no champion yet."""
    with two_tenant_system(tmp_path_factory.mktemp("tenant-serving")) as system:
        assert system.train("books").success
        env = {
            "RECLOOP_API_KEY": ADMIN_KEY,
            "RECLOOP_TENANT_API_KEYS": json.dumps(TENANT_KEYS),
            "RECLOOP_RELOAD_INTERVAL_S": "0.5",
        }
        with run_service(system.settings, env) as server:
            registry = Registry(DataLayout(system.settings.data_dir).registry)
            yield TenantService(system, server, registry)


def recommend(service: TenantService, body: dict, headers: dict | None = None):
    return call(f"{service.server.url}/recommend", {"k": 10, **body}, headers)


def test_a_tenant_promoted_while_the_service_runs_is_served_without_a_restart(service) -> None:
    books = service.registry.champion("books")
    # One tenant served: naming it is optional.
    status, answer = recommend(service, {"user_id": "1", "dry_run": True})
    assert status == 200 and answer["model_version"] == books
    status, answer = recommend(service, {"user_id": "1"}, {"X-Tenant": "shop"})
    assert status == 503 and "shop" in answer["error"] and "no champion" in answer["error"]
    status, answer = recommend(service, {"tenant": "nope", "user_id": "1"})
    assert status == 404 and "unknown tenant 'nope'" in answer["error"]

    # Shop trains beside the service; the answers to shop switch from 503 to its champion.
    with ThreadPoolExecutor(1) as pool:
        training = pool.submit(service.system.train, "shop")
        while (reply := recommend(service, {"tenant": "shop", "user_id": "1", "dry_run": True}))[
            0
        ] != 200:
            assert reply[0] == 503 and not training.done() or training.result().success, reply
            time.sleep(0.05)
        answered = datetime.now(UTC)
        assert training.result().success
    shop = service.registry.champion("shop")
    promoted = datetime.fromisoformat(service.registry.history("shop")[-1].at)
    print(
        f"\nshop promoted -> first answer by its champion: {(answered - promoted).total_seconds():.2f} s"
    )
    assert reply[1]["model_version"] == shop and service.registry.champion("books") == books

    # Two tenants served: a request must name one.
    status, answer = recommend(service, {"user_id": "1"})
    assert status == 422 and "books, shop" in answer["error"]
    status, answer = recommend(service, {"tenant": "books", "user_id": "1"}, {"X-Tenant": "shop"})
    assert status == 422 and "disagree" in answer["error"]
    # The same user id is another person in each tenant: each list is from its own catalog.
    for user in ("1", "2", "49", "never-seen"):
        for tenant in TENANTS:
            status, answer = recommend(
                service, {"user_id": user, "dry_run": True}, {"X-Tenant": tenant}
            )
            assert status == 200, answer
            assert answer["model_version"] == service.registry.champion(tenant)
            items = {item["item_id"] for item in answer["items"]}
            assert len(items) == 10 and items <= catalog(tenant), (tenant, user, items)


def test_a_key_scoped_to_a_tenant_cannot_act_for_another(service) -> None:
    if service.registry.champion("shop") is None:
        assert service.system.train("shop").success
    url = service.server.url
    books_key, shop_key = ({"X-API-Key": TENANT_KEYS[t]} for t in TENANTS)
    status, shown = recommend(service, {"tenant": "books", "user_id": "1"})
    assert status == 200
    feedback = {"request_id": shown["request_id"], "user_id": "1", "event_type": "click"}
    feedback["item_id"] = shown["items"][0]["item_id"]

    # Shop's key on books' feedback: named in the body, or in the header.
    status, answer = call(f"{url}/feedback", {**feedback, "tenant": "books"}, shop_key)
    assert status == 403 and "scoped to tenant 'shop'" in answer["error"]
    status, answer = call(f"{url}/feedback", feedback, {**shop_key, "X-Tenant": "books"})
    assert status == 403
    # Unnamed, shop's key acts for shop: books' request is not one of shop's.
    status, answer = call(f"{url}/feedback", feedback, shop_key)
    assert status == 404
    status, answer = call(f"{url}/feedback", feedback, books_key)
    assert status == 200 and answer["accepted"] is True

    for path in ("/admin/stats", "/admin/reload"):
        status, answer = call(f"{url}{path}", {}, {**shop_key, "X-Tenant": "books"})
        assert status == 403, (path, answer)
    status, stats = call(f"{url}/admin/stats", {}, shop_key)
    assert status == 200 and list(stats["models"]) == ["shop"]
    status, stats = call(f"{url}/admin/stats", {}, {"X-API-Key": ADMIN_KEY})
    assert status == 200 and sorted(stats["models"]) == sorted(TENANTS)
    assert all(stats["models"][t]["serving"] == service.registry.champion(t) for t in TENANTS)
    status, answer = call(f"{url}/admin/stats", {}, {"X-API-Key": "wrong"})
    assert status == 401
