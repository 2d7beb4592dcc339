"""The recloop recommendation service (BentoML): a thin HTTP layer over recloop.

    bentoml serve services.service:RecloopService --port 3000     (or `make serve`)

POST /recommend, /feedback, /similar_items (async: about a millisecond of work
each, run on the event loop); POST /admin/reload swaps in the registry's current
champion and /admin/flush writes buffered events (threads: slow, must not block).
The serving stack (timeout, GC, tracing, body limit, API key) is services/serving_stack.py. BentoML adds /livez, /readyz (ready once a champion
and the feature store are loaded), /metrics (Prometheus) and /docs (OpenAPI).
Configuration comes from the environment, read when the service starts
(recloop.settings: RECLOOP_DATA_DIR, RECLOOP_ONLINE_STORE, ...; RECLOOP_API_KEY
protects /feedback and /admin when set).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import bentoml
import torch
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from feature_repo.store import open_feature_store
from recloop.event_log import (
    EventBuffer,
    ServedList,
    ServedLists,
    feedback_problem,
    feedback_row,
    impression_rows,
)
from recloop.feature_vectors import USER_COLUMNS, USER_VIEW, FeatureColumns, feature_refs
from recloop.inference import Recommendation, Retriever, UnknownItemError
from recloop.layout import DataLayout, check_tenant_id
from recloop.settings import Settings
from services.registry import Registry
from services.serving_stack import ApiKeyAuth, BodySizeLimit, freeze_gc, service_config

MAX_K = 100
DEFAULT_VARIANT = "champion"
EVENT_FLUSH_SECONDS = 1.0


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude: list[str] = Field(default_factory=list, max_length=1_000)
    context: dict[str, Any] = Field(default_factory=dict)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event_type: Literal["click", "purchase", "view", "rating"]
    value: float | None = None


class SimilarItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=256)
    k: int = Field(10, ge=1, le=MAX_K)


class EmptyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankedItem(BaseModel):
    item_id: str
    score: float
    position: int


class RecommendResponse(BaseModel):
    request_id: str
    model_version: str
    variant: str
    fallback: str | None = Field(description="null when the model ranked; 'popularity' otherwise")
    items: list[RankedItem]


class FeedbackResponse(BaseModel):
    accepted: bool
    request_id: str


class SimilarItemsResponse(BaseModel):
    item_id: str
    model_version: str
    items: list[RankedItem]


class ReloadResponse(BaseModel):
    model_version: str | None
    seconds: float


class FlushResponse(BaseModel):
    files: list[str]
    written: int


@dataclass(frozen=True)
class Champion:
    """The model being served and the tenant its events are logged under, swapped as one."""

    retriever: Retriever
    tenant: str


def error(status: int, message: str) -> JSONResponse:
    """A 4xx/5xx answer in the same shape as the middleware's: {"error": message}."""
    return JSONResponse({"error": message}, status_code=status)


NO_CHAMPION = "no champion model yet: run the train_and_promote job (or `make demo`)"


def _items(result: Recommendation) -> list[RankedItem]:
    return [
        RankedItem(item_id=item_id, score=round(score, 6), position=position)
        for position, (item_id, score) in enumerate(
            zip(result.item_ids, result.scores, strict=True)
        )
    ]


API_ROUTES = ("/recommend", "/feedback", "/similar_items")
PROTECTED_PREFIXES = ("/feedback", "/admin")


