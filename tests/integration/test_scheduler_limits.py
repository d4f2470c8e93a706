"""A scheduler's request limits, on a real scheduler process and a real NATS (no worker, no
vLLM: nothing refused here gets as far as needing one).

Every limit answers a 4xx in OpenAI's error shape that names it, nothing is queued for a refused
request, and the scheduler is healthy afterwards. Requests are written on raw sockets where an
HTTP client would not send them (a body larger than declared, a head that never ends).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest_asyncio

from ponder.api.service_config import ApiLimits, ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.local.nats import NatsServer
from ponder.local.scheduler import SchedulerProcess, scheduler_process

MODEL = "ponder-arith"
TIMEOUT_SECONDS = 2.0
"""The scheduler's request timeout here: short, so the slow-client tests are quick."""
SLACK_SECONDS = 15.0
"""How much later than its timeout a busy machine may cut a slow client off."""
CLOCK_SLACK_SECONDS = 0.05
"""How much earlier than its timeout, by this test's clock, the server's timer may fire (timers
are read across two processes and event loops; measured up to 0.3 ms)."""
LIMITS = ApiLimits(
    max_headers=32,
    max_header_bytes=8 * 1024,
    max_messages=50,
    max_stop_sequences=4,
    max_stop_chars=16,
    request_timeout_seconds=TIMEOUT_SECONDS,
)


