"""The recloop recommendation service (BentoML): a thin HTTP layer over recloop.

    bentoml serve services.service:RecloopService --port 3000     (or `make serve`)

POST /recommend, /feedback, /similar_items (async: about a millisecond of work
each, run on the event loop; a durable /feedback awaits its fsync in a thread);
POST /admin/reload swaps in the registry's current champion, /admin/flush writes
buffered events and /admin/stats reports event counts and model swaps (threads:
slow, must not block). A watcher thread replays the registry every
RECLOOP_RELOAD_INTERVAL_S seconds and hot-swaps a promoted or rolled-back champion.
Accepted clicks, purchases and ratings update the user's fresh features in memory
(recloop.features.stream_features); the event writer thread pushes them to Feast.
The request and response bodies are services/api.py; the state and the threads are
services/runtime.py, which the endpoints call: this module maps their refusals to
error answers.
The serving stack (timeout, GC, tracing, body limit, API key) is services/serving_stack.py. BentoML adds /livez, /readyz (ready once a champion
and the feature store are loaded), /metrics (Prometheus) and /docs (OpenAPI).
Configuration comes from the environment, read when the service starts
(recloop.settings: RECLOOP_DATA_DIR, RECLOOP_ONLINE_STORE, ...; RECLOOP_API_KEY
protects /feedback and /admin when set).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import bentoml
from starlette.responses import JSONResponse

from services.api import (
    EmptyRequest,
    FeedbackRequest,
    FeedbackResponse,
    FlushResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    SimilarItemsRequest,
    SimilarItemsResponse,
    StatsResponse,
)
from services.runtime import RecloopRuntime, Refused
from services.serving_stack import ApiKeyAuth, BodySizeLimit, freeze_gc, service_config


def error(status: int, message: str) -> JSONResponse:
    """A 4xx/5xx answer in the same shape as the middleware's: {"error": message}."""
    return JSONResponse({"error": message}, status_code=status)


API_ROUTES = ("/recommend", "/feedback", "/similar_items")
PROTECTED_PREFIXES = ("/feedback", "/admin")


@bentoml.service(name="recloop", **service_config(API_ROUTES))
class RecloopService:
    def __init__(self) -> None:
        self.runtime = RecloopRuntime()
        self.runtime.start()

    @bentoml.on_startup
    def _freeze_gc(self) -> None:
        freeze_gc()

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.runtime.close()

    def __is_ready__(self) -> bool:
        return self.runtime.is_ready()

    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(
        self, user_id: str, k: int, exclude: list[str], context: dict[str, Any]
    ) -> RecommendResponse | JSONResponse:
        try:
            return self.runtime.recommend(user_id, k, exclude, context)
        except Refused as refused:
            return error(refused.status, refused.message)

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    async def feedback(
        self,
        request_id: str,
        user_id: str,
        item_id: str,
        event_type: str,
        value: float | None,
        durable: bool,
    ) -> FeedbackResponse | JSONResponse:
        try:
            seq = self.runtime.feedback(request_id, user_id, item_id, event_type, value)
            if durable:
                await anyio.to_thread.run_sync(self.runtime.wait_durable, seq)
        except Refused as refused:
            return error(refused.status, refused.message)
        return FeedbackResponse(accepted=True, request_id=request_id, durable=durable)

    @bentoml.api(
        route="/similar_items", input_spec=SimilarItemsRequest, output_spec=SimilarItemsResponse
    )
    async def similar_items(self, item_id: str, k: int) -> SimilarItemsResponse | JSONResponse:
        try:
            return self.runtime.similar_items(item_id, k)
        except Refused as refused:
            return error(refused.status, refused.message)

    @bentoml.api(route="/admin/reload", input_spec=EmptyRequest, output_spec=ReloadResponse)
    def admin_reload(self) -> ReloadResponse:
        started = time.perf_counter()
        version = self.runtime.reload()
        return ReloadResponse(
            model_version=version, seconds=round(time.perf_counter() - started, 3)
        )

    @bentoml.api(route="/admin/flush", input_spec=EmptyRequest, output_spec=FlushResponse)
    def admin_flush(self) -> FlushResponse:
        return self.runtime.flush()

    @bentoml.api(route="/admin/stats", input_spec=EmptyRequest, output_spec=StatsResponse)
    def admin_stats(self) -> StatsResponse:
        return self.runtime.stats()


# The first added is the outer one: a request without its key is refused before its
# body is read.
RecloopService.add_asgi_middleware(ApiKeyAuth, protected=PROTECTED_PREFIXES)
RecloopService.add_asgi_middleware(BodySizeLimit)
