"""Framework baseline: a BentoML echo endpoint on the recloop service's serving stack.

`POST /echo` returns its JSON object body. It runs on `services.serving_stack`
exactly like the real service (one worker, no access log, metrics on, untraced API
routes, cancelling timeout, frozen GC, body limit, API key), so `make bench-serve`
compares /recommend with the cost of the framework alone.

    BENTOML_HOME=/tmp/bentoml bentoml serve services.echo:Echo --port 3000
"""

from __future__ import annotations

import bentoml
from pydantic import BaseModel, ConfigDict

from services.serving_stack import ApiKeyAuth, BodySizeLimit, freeze_gc, service_config

API_ROUTES = ("/echo",)


class EchoBody(BaseModel):
    """Any JSON object, returned unchanged."""

    model_config = ConfigDict(extra="allow")


@bentoml.service(**service_config(API_ROUTES))
class Echo:
    """POST /echo answers with the JSON object it was sent."""

    @bentoml.on_startup
    def _freeze_gc(self) -> None:
        freeze_gc()

    @bentoml.api
    async def echo(self, body: EchoBody, /) -> EchoBody:
        return body


# The first added is the outer one: a request without its key is refused before its
# body is read.
Echo.add_asgi_middleware(ApiKeyAuth, protected=API_ROUTES)
Echo.add_asgi_middleware(BodySizeLimit)