@pytest_asyncio.fixture(scope="module")
async def scheduler(nats: NatsServer, stack_log_dir: Path) -> AsyncIterator[SchedulerProcess]:
    config = ServiceConfig(name="limits", nats_url=nats.url, model=MODEL, api=LIMITS)
    async with scheduler_process(config, ensure_stream=True, log_dir=stack_log_dir) as started:
        yield started


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def queued_jobs(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(ServiceSubjects("default", "limits").stream)
        return info.state.messages
    finally:
        await nc.close()


async def post(
    http: aiohttp.ClientSession, scheduler: SchedulerProcess, path: str, body: Any
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        f"{scheduler.base_url}{path}", data=data, headers={"content-type": "application/json"}
    ) as response:
        return response.status, await response.json()


async def raw_exchange(
    scheduler: SchedulerProcess, head: bytes, body_chunks: list[bytes] | None = None
) -> tuple[int, dict[str, Any]]:
    """Write `head` (and the chunks, as long as the server reads them) on a fresh connection;
    the response's status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", scheduler.port)
    try:
        writer.write(head)
        for chunk in body_chunks or []:
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break  # the server answered and closed: the rest is never read
        response = await asyncio.wait_for(reader.read(), timeout=60)
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Q:1+2 A:", "max_tokens": 8, **fields}


def error_of(body: dict[str, Any]) -> tuple[str | None, str | None, str]:
    error = body["error"]
    return error["code"], error["param"], error["message"]


async def test_a_body_declared_over_the_limit_is_refused_unread(
    scheduler: SchedulerProcess,
) -> None:
    # 50 MB announced, none sent: the answer cannot have waited for the body.
    head = (
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 50000000\r\n\r\n"
    )
    status, body = await raw_exchange(scheduler, head)
    assert status == 413
    code, _, message = error_of(body)
    assert code == "request_too_large"
    assert f"{LIMITS.max_body_bytes} bytes" in message and "maxBodyBytes" in message


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(
    scheduler: SchedulerProcess,
) -> None:
    head = (
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # One piece more than the limit, then the client waits for the answer (one that went on
    # writing to the closed connection would get a reset and might never read the 413).
    chunks = [chunk] * (LIMITS.max_body_bytes // len(piece) + 1)
    status, body = await raw_exchange(scheduler, head, chunks)
    assert status == 413
    assert error_of(body)[0] == "request_too_large"


async def test_too_many_headers_and_a_head_too_large_are_431(
    scheduler: SchedulerProcess,
) -> None:
    many = b"".join(f"x-extra-{i}: {i}\r\n".encode() for i in range(LIMITS.max_headers + 1))
    status, body = await raw_exchange(
        scheduler, b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n"
    )
    assert status == 431
    code, _, message = error_of(body)
    assert code == "too_many_headers" and f"at most {LIMITS.max_headers}" in message

    huge = b"x-huge: " + b"a" * (4 * LIMITS.max_header_bytes) + b"\r\n"
    status, body = await raw_exchange(
        scheduler, b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + huge + b"\r\n"
    )
    assert status == 431
    code, _, message = error_of(body)
    assert code == "headers_too_large" and f"{LIMITS.max_header_bytes} bytes" in message


async def test_a_slow_body_is_a_408_at_the_request_timeout(scheduler: SchedulerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", scheduler.port)
    started = time.monotonic()
    try:
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"model":'
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=TIMEOUT_SECONDS + SLACK_SECONDS)
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert b"requestTimeoutSeconds" in response
    assert TIMEOUT_SECONDS - CLOCK_SLACK_SECONDS <= elapsed < TIMEOUT_SECONDS + SLACK_SECONDS, (
        elapsed
    )


async def test_a_head_that_never_ends_and_an_idle_connection_are_closed(
    scheduler: SchedulerProcess,
) -> None:
    for opening in (b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n", b""):
        # Before the connection exists: the server's timer starts when it accepts it.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", scheduler.port)
        try:
            writer.write(opening)
            await writer.drain()
            # The server closes the connection: end of stream, nothing answered.
            left = await asyncio.wait_for(reader.read(), timeout=TIMEOUT_SECONDS + SLACK_SECONDS)
        finally:
            writer.close()
        elapsed = time.monotonic() - started
        assert left == b"", left[:200]
        assert TIMEOUT_SECONDS - CLOCK_SLACK_SECONDS <= elapsed < TIMEOUT_SECONDS + SLACK_SECONDS, (
            opening,
            elapsed,
        )


async def test_contents_over_a_limit_are_400s_that_name_it(
    scheduler: SchedulerProcess, http: aiohttp.ClientSession, nats: NatsServer
) -> None:
    chat = {"model": MODEL, "max_tokens": 8}
    cases: list[tuple[str, Any, str, str | None, str]] = [
        (
            "/v1/chat/completions",
            {**chat, "messages": [{"role": "user", "content": "hi"}] * 10_000},
            "limit_exceeded",
            "messages",
            "at most 50",
        ),
        ("/v1/completions", completion(stop=["a"] * 5), "limit_exceeded", "stop", "at most 4"),
        ("/v1/completions", completion(stop=["a" * 17]), "limit_exceeded", "stop", "at most 16"),
        ("/v1/completions", completion(seed=2**70), "invalid_value", "seed", "less than"),
        ("/v1/completions", completion(prompt=""), "invalid_value", "prompt", "not be empty"),
        # A lone surrogate escape: JSON-shaped, but no text; Python's json module would take it.
        (
            "/v1/completions",
            b'{"model": "ponder-arith", "prompt": "Q:1+2 \\ud800 A:"}',
            "invalid_json",
            None,
            "surrogate",
        ),
    ]
    for path, body, code, param, words in cases:
        status, answer = await post(http, scheduler, path, body)
        assert status == 400, (path, answer)
        assert error_of(answer)[:2] == (code, param), answer
        assert words in error_of(answer)[2], answer
    assert await queued_jobs(nats.url) == 0


async def test_a_prompt_too_large_for_one_job_is_a_413_and_queues_nothing(
    scheduler: SchedulerProcess, http: aiohttp.ClientSession, nats: NatsServer
) -> None:
    # Under the body limit (4 MiB), over what NATS takes in one message (1 MiB by default).
    status, body = await post(
        http, scheduler, "/v1/completions", completion(prompt="1+" * 600_000 + "1")
    )
    assert status == 413, body
    code, _, message = error_of(body)
    assert code == "request_too_large" and "max_payload" in message
    # No subject, no exception in what the client reads.
    assert "ponder." not in message and "Error" not in message
    assert await queued_jobs(nats.url) == 0


async def test_the_scheduler_is_healthy_after_all_of_it(
    scheduler: SchedulerProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{scheduler.base_url}/healthz") as response:
        assert response.status == 200
    assert scheduler.process.poll() is None
