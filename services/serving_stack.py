"""The BentoML serving stack shared by the recloop service and the echo baseline.

BentoML 1.4 as shipped stalls for 30-300 ms every 1-3 s under load.
The cause: its `TimeoutMiddleware` arms `loop.call_later(timeout)` for every request
and never cancels it, so each request's context (its OpenTelemetry span and ~50
objects) lives for the whole timeout (60 s by default); the heap grows by tens of
thousands of objects a second and the garbage collector's full passes stall the
event loop. What this module changes:

- `TimerSafeService` swaps in `CancellingTimeoutMiddleware`: the same 504, with a
  timer that is disarmed once the response starts.
- `freeze_gc` moves the ~100k objects BentoML leaves after import out of the
  collector's sight once the service is up, so a full pass costs ~1 ms, not ~50.
- `service_config` turns the access log off and excludes the API routes from
  tracing: BentoML records three or four spans per request even with no exporter,
  which halves throughput. Nothing exports traces here; the cost is the
  `X-BentoML-Request-ID` response header.
- `BodySizeLimit` (413) and `ApiKeyAuth` (401) answer before BentoML parses a body.
- The API docs: Swagger at `/docs` as well as `/` (BentoML serves it at `/` only), and
  an OpenAPI title, version and description of the service's own (BentoML writes its
  name, version "None" and its own README).
- A request body that does not fit its input model answers 400 `{"error": "<field>:
  <problem>"}`, the shape of every other error, instead of BentoML's, which names an
  internal class (`RecommendRequestIODescriptor`) and logs a traceback per request.
- `JsonRequests`: bodies are JSON whatever their Content-Type (curl's `-d` says form),
  and a read-only endpoint can be called with GET (BentoML routes POST only).

This is recloop's one adapter over private APIs of a dependency: it subclasses
`bentoml._internal...TimeoutMiddleware` and `_bentoml_impl...ServiceAppFactory`. A test (tests/unit/test_architecture.py)
fails if any other module imports `bentoml._internal` or `dagster._core`.

Measured on the echo endpoint, c=8, 2 cores: 965 req/s, p99 11 ms, max 342 ms
before; 3,162-3,439 req/s, p99 4.8-7.3 ms, max 12-13 ms after.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import _bentoml_impl.server
import attrs
import bentoml
from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recloop.settings import SettingsError, api_key_from_env, tenant_api_keys_from_env

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 10.0


SWAGGER_PAGE = Path(_bentoml_impl.server.__file__).parent / "main-openapi.html"


@dataclass(frozen=True)
class ApiDocs:
    """What the OpenAPI page says about a service: its title, version and description."""

    title: str
    description: str
    version: str = version("recloop")


def service_config(api_routes: Iterable[str], workers: int = 1) -> dict:
    """`@bentoml.service` keyword arguments: `workers` processes behind one port, quiet,
    untraced API routes."""
    return {
        "service_class": TimerSafeService,
        "workers": workers,
        "traffic": {"timeout": REQUEST_TIMEOUT_S},
        "logging": {"access": {"enabled": False}},
        "metrics": {"enabled": True},
        # Regexes searched in the request URL (scheme://host:port/path, no query).
        "tracing": {"excluded_urls": [f"{route}$" for route in api_routes]},
    }


async def send_json(send: Send, status: int, body: dict, close: bool = False) -> None:
    """Send a complete JSON response straight from ASGI middleware."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header `name` (lower-case bytes), if present."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class CancellingTimeoutMiddleware:
    """BentoML's request timeout (504 if no response has started) with a cancelled timer."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        deadline = asyncio.timeout(self.timeout)
        started = False

        async def send_and_disarm(message: Message) -> None:
            nonlocal started
            if not started:
                # Like BentoML's: once the response has begun, it may take its time.
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_and_disarm)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            error = f"Not able to process the request in {self.timeout} seconds"
            await send_json(send, 504, {"error": error})


def field_errors(error: ValidationError) -> str:
    """Each problem of a request body as `field: problem`, `;`-joined (`body` when the
    problem is the body itself, e.g. not JSON)."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in problems
    )


class PlainErrorsAppFactory(ServiceAppFactory):
    """BentoML's app, but an input body that fails its model answers 400 with
    `field_errors`, unlogged: a client's mistake, not the server's."""

    async def api_endpoint(self, name: str, request: Request) -> Response:
        try:
            return await super().api_endpoint(name, request)
        except ValidationError as error:
            if error.title != self.service.apis[name].input_spec.__name__:
                raise  # raised by the endpoint's own code: BentoML's handling stands
            return JSONResponse({"error": field_errors(error)}, status_code=400)


