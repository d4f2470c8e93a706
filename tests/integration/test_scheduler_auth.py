"""API keys on real parts: a scheduler with `auth: api-keys` reading its keys file, real NATS,
one worker and a real vLLM. Refusals (401, 403, 429) queue nothing; a key that passes gets its
answer; keys rotate by editing the file; tokens per minute is charged what the queries
generated, as their `usage` says.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import pytest_asyncio

from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer
from ponder.local.vllm import VllmServer
from tests.integration.test_scheduler_faults import metric
from tests.integration.vllm_control import paused

pytestmark = pytest.mark.vllm

MODEL = "ponder-arith"
SERVICE = "auth-svc"
OPEN_KEY = "sk-open-0123456789abcdef"
SLOW_KEY = "sk-slow-0123456789abcdef"  # one request per 100 s
SOLO_KEY = "sk-solo-0123456789abcdef"  # one query at a time
THRIFTY_KEY = "sk-thrifty-0123456789ab"  # 10 generated tokens per minute
ELSEWHERE_KEY = "sk-elsewhere-0123456789"  # for another service only
ROTATED_KEY = "sk-rotated-0123456789abc"
RELOAD_SECONDS = 0.2
SETTLE_SECONDS = 60.0


def keys_document(*extra: str) -> str:
    return "\n".join(
        [
            "keys:",
            f"  - {{key: {OPEN_KEY}, tenant: open}}",
            f"  - {{key: {SLOW_KEY}, tenant: slow, limits: {{requestsPerSecond: 0.01}}}}",
            f"  - {{key: {SOLO_KEY}, tenant: solo, limits: {{concurrentQueries: 1}}}}",
            f"  - {{key: {THRIFTY_KEY}, tenant: thrifty, limits: {{tokensPerMinute: 10}}}}",
            f"  - {{key: {ELSEWHERE_KEY}, tenant: elsewhere, services: [poetry]}}",
            *extra,
        ]
    )


def write_atomically(path: Path, text: str) -> None:
    """As the kubelet updates a Secret volume: the new file replaces the old in one step."""
    scratch = path.with_suffix(".new")
    scratch.write_text(text)
    os.replace(scratch, path)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "keys.yaml"
    write_atomically(path, keys_document())
    return path


@pytest_asyncio.fixture(scope="module")
async def plane(
    nats: NatsServer, vllm: VllmServer, stack_log_dir: Path, keys_file: Path
) -> AsyncIterator[Dataplane]:
    async with local_dataplane(
        name=SERVICE,
        nats_url=nats.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=1,
        log_dir=stack_log_dir,
        config_overrides={
            "auth": {
                "mode": "api-keys",
                "keys_file": str(keys_file),
                "reload_seconds": RELOAD_SECONDS,
            }
        },
    ) as started:
        yield started


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def query(tokens: int = 8) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": "Q:12+34 A:",
        "max_tokens": tokens,
        "ignore_eos": True,
        "ponder": {"strategy": "single"},
    }


async def ask(
    http: aiohttp.ClientSession, plane: Dataplane, key: str | None, body: dict[str, Any]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with http.post(
        f"{plane.base_url}/v1/completions", json=body, headers=headers
    ) as response:
        return response.status, await response.json(), dict(response.headers)


async def queued(plane: Dataplane) -> int:
    nc = await nats.connect(plane.nats_url)
    try:
        return (await nc.jetstream().stream_info(plane.subjects.stream)).state.messages
    finally:
        await nc.close()


async def test_no_key_a_wrong_key_and_a_key_for_another_service_are_refused(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    before = await queued(plane)
    for key, status, code in [
        (None, 401, "invalid_api_key"),
        ("sk-nobody-0123456789abcdef", 401, "invalid_api_key"),
        (ELSEWHERE_KEY, 403, "permission_denied"),
    ]:
        got, body, headers = await ask(http, plane, key, query())
        assert (got, body["error"]["code"]) == (status, code), body
        if status == 401:
            assert headers.get("WWW-Authenticate") == "Bearer"
    # /v1/models needs a key too; health does not.
    async with http.get(f"{plane.base_url}/v1/models") as response:
        assert response.status == 401
    async with http.get(f"{plane.base_url}/healthz") as response:
        assert response.status == 200
    assert await queued(plane) == before
    refused = await metric(http, plane.base_url, "ponder_requests_refused_total")
    assert refused >= 4


async def test_a_valid_key_is_answered(plane: Dataplane, http: aiohttp.ClientSession) -> None:
    status, body, _ = await ask(http, plane, OPEN_KEY, query())
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == 8


async def test_over_its_rate_a_key_gets_a_429_with_retry_after(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await ask(http, plane, SLOW_KEY, query())
    assert status == 200, body
    status, body, headers = await ask(http, plane, SLOW_KEY, query())
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded"), body
    assert "requestsPerSecond" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 100


async def test_a_second_query_of_a_one_at_a_time_key_waits_its_turn(
    plane: Dataplane, http: aiohttp.ClientSession, vllm: VllmServer
) -> None:
    with paused(vllm):  # the first query holds its slot until vLLM runs again
        first = asyncio.create_task(ask(http, plane, SOLO_KEY, query()))
        deadline = time.monotonic() + SETTLE_SECONDS
        while await metric(http, plane.base_url, "ponder_queue_depth_branches") < 1:
            assert time.monotonic() < deadline, "the first query never started"
            await asyncio.sleep(0.05)
        status, body, headers = await ask(http, plane, SOLO_KEY, query())
        assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded"), body
        assert "concurrentQueries" in body["error"]["message"]
        assert headers["Retry-After"] == "1"
    status, body, _ = await first
    assert status == 200, body
    # Its slot is free again.
    status, body, _ = await ask(http, plane, SOLO_KEY, query())
    assert status == 200, body


async def test_tokens_per_minute_is_charged_what_the_queries_generated(
    plane: Dataplane, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await ask(http, plane, THRIFTY_KEY, query(tokens=12))
    assert status == 200, body  # under its budget when it came: admitted
    spent = body["usage"]["completion_tokens"]
    assert spent == 12
    status, body, headers = await ask(http, plane, THRIFTY_KEY, query())
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded"), body
    assert f"{spent} tokens in the last minute" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    tokens = await metric(
        http, plane.base_url, "ponder_tenant_generated_tokens_total", 'tenant="thrifty"'
    )
    assert tokens == spent


async def test_keys_rotate_by_editing_the_file(
    plane: Dataplane, http: aiohttp.ClientSession, keys_file: Path
) -> None:
    status, _, _ = await ask(http, plane, ROTATED_KEY, query())
    assert status == 401
    write_atomically(keys_file, keys_document(f"  - {{key: {ROTATED_KEY}, tenant: rotated}}"))
    deadline = time.monotonic() + SETTLE_SECONDS
    while (await ask(http, plane, ROTATED_KEY, query()))[0] != 200:
        assert time.monotonic() < deadline, "the new key was never loaded"
        await asyncio.sleep(RELOAD_SECONDS)
    # A broken edit leaves the keys in force.
    write_atomically(keys_file, "keys: [")
    await asyncio.sleep(5 * RELOAD_SECONDS)
    status, body, _ = await ask(http, plane, ROTATED_KEY, query())
    assert status == 200, body
    write_atomically(keys_file, keys_document())
