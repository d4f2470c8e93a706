"""The worker's confidence watch (`deep-conf`) against the real vLLM: `VllmEngine` asks for the
logprobs the watch needs, every branch's result carries its confidence, and a branch below its
threshold stops alone at its window.

vLLM serves the arithmetic model with `ignore_eos`, so that each branch that is not stopped
runs to `MAX_TOKENS`: no assertion depends on what the model says or how fast this machine is.
vLLM may put several tokens in one chunk when its API server falls behind its engine, so a
stopped branch holds at least a window of tokens, not exactly one.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench.clients import wait_until_idle
from ponder.api.service_config import TokenConfidence
from ponder.api.wire import (
    BranchJob,
    BranchResult,
    BranchStatus,
    ChatMessage,
    ConfidenceWatch,
    Endpoint,
    SamplingParams,
)
from ponder.local.vllm import VllmServer
from ponder.workers.engine import VllmEngine
from ponder.workers.generation import Generation
from ponder.workers.results import branch_results

pytestmark = pytest.mark.vllm

PROMPT = "Q:23+48-17 A:"
BRANCHES = 4
MAX_TOKENS = 96
WINDOW = 4
SETTLE_SECONDS = 120.0
"""Far beyond what 4 x 96 tokens take on a busy 2-core machine: only a hang exceeds it."""


def watched_job(vllm: VllmServer, watch: ConfidenceWatch, **overrides: Any) -> BranchJob:
    fields: dict[str, Any] = {
        "query_id": "q-confidence",
        "job_id": "q-confidence.j0",
        "branch_ids": [f"q-confidence.b{index}" for index in range(BRANCHES)],
        "reply_subject": "inbox",
        "model": vllm.served_name,
        "prompt": PROMPT,
        "sampling": SamplingParams(
            max_tokens=MAX_TOKENS, temperature=1.0, seed=11, ignore_eos=True
        ),
        "deadline_at": time.time() + SETTLE_SECONDS,
        "confidence": watch,
    }
    fields.update(overrides)
    return BranchJob(**fields)


async def run(vllm: VllmServer, job: BranchJob) -> list[BranchResult]:
    generation = Generation.for_job(job)
    async with VllmEngine(vllm.base_url) as engine:
        await engine.generate(job, generation)
    return branch_results(job, generation, BranchStatus.COMPLETED, worker_id="w").results


async def test_a_watched_job_reports_each_branchs_confidence(vllm: VllmServer) -> None:
    results = await run(vllm, watched_job(vllm, ConfidenceWatch(window_tokens=WINDOW)))
    for result in results:
        assert result.status is BranchStatus.COMPLETED and not result.low_confidence
        assert result.completion_tokens == MAX_TOKENS
        # A sampled group is a geometric-mean probability.
        assert result.confidence is not None and 0.0 < result.confidence <= 1.0
        assert result.mean_logprob is None  # the job did not ask for it


async def test_branches_below_the_threshold_stop_at_their_window_and_free_vllm(
    vllm: VllmServer,
) -> None:
    # No sampled group reaches 1: every branch falls below at its first full window.
    watch = ConfidenceWatch(window_tokens=WINDOW, stop_below=1.0)
    results = await run(vllm, watched_job(vllm, watch))
    for result in results:
        assert result.status is BranchStatus.CANCELLED and result.low_confidence
        assert WINDOW <= result.completion_tokens < MAX_TOKENS, result
        assert result.finish_reason is None and result.text
        assert result.confidence is not None and result.confidence < 1.0
    assert results[0].prompt_tokens > 0  # counted once, on the first branch
    # Each stopped stream was closed: nothing of them runs on in vLLM.
    assert await wait_until_idle(vllm.base_url, SETTLE_SECONDS)


@pytest.mark.parametrize("endpoint", [Endpoint.COMPLETIONS, Endpoint.CHAT])
async def test_top_k_confidence_is_positive_on_both_endpoints(
    vllm: VllmServer, endpoint: Endpoint
) -> None:
    watch = ConfidenceWatch(token=TokenConfidence.TOP_K, top_k=3, window_tokens=WINDOW)
    chat = endpoint is Endpoint.CHAT
    job = watched_job(
        vllm,
        watch,
        endpoint=endpoint,
        prompt=None if chat else PROMPT,
        messages=[ChatMessage(role="user", content=PROMPT)] if chat else None,
    )
    results = await run(vllm, job)
    for result in results:
        assert result.status is BranchStatus.COMPLETED and not result.low_confidence
        assert result.completion_tokens == MAX_TOKENS
        assert result.confidence is not None and result.confidence > 0.0