@bentoml.service(name="recloop", **service_config(API_ROUTES))
class RecloopService:
    def __init__(self) -> None:
        # One request is one small forward pass: intra-op threads only contend.
        torch.set_num_threads(1)
        self.settings = Settings.from_env()
        layout = DataLayout(self.settings.data_dir)
        self.registry = Registry(layout.registry)
        self.store = open_feature_store(self.settings)
        self.user_refs = feature_refs(USER_VIEW, [c for c in USER_COLUMNS if c != "top_genre"])
        self.events = EventBuffer(layout)
        self.served = ServedLists()
        self.champion: Champion | None = None
        self.load_error: str | None = None
        self._reload_lock = threading.Lock()
        # Load in the background, so /livez answers while weights and index load.
        threading.Thread(target=self._load_first_champion, daemon=True).start()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, daemon=True)
        self._flusher.start()

    def reload(self) -> str | None:
        """Load the registry's champion beside the current one, then swap the reference.

        Requests in flight keep the `Champion` they read; new ones see the new one.
        """
        with self._reload_lock:
            version = self.registry.champion()
            current = self.champion
            if version is None or (current and current.retriever.version == version):
                return version
            retriever = Retriever(self.registry.load(version))
            tenants = retriever.bundle.metadata.get("tenants")
            if not tenants:
                raise ValueError(f"model {version} records no tenant; retrain it with this recloop")
            self.champion = Champion(retriever, check_tenant_id(str(tenants[0])))
            return version

    def _load_first_champion(self) -> None:
        try:
            self.reload()
        except Exception as exc:  # kept for the 503 answers, then re-raised into the log
            self.load_error = f"{type(exc).__name__}: {exc}"
            raise

    def _flush_periodically(self) -> None:
        while not self._stop.is_set():
            self.events.flush_when_due(EVENT_FLUSH_SECONDS)

    @bentoml.on_startup
    def _freeze_gc(self) -> None:
        freeze_gc()

    @bentoml.on_shutdown
    def _close(self) -> None:
        self._stop.set()
        self.events.flush()

    def __is_ready__(self) -> bool:
        return self.champion is not None

    def _not_ready(self) -> JSONResponse:
        if self.load_error:
            return error(503, f"the champion failed to load: {self.load_error}")
        if self.registry.champion() is None:
            return error(503, NO_CHAMPION)
        return error(503, "the champion is still loading")

    def _user_features(self, user_id: str) -> FeatureColumns:
        """One row of the user's online features, as Feast's dict of lists."""
        return self.store.get_online_features(
            features=self.user_refs, entity_rows=[{"user_id": user_id}], full_feature_names=True
        ).to_dict()

    @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
    async def recommend(
        self, user_id: str, k: int, exclude: list[str], context: dict[str, Any]
    ) -> RecommendResponse | JSONResponse:
        champion = self.champion
        if champion is None:
            return self._not_ready()
        retriever = champion.retriever
        known = user_id in retriever.user_index
        result = retriever.recommend(
            user_id, self._user_features(user_id) if known else None, k, exclude
        )
        served = ServedList(
            request_id=uuid.uuid4().hex,
            tenant_id=champion.tenant,
            user_id=user_id,
            item_ids=tuple(result.item_ids),
            model_version=retriever.version,
            variant=DEFAULT_VARIANT,
        )
        self.served.remember(served)
        self.events.add(impression_rows(served, datetime.now(UTC)))
        return RecommendResponse(
            request_id=served.request_id,
            model_version=served.model_version,
            variant=served.variant,
            fallback=result.fallback,
            items=_items(result),
        )

    @bentoml.api(route="/feedback", input_spec=FeedbackRequest, output_spec=FeedbackResponse)
    async def feedback(
        self, request_id: str, user_id: str, item_id: str, event_type: str, value: float | None
    ) -> FeedbackResponse | JSONResponse:
        served = self.served.get(request_id)
        problem = feedback_problem(served, request_id, user_id, item_id, event_type, value)
        if problem is not None:
            return error(*problem)
        self.events.add([feedback_row(served, item_id, event_type, value, datetime.now(UTC))])
        return FeedbackResponse(accepted=True, request_id=request_id)

    @bentoml.api(
        route="/similar_items", input_spec=SimilarItemsRequest, output_spec=SimilarItemsResponse
    )
    async def similar_items(self, item_id: str, k: int) -> SimilarItemsResponse | JSONResponse:
        champion = self.champion
        if champion is None:
            return self._not_ready()
        retriever = champion.retriever
        try:
            result = retriever.similar_items(item_id, k)
        except UnknownItemError:
            return error(404, f"unknown item_id {item_id!r}")
        return SimilarItemsResponse(
            item_id=item_id, model_version=retriever.version, items=_items(result)
        )

    @bentoml.api(route="/admin/reload", input_spec=EmptyRequest, output_spec=ReloadResponse)
    def admin_reload(self) -> ReloadResponse:
        started = time.perf_counter()
        version = self.reload()
        return ReloadResponse(
            model_version=version, seconds=round(time.perf_counter() - started, 3)
        )

    @bentoml.api(route="/admin/flush", input_spec=EmptyRequest, output_spec=FlushResponse)
    def admin_flush(self) -> FlushResponse:
        files = [str(path) for path in self.events.flush()]
        return FlushResponse(files=files, written=self.events.written)


# The first added is the outer one: a request without its key is refused before its
# body is read.
RecloopService.add_asgi_middleware(ApiKeyAuth, protected=PROTECTED_PREFIXES)
RecloopService.add_asgi_middleware(BodySizeLimit)
