"""Which limit of `ApiLimits` a request exceeds, if any (pure).

The HTTP edge (`ponder.scheduler.limits`, `ponder.scheduler.http_protocol`) asks these before a
request reaches a route, the routes ask `body_problem` before planning; each answer is a
`Refusal` whose message names the limit and its value, so a client can tell what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ponder.api.service_config import ApiLimits


@dataclass(frozen=True)
class Refusal:
    """A request refused for a limit: the HTTP status, the parameter (None: the request as a
    whole), the message, and OpenAI's error code."""

    status: int
    param: str | None
    message: str
    code: str
    retry_after_seconds: int | None = None


def header_refusal(
    target: bytes, headers: Sequence[tuple[bytes, bytes]], limits: ApiLimits
) -> Refusal | None:
    """Too many headers, or a request line and headers over the size limit (431). The HTTP
    parser refuses a head over the size limit while it is still arriving (bounding memory);
    one that came in a single read it parses whole, and this refuses it."""
    if len(headers) > limits.max_headers:
        return Refusal(
            431,
            None,
            f"the request has {len(headers)} headers; at most {limits.max_headers} are accepted",
            "too_many_headers",
        )
    size = len(target) + sum(len(name) + len(value) + 4 for name, value in headers)
    if size > limits.max_header_bytes:
        return head_size_refusal(limits)
    return None


def head_size_refusal(limits: ApiLimits) -> Refusal:
    return Refusal(
        431,
        None,
        f"the request line and headers are over the limit of {limits.max_header_bytes} bytes "
        "(spec.scheduler.limits.maxHeaderBytes)",
        "headers_too_large",
    )


def declared_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length the client declared, or None (absent, chunked, or malformed: the
    body is then counted as it arrives)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
    return None


def body_size_refusal(size: int, limits: ApiLimits) -> Refusal | None:
    """A body of `size` bytes (declared, or received so far) over the limit (413)."""
    if size > limits.max_body_bytes:
        return Refusal(
            413,
            None,
            f"the request body is over the limit of {limits.max_body_bytes} bytes "
            "(spec.scheduler.limits.maxBodyBytes)",
            "request_too_large",
        )
    return None


def timeout_refusal(limits: ApiLimits) -> Refusal:
    """The body did not arrive in time (408)."""
    return Refusal(
        408,
        None,
        f"the request body was not received within {limits.request_timeout_seconds:g} s "
        "(spec.scheduler.limits.requestTimeoutSeconds)",
        "request_timeout",
    )


def invalid_json_refusal(detail: str) -> Refusal:
    """A body that is not JSON text (400), lone surrogate escapes included: they are not
    characters, and nothing downstream can encode them."""
    hint = (
        " (a \\uD800-\\uDFFF escape must be half of a surrogate pair)"
        if "escape" in detail or "surrogate" in detail
        else ""
    )
    return Refusal(400, None, f"the request body is not valid JSON: {detail}{hint}", "invalid_json")


def body_refusal(
    *,
    messages: int | None,
    stop: Sequence[str],
    limits: ApiLimits,
) -> Refusal | None:
    """A parsed request over a limit on its contents (400): messages, stop strings."""
    if messages is not None and messages > limits.max_messages:
        return Refusal(
            400,
            "messages",
            f"messages: {messages} messages; at most {limits.max_messages} are accepted "
            "(spec.scheduler.limits.maxMessages)",
            "limit_exceeded",
        )
    if len(stop) > limits.max_stop_sequences:
        return Refusal(
            400,
            "stop",
            f"stop: {len(stop)} stop strings; at most {limits.max_stop_sequences} are accepted "
            "(spec.scheduler.limits.maxStopSequences)",
            "limit_exceeded",
        )
    for index, each in enumerate(stop):
        if len(each) > limits.max_stop_chars:
            return Refusal(
                400,
                "stop",
                f"stop[{index}]: {len(each)} characters; at most {limits.max_stop_chars} "
                "(spec.scheduler.limits.maxStopCharacters)",
                "limit_exceeded",
            )
    return None
