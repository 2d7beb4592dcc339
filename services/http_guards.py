"""ASGI middleware in front of the service: body size limit and API-key auth.

Both answer with a JSON error naming the problem, before BentoML parses anything.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a request body over `max_bytes`, by header or by counting a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json_error(
                send,
                413,
                f"request body of {int(declared)} bytes exceeds the limit of {self.max_bytes}",
            )
            return
        seen = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge as exc:
            await send_json_error(send, 413, str(exc))


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body exceeds the limit of {limit} bytes")


class ApiKeyAuth:
    """401 unless `X-API-Key` matches, on paths starting with one of `protected` prefixes.

    The key is read from the environment variable `key_env` when the server builds
    its app; with the variable unset, auth is off.
    """

    def __init__(self, app: ASGIApp, key_env: str, protected: Iterable[str]):
        self.app = app
        api_key = os.environ.get(key_env)
        self.api_key = api_key.encode() if api_key else None
        self.protected = tuple(protected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.api_key is not None
            and scope["type"] == "http"
            and scope["path"].startswith(self.protected)
        ):
            given = dict(scope.get("headers") or []).get(b"x-api-key", b"")
            if not hmac.compare_digest(given, self.api_key):
                await send_json_error(
                    send, 401, "missing or wrong X-API-Key header for " + scope["path"]
                )
                return
        await self.app(scope, receive, send)
