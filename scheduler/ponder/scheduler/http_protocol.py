"""uvicorn's h11 protocol with the request head bounded in size and time.

uvicorn picks httptools when it is installed, which takes a request head of any size (an 8 MB
header was accepted). h11 refuses a head that grows past `max_incomplete_event_size` while it
arrives (this class answers that with a 431 that names the limit, where uvicorn sends a plain
400); a head that arrives in one read h11 parses whole, and `ponder.scheduler.limits` refuses
it by its size. Neither server times out a client that sends its head slowly or not at all:
uvicorn's keep-alive timeout only runs between requests. `bounded_h11(limits)` also closes a
connection whose next request head has not fully arrived within `request_timeout_seconds` of
the connection opening or of that head's first byte."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ponder.api.service_config import ApiLimits
from ponder.scheduler.request_bounds import head_size_refusal

LINGER_SECONDS = 2.0
"""How long a connection closed with unread input keeps reading (and dropping) it."""
LINGER_BYTES = 64 * 1024 * 1024


class _LingeringTransport:
    """A transport whose close first sends the response's end (FIN) and keeps reading what the
    client still sends, for `LINGER_SECONDS` at most, before it really closes: closing a socket
    with unread input makes the kernel send a reset, and a client still writing its body would
    lose the 413 that refused it (what nginx calls a lingering close)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self.lingering = False
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        try:
            self._transport.write_eof()
            self._transport.resume_reading()  # uvicorn may have paused it for a large body
        except (OSError, RuntimeError):
            self._transport.close()
            return
        self._loop.call_later(LINGER_SECONDS, self._transport.close)

    def drop(self, data: bytes) -> None:
        """Input that arrived while lingering: read, and forgotten."""
        self.dropped += len(data)
        if self.dropped > LINGER_BYTES:
            self._transport.close()


class _BoundedH11Protocol(H11Protocol):
    limits: ApiLimits = ApiLimits()
    _head_timer: asyncio.TimerHandle | None = None
    _error_hint: int = 400

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        next_event = self.conn.next_event

        def next_event_noting_why() -> Any:
            try:
                return next_event()
            except h11.RemoteProtocolError as error:
                self._error_hint = error.error_status_hint
                raise

        self.conn.next_event = next_event_noting_why  # type: ignore[method-assign]

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers every malformed head with a plain 400; a head over the size limit
        gets a 431 in OpenAI's error shape that names the limit."""
        if self._error_hint != 431:
            super().send_400_response(msg)
            return
        refusal = head_size_refusal(self.limits)
        body = json.dumps(
            {
                "error": {
                    "message": refusal.message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": refusal.code,
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = b"Request Header Fields Too Large"
        for event in (
            h11.Response(status_code=refusal.status, headers=headers, reason=reason),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = _LingeringTransport(transport, self.loop)
        super().connection_made(self._lingering)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:
            self._lingering.drop(data)
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm()  # part of a head (a kept-alive connection's next request)
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            timeout = self.limits.request_timeout_seconds
            self._head_timer = self.loop.call_later(timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head did not arrive in time")
            self.transport.close()


def bounded_h11(limits: ApiLimits) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`http=`), with `h11_max_incomplete_event_size` set
    to `limits.max_header_bytes`."""
    return type(
        "BoundedH11Protocol",
        (_BoundedH11Protocol,),
        {"limits": limits},
    )