class TimerSafeService(bentoml.Service):
    """A `bentoml.Service` whose app uses `CancellingTimeoutMiddleware`, answers body
    errors with `field_errors`, serves Swagger at `/docs` and describes itself by the
    `ApiDocs` set with `describe`."""

    docs: ApiDocs | None = None

    def describe(self, docs: ApiDocs) -> None:
        self.docs = docs

    @property
    def openapi_spec(self):  # noqa: ANN201 (BentoML's OpenAPISpecification)
        spec = super().openapi_spec
        if self.docs is None:
            return spec
        info = attrs.evolve(
            spec.info,
            title=self.docs.title,
            description=self.docs.description,
            version=self.docs.version,
            contact=None,
        )
        return attrs.evolve(spec, info=info)

    def to_asgi(self, is_main: bool = True) -> ASGIApp:
        self.inject_config()
        app = PlainErrorsAppFactory(self, is_main=is_main)()
        if is_main:
            app.add_route("/docs", swagger_page, methods=["GET"], name="docs")
        app.user_middleware = [
            Middleware(CancellingTimeoutMiddleware, *m.args, **m.kwargs)
            if m.cls is TimeoutMiddleware
            else m
            for m in app.user_middleware
        ]
        return app


async def swagger_page(_: Request) -> Response:
    """BentoML's Swagger page; it loads `./docs.json`, which resolves from `/docs` too."""
    return FileResponse(SWAGGER_PAGE)


def freeze_gc() -> None:
    """Exclude every object alive now from future garbage-collector passes."""
    gc.collect()
    gc.freeze()


class BodySizeLimit:
    """Answer 413 to an HTTP request whose body is larger than `max_bytes`.

    A declared Content-Length is checked before anything is read (uvicorn holds the
    body to that length); a chunked body is read up to the limit and replayed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def too_large(self, send: Send, size: str) -> None:
        message = f"request body of {size} bytes exceeds the limit of {self.max_bytes}"
        await send_json(send, 413, {"error": message}, close=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None:
            if int(declared) > self.max_bytes:
                await self.too_large(send, declared.decode())
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self.too_large(send, f"more than {size}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def receive_replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, receive_replayed, send)


# The tenant a request names (optional while the service serves one tenant).
TENANT_HEADER = b"x-tenant"
# Set by ApiKeyAuth, never by a client: the tenant the request's key is scoped to.
KEY_TENANT_HEADER = b"x-recloop-key-tenant"


class ApiKeyAuth:
    """401 unless `X-API-Key` is `$RECLOOP_API_KEY` (every tenant) or one of
    `$RECLOOP_TENANT_API_KEYS` (one tenant), on paths under one of `protected`; 403 when a
    tenant's key names another tenant in `X-Tenant`.

    A tenant key's tenant goes on to the endpoint in KEY_TENANT_HEADER, which then refuses
    (403) a body naming another tenant; a client's own KEY_TENANT_HEADER is dropped. The
    keys are read when the server builds its app; with none set, auth is off.
    """

    def __init__(self, app: ASGIApp, protected: Iterable[str]):
        self.app = app
        tenant_keys = tenant_api_keys_from_env()
        admin_key = api_key_from_env()
        if admin_key is not None and admin_key in tenant_keys.values():
            raise SettingsError("RECLOOP_API_KEY is also a tenant's key in RECLOOP_TENANT_API_KEYS")
        # key -> the tenant it is scoped to (None: every tenant)
        self.keys: dict[bytes, str | None] = {k.encode(): t for t, k in tenant_keys.items()}
        if admin_key is not None:
            self.keys[admin_key.encode()] = None
        self.protected = tuple(protected)

    def _scope_of(self, given: bytes | None) -> tuple[bool, str | None]:
        """(whether the key is known, the tenant it is scoped to); every key compared in
        constant time."""
        known, tenant = False, None
        for key, scoped_to in self.keys.items():
            if given is not None and hmac.compare_digest(given, key):
                known, tenant = True, scoped_to
        return known, tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != KEY_TENANT_HEADER]
        if self.keys and scope["type"] == "http" and scope["path"].startswith(self.protected):
            known, tenant = self._scope_of(header(scope, b"x-api-key"))
            if not known:
                message = f"missing or wrong X-API-Key header for {scope['path']}"
                await send_json(send, 401, {"error": message})
                return
            if tenant is not None:
                named = header(scope, TENANT_HEADER)
                if named is not None and named.decode("latin-1") != tenant:
                    message = f"this API key is scoped to tenant {tenant!r}, not {named.decode('latin-1')!r}"
                    await send_json(send, 403, {"error": message})
                    return
                scope["headers"].append((KEY_TENANT_HEADER, tenant.encode()))
        await self.app(scope, receive, send)


class JsonRequests:
    """Every request to the JSON endpoints under `paths` is read as JSON, whatever its
    Content-Type: `curl -d '{...}'` sends form encoding, which BentoML would parse as a
    form whose one field is the whole JSON text. A GET to a path in `get_paths` calls
    that (read-only, empty-body) endpoint as a POST with the body `{}` (BentoML routes
    POST only)."""

    def __init__(self, app: ASGIApp, paths: Iterable[str], get_paths: Iterable[str] = ()):
        self.app = app
        self.paths = frozenset(paths)
        self.get_paths = frozenset(get_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        headers.append((b"content-type", b"application/json"))
        if scope["method"] == "GET" and scope["path"] in self.get_paths:
            body: list[Message] = [{"type": "http.request", "body": b"{}"}]
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers.append((b"content-length", b"2"))

            async def receive_empty_object() -> Message:
                return body.pop() if body else await receive()

            scope = {**scope, "method": "POST", "headers": headers}
            await self.app(scope, receive_empty_object, send)
            return
        await self.app({**scope, "headers": headers}, receive, send)
