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
The serving stack (timeout, GC, tracing, body limit, API key, the API docs at /docs and
/docs.json, plain 400s for malformed bodies, JSON whatever the Content-Type, GET for
/admin/stats) is
services/serving_stack.py. BentoML adds /livez, /readyz (ready once a champion and the
feature store are loaded) and /metrics (Prometheus).
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

from recloop.settings import Settings
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
from services.serving_stack import (
    KEY_TENANT_HEADER,
    TENANT_HEADER,
    ApiDocs,
    ApiKeyAuth,
    BodySizeLimit,
    JsonRequests,
    freeze_gc,
    service_config,
)


def error(ctx: bentoml.Context, refused: Refused) -> JSONResponse:
    """A 4xx/5xx answer in the same shape as the middleware's: {"error": message}. The
    status goes on `ctx` too: BentoML answers an endpoint that takes a context with the
    context's status, whatever the response's."""
    ctx.response.status_code = refused.status
    return JSONResponse({"error": refused.message}, status_code=refused.status)


def named_tenant(ctx: bentoml.Context, field: str | None) -> tuple[str | None, str | None]:
    """(the tenant the request names in its `tenant` field or X-Tenant header, the tenant
    its API key is scoped to); 422 when field and header disagree."""
    headers = ctx.request.headers
    header = headers.get(TENANT_HEADER.decode())
    if field is not None and header is not None and field != header:
        raise Refused(422, f"the tenant field ({field!r}) and X-Tenant ({header!r}) disagree")
    return field or header, headers.get(KEY_TENANT_HEADER.decode())


API_ROUTES = ("/recommend", "/feedback", "/similar_items")
PROTECTED_PREFIXES = ("/feedback", "/admin")
JSON_ROUTES = (*API_ROUTES, "/admin/reload", "/admin/flush", "/admin/stats")
READ_ONLY_ROUTES = ("/admin/stats",)  # also answered on GET
DOCS = ApiDocs(
    title="recloop recommendation API",
    description=(
        "Top-k recommendations from the registry's champion (or the variant of an online "
        "test a request is routed to), feedback on what was shown, and similar items. "
        "Every /recommend response is logged as impressions and every accepted /feedback as "
        "an event in the raw event log, which trains the next model: send `dry_run: true` "
        'to try /recommend without logging. Errors are `{"error": "..."}` with a 4xx or '
        "5xx status. When RECLOOP_API_KEY is set, /feedback and /admin/* need the "
        "`X-API-Key` header."
    ),
)


# RECLOOP_SERVICE_WORKERS processes; with more than one, their request state is in Redis
# (services/runtime.py, `request_state`).
@bentoml.service(
    name="recloop", **service_config(API_ROUTES, workers=Settings.from_env().service_workers)
)
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
        self,
        tenant: str | None,
        user_id: str,
        k: int,
        exclude: list[str],
        context: dict[str, Any],
        dry_run: bool,
        ctx: bentoml.Context,
    ) -> RecommendResponse | JSONResponse:
        """The user's top `k` items, best first, never one they already had or one in
        `exclude`. A user the model knows is ranked by it; a user it does not know (no
        history, no features) gets the most popular items, and `fallback` says so. Keep
        `request_id` to send feedback on the list. 503 while no champion is loaded; 404
        for an unknown tenant."""
        try:
            chosen = self.runtime.tenant(*named_tenant(ctx, tenant))
            return self.runtime.recommend(chosen, user_id, k, exclude, context, dry_run)
        except Refused as refused:
            return error(ctx, refused)

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    async def feedback(
        self,
        tenant: str | None,
        request_id: str,
        user_id: str,
        item_id: str,
        event_type: str,
        value: float | None,
        durable: bool,
        ctx: bentoml.Context,
    ) -> FeedbackResponse | JSONResponse:
        """What the user did with an item of a /recommend response: it is logged as an
        event (credited to the model and variant that showed the item) and counts in the
        user's fresh features at once. 404 for a request_id this service did not answer,
        422 for an item not in that list, another user, or a value that does not fit the
        event type. The same feedback sent again is acknowledged (`duplicate: true`) and
        not logged twice."""
        try:
            chosen = self.runtime.tenant(*named_tenant(ctx, tenant))
            seq, duplicate = self.runtime.feedback(
                chosen, request_id, user_id, item_id, event_type, value
            )
            if durable:
                await anyio.to_thread.run_sync(self.runtime.wait_durable, seq)
        except Refused as refused:
            return error(ctx, refused)
        return FeedbackResponse(
            accepted=True, request_id=request_id, durable=durable, duplicate=duplicate
        )

    @bentoml.api(
        route="/similar_items", input_spec=SimilarItemsRequest, output_spec=SimilarItemsResponse
    )
    async def similar_items(
        self, tenant: str | None, item_id: str, k: int, ctx: bentoml.Context
    ) -> SimilarItemsResponse | JSONResponse:
        """The `k` items the champion places nearest to `item_id` (nothing is logged).
        404 for an item the champion does not know; 501 when its kind has no notion of
        similar items (popularity)."""
        try:
            return self.runtime.similar_items(
                self.runtime.tenant(*named_tenant(ctx, tenant)), item_id, k
            )
        except Refused as refused:
            return error(ctx, refused)

    @bentoml.api(route="/admin/reload", input_spec=EmptyRequest, output_spec=ReloadResponse)
    def admin_reload(self, ctx: bentoml.Context) -> ReloadResponse | JSONResponse:
        """Load every tenant's registry champion now (only the X-Tenant one, or the API
        key's tenant's); the service also looks every RECLOOP_RELOAD_INTERVAL_S seconds.
        A tenant whose champion fails to load keeps the previous one serving."""
        started = time.perf_counter()
        try:
            tenant = self.runtime.admin_tenant(*named_tenant(ctx, None))
        except Refused as refused:
            return error(ctx, refused)
        champions = self.runtime.reload(tenant)
        return ReloadResponse(champions=champions, seconds=round(time.perf_counter() - started, 3))

    @bentoml.api(route="/admin/flush", input_spec=EmptyRequest, output_spec=FlushResponse)
    def admin_flush(self) -> FlushResponse:
        """Write the buffered events to the raw log now."""
        return self.runtime.flush()

    @bentoml.api(route="/admin/stats", input_spec=EmptyRequest, output_spec=StatsResponse)
    def admin_stats(self, ctx: bentoml.Context) -> StatsResponse | JSONResponse:
        """Event counts, the model serving each tenant (only the X-Tenant one, or the API
        key's tenant's) and any failed load, live experiments (also on GET)."""
        try:
            return self.runtime.stats(self.runtime.admin_tenant(*named_tenant(ctx, None)))
        except Refused as refused:
            return error(ctx, refused)


RecloopService.describe(DOCS)
# The first added is the outer one: a request without its key is refused before its
# body is read.
RecloopService.add_asgi_middleware(ApiKeyAuth, protected=PROTECTED_PREFIXES)
RecloopService.add_asgi_middleware(BodySizeLimit)
RecloopService.add_asgi_middleware(JsonRequests, paths=JSON_ROUTES, get_paths=READ_ONLY_ROUTES)
