"""The scheduler's request limits at the ASGI edge, before any route runs.

`RequestLimits` wraps the app: a request with too many headers is refused (431), a body whose
Content-Length is over `max_body_bytes` is refused unread (413), any other body is read with a
running count (413 as soon as it passes the limit, so a chunked body cannot grow the process)
and within `request_timeout_seconds` (408: a slow sender holds no connection for longer). A POST
body that is not JSON text is refused here too (400), lone surrogate escapes included, which
Python's own parser would let through to fail later when a job is encoded. What passes is
handed to the app as it was received. The request head's own size and time the HTTP protocol
bounds (`ponder.scheduler.http_protocol`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic_core
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ponder.api.service_config import ApiLimits
from ponder.scheduler.request_bounds import (
    Refusal,
    body_size_refusal,
    declared_length,
    header_refusal,
    invalid_json_refusal,
    timeout_refusal,
)
from ponder.scheduler.response import error_body


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class _Disconnected(Exception):
    """The client went away while sending its body: nobody to answer."""


class RequestLimits:
    """ASGI middleware enforcing `ApiLimits` on every HTTP request."""

    def __init__(self, app: ASGIApp, limits: ApiLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._admit(scope, receive)
        except _Refused as refused:
            await refuse(refused.refusal, scope, receive, send)
            return
        except _Disconnected:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _admit(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body of an admissible request; raises _Refused or _Disconnected."""
        headers = scope["headers"]
        declared = declared_length(headers)
        target = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        refusal = header_refusal(target, headers, self.limits) or (
            body_size_refusal(declared, self.limits) if declared is not None else None
        )
        if refusal is not None:
            raise _Refused(refusal)
        try:
            async with asyncio.timeout(self.limits.request_timeout_seconds):
                body = await self._read(receive)
        except TimeoutError as error:
            raise _Refused(timeout_refusal(self.limits)) from error
        if body and scope["method"] == "POST":
            try:
                pydantic_core.from_json(body)
            except ValueError as error:
                raise _Refused(invalid_json_refusal(str(error))) from error
        return body

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            refusal = body_size_refusal(size, self.limits)
            if refusal is not None:
                raise _Refused(refusal)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then the client's later messages
    (its disconnect, which the app watches for)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def refusal_headers(refusal: Refusal) -> dict[str, str]:
    """`Retry-After` for a 429, the scheme for a 401, and a close: the body may be unread."""
    headers = {"connection": "close"}
    if refusal.retry_after_seconds is not None:
        headers["retry-after"] = str(refusal.retry_after_seconds)
    if refusal.status == 401:
        headers["www-authenticate"] = "Bearer"
    return headers


async def refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `refusal` in OpenAI's error shape and close the connection (a body may be left
    unread on it)."""
    body: dict[str, Any] = error_body(
        refusal.message, "invalid_request_error", param=refusal.param, code=refusal.code
    ).model_dump()
    response = JSONResponse(body, status_code=refusal.status, headers=refusal_headers(refusal))
    await response(scope, receive, send)
