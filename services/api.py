"""The recommendation service's request and response bodies (pydantic).

Kept apart from the BentoML service (services/service.py), which names them as its
endpoints' input and output specs, and from the runtime (services/runtime.py), which
builds the answers: the HTTP contract lives in one place.

Requests are validated strictly: no field is coerced from another JSON type (`"k": true`
or `"k": "3"` is an error), except that a user or item id may be sent as a JSON integer,
which is taken as its decimal string (`1` is the id `"1"`): ids are strings in the
event log, and integer ids are common in clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from recloop.data.schemas import RATING_SCALE

MAX_K = 100
STRICT = ConfigDict(extra="forbid", strict=True)


def id_text(value: object) -> object:
    """An integer id as its decimal string; anything else is left to strict validation
    (a bool is not an integer here)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def identifier(description: str, example: str, max_length: int = 256) -> Any:
    return Field(
        min_length=1,
        max_length=max_length,
        description=description,
        json_schema_extra={"example": example},
    )


Identifier = Annotated[str, BeforeValidator(id_text)]


def tenant_field() -> Any:
    return Field(
        None,
        min_length=1,
        max_length=128,
        description="the tenant the request is for (or the X-Tenant header); optional while "
        "the service serves one tenant or the API key is scoped to one",
        json_schema_extra={"example": "ml100k"},
    )


class RecommendRequest(BaseModel):
    model_config = STRICT

    tenant: str | None = tenant_field()
    user_id: Identifier = identifier("the user to recommend for (a string, or an integer)", "196")
    k: int = Field(10, ge=1, le=MAX_K, description="how many items to return")
    exclude: list[Identifier] = Field(
        default_factory=list,
        max_length=1_000,
        description="item ids never to return, besides what the user already had",
    )
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="request attributes experiment specs may target (e.g. a country)",
    )
    dry_run: bool = Field(
        False,
        description="answer without logging the impressions, so the list never becomes "
        "training data and feedback cannot answer it: for trying the API",
        json_schema_extra={"example": True},
    )


class FeedbackRequest(BaseModel):
    model_config = STRICT

    tenant: str | None = tenant_field()
    request_id: str = identifier(
        "the request_id of the /recommend response that showed the item",
        "4f0c2a9e6b1d4c7f9a3e8b5d2c1f0e7a",
        max_length=128,
    )
    user_id: Identifier = identifier("the user the list was served to", "196")
    item_id: Identifier = identifier("the item the user acted on; it must be in that list", "242")
    event_type: Literal["click", "purchase", "view", "rating"] = Field(
        description="what the user did", json_schema_extra={"example": "click"}
    )
    value: float | None = Field(
        None,
        description=f"a rating's stars, in [{RATING_SCALE[0]:g}, {RATING_SCALE[1]:g}] "
        "(required for a rating); a purchase's amount (>= 0, optional); none for a click "
        "or a view",
    )
    durable: bool = Field(False, description="answer only once the event is fsync'd in the raw log")


class SimilarItemsRequest(BaseModel):
    model_config = STRICT

    tenant: str | None = tenant_field()
    item_id: Identifier = identifier("the item to find neighbours of", "242")
    k: int = Field(10, ge=1, le=MAX_K, description="how many items to return")


class EmptyRequest(BaseModel):
    model_config = STRICT


class RankedItem(BaseModel):
    item_id: str
    score: float
    position: int
    model_version: str | None = Field(None, description="the model that supplied this item")
    variant: str | None = Field(None, description="what this item is credited to in the log")


class RecommendResponse(BaseModel):
    request_id: str
    model_version: str = Field(description="the model(s) that produced the list, '+'-joined")
    variant: str = Field(
        description="'champion', or '<experiment>:<variant>' (interleaving: both, '+'-joined)"
    )
    experiment: str | None = Field(None, description="the online test the request is part of")
    fallback: str | None = Field(description="null when the model ranked; 'popularity' otherwise")
    dry_run: bool = Field(False, description="true when nothing was logged (a trial request)")
    items: list[RankedItem]


class FeedbackResponse(BaseModel):
    accepted: bool
    request_id: str
    durable: bool = Field(description="true when the event was on disk before this answer")
    duplicate: bool = Field(
        False,
        description="true when the same feedback was accepted before: it was not logged again",
    )


class SimilarItemsResponse(BaseModel):
    item_id: str
    model_version: str
    items: list[RankedItem]


class ReloadResponse(BaseModel):
    champions: dict[str, str] = Field(description="the version serving, by tenant")
    seconds: float


class FlushResponse(BaseModel):
    files: list[str]
    written: int


class EventStats(BaseModel):
    accepted: int = Field(description="rows taken into the buffer (impressions and feedback)")
    written: int = Field(description="rows in fsync'd raw-log files")
    durable_seq: int = Field(description="every row up to this sequence number is on disk")
    pending: int
    failed_flushes: int
    last_error: str | None


class ModelStats(BaseModel):
    serving: str | None = Field(description="the version answering requests")
    registry_champion: str | None = Field(description="the version the promotion log names")
    failed_version: str | None = Field(description="the registry's champion, if it failed to load")
    load_error: str | None = Field(description="why it failed; the previous champion serves")


class ExperimentStats(BaseModel):
    live: list[str] = Field(description="specs routing requests now (active dates permitting)")
    waiting: dict[str, list[str]] = Field(description="specs not routed yet, and why")
    error: str | None = Field(
        description="why the spec files were not reloaded; the live set stays"
    )


class OnlineStoreStats(BaseModel):
    kind: str = Field(description="sqlite or redis (RECLOOP_ONLINE_STORE)")
    problem: str | None = Field(
        description="why the store cannot answer (the service then answers 503); null when it can"
    )


class StatsResponse(BaseModel):
    events: EventStats
    models: dict[str, ModelStats] = Field(
        description="by tenant: every tenant's, or the one the request names"
    )
    swaps: int = Field(description="champions swapped in since start, first loads included")
    load_failures: int
    experiments: ExperimentStats
    online_store: OnlineStoreStats
    worker: int = Field(
        description="the process id of the worker that answered: with several workers, "
        "events, swaps and served_lists are that worker's"
    )
    request_state: str = Field(description="memory (this process) or redis (every worker's)")
    served_lists: int = Field(description="responses this worker remembered for feedback")
    restored_served_lists: int = Field(
        description="of those, rebuilt from the log at start (memory request state only)"
    )
