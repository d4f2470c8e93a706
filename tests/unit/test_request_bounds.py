"""The scheduler's request limits as pure decisions: which limit a request exceeds."""

from __future__ import annotations

import pytest

from ponder.api.service_config import ApiLimits
from ponder.scheduler.request_bounds import (
    body_refusal,
    body_size_refusal,
    declared_length,
    header_refusal,
    invalid_json_refusal,
    timeout_refusal,
)

LIMITS = ApiLimits(
    max_body_bytes=2048,
    max_header_bytes=1024,
    max_headers=8,
    max_messages=3,
    max_stop_sequences=2,
    max_stop_chars=5,
    request_timeout_seconds=7.5,
)


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        ([(b"content-length", b"12")], 12),
        ([(b"Content-Length", b" 12 ")], 12),
        ([(b"transfer-encoding", b"chunked")], None),
        ([(b"content-length", b"-1")], None),
        ([(b"content-length", b"twelve")], None),
        ([], None),
    ],
)
def test_declared_length(headers: list[tuple[bytes, bytes]], value: int | None) -> None:
    assert declared_length(headers) == value


@pytest.mark.parametrize(
    ("target", "headers", "status_and_code"),
    [
        (b"/v1/completions", [(b"h", b"v")] * 8, None),
        (b"/v1/completions", [(b"h", b"v")] * 9, (431, "too_many_headers")),
        # 4 bytes per header of separators: 16 + 4 * (1 + 250 + 4) = 1036 > 1024.
        (b"/v1/completions?", [(b"h", b"v" * 250)] * 4, (431, "headers_too_large")),
        (b"/v1/completions?", [(b"h", b"v" * 245)] * 4, None),
        (b"/" + b"p" * 1024, [], (431, "headers_too_large")),
    ],
)
def test_header_refusal(
    target: bytes, headers: list[tuple[bytes, bytes]], status_and_code: tuple[int, str] | None
) -> None:
    refusal = header_refusal(target, headers, LIMITS)
    assert (refusal and (refusal.status, refusal.code)) == status_and_code


def test_a_body_at_the_limit_passes_and_one_byte_more_is_a_413_naming_it() -> None:
    assert body_size_refusal(2048, LIMITS) is None
    refusal = body_size_refusal(2049, LIMITS)
    assert refusal is not None and refusal.status == 413
    assert "2048 bytes" in refusal.message and "maxBodyBytes" in refusal.message


def test_timeout_and_json_refusals_name_what_to_change() -> None:
    timeout = timeout_refusal(LIMITS)
    assert (timeout.status, timeout.code) == (408, "request_timeout")
    assert "7.5 s" in timeout.message and "requestTimeoutSeconds" in timeout.message
    lone = invalid_json_refusal("unexpected end of hex escape at line 1 column 13")
    assert (lone.status, lone.code) == (400, "invalid_json") and "surrogate" in lone.message
    plain = invalid_json_refusal("EOF while parsing a value at line 1 column 0")
    assert "surrogate" not in plain.message


@pytest.mark.parametrize(
    ("messages", "stop", "expected"),
    [
        (3, ("ab", "cdefg"), None),
        (None, (), None),
        (4, (), ("messages", "at most 3")),
        (None, ("a", "b", "c"), ("stop", "at most 2")),
        (1, ("abcdef",), ("stop", "stop[0]: 6 characters; at most 5")),
        (1, ("ok", "abcdef"), ("stop", "stop[1]")),
    ],
)
def test_body_refusal(
    messages: int | None, stop: tuple[str, ...], expected: tuple[str, str] | None
) -> None:
    refusal = body_refusal(messages=messages, stop=stop, limits=LIMITS)
    if expected is None:
        assert refusal is None
        return
    assert refusal is not None and refusal.status == 400
    assert refusal.param == expected[0] and expected[1] in refusal.message
