"""The recommendation service's request and response bodies (pydantic).

Kept apart from the BentoML service (services/service.py), which names them as its
endpoints' input and output specs, and from the runtime (services/runtime.py), which
builds the answers: the HTTP contract lives in one place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 100


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
    durable: bool = Field(False, description="answer only once the event is fsync'd in the raw log")


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
    items: list[RankedItem]


class FeedbackResponse(BaseModel):
    accepted: bool
    request_id: str
    durable: bool = Field(description="true when the event was on disk before this answer")


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
    swaps: int = Field(description="champions swapped in since start, the first load included")
    load_failures: int
    failed_version: str | None = Field(description="the registry's champion, if it failed to load")
    load_error: str | None = Field(description="why it failed; the previous champion serves")


class ExperimentStats(BaseModel):
    live: list[str] = Field(description="specs routing requests now (active dates permitting)")
    waiting: dict[str, list[str]] = Field(description="specs not routed yet, and why")
    error: str | None = Field(
        description="why the spec files were not reloaded; the live set stays"
    )


class StatsResponse(BaseModel):
    events: EventStats
    models: ModelStats
    experiments: ExperimentStats
    served_lists: int = Field(description="responses that feedback may answer")
    restored_served_lists: int = Field(description="of those, rebuilt from the log at start")
