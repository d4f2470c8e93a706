"""Streaming that streams, end to end: real NATS, real vLLM on the CPU, real workers and the
scheduler process. Progress events arrive as the query runs, and a single branch's answer
arrives token by token while vLLM is still generating it. What the test proves it proves by the
order of events (vLLM is paused after the first token arrives, and the branch's result has not
been published by then), never by how fast they came."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import openai
import pytest
import pytest_asyncio

from ponder.api.wire import INBOX_MESSAGE, BranchResults
from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer
from ponder.local.vllm import VllmServer
from tests.integration.vllm_control import paused

pytestmark = pytest.mark.vllm

MODEL = "ponder-arith"
PROMPT = "Q:12+34-5 A:"
LONG = 200  # tokens: with ignore_eos the generation runs well past its first partial
SETTLE_SECONDS = 60.0


@pytest_asyncio.fixture(scope="module")
async def plane(
    nats: NatsServer, vllm: VllmServer, stack_log_dir: Path
) -> AsyncIterator[Dataplane]:
    async with local_dataplane(
        name="sched-stream",
        nats_url=nats.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=2,
        log_dir=stack_log_dir,
    ) as started:
        yield started


async def sse_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of an SSE response as they arrive (`[DONE]` ends them)."""
    async for raw in response.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        yield json.loads(payload)


def content_of(chunk: dict[str, Any]) -> str:
    return "".join(
        choice.get("text") or (choice.get("delta") or {}).get("content") or ""
        for choice in chunk.get("choices", [])
    )


def progress_of(chunk: dict[str, Any]) -> str | None:
    ponder = chunk.get("ponder")
    return ponder.get("event") if isinstance(ponder, dict) else None


@pytest.mark.parametrize("path", ["/v1/completions"])
async def test_single_streams_its_answer_while_vllm_is_still_generating_it(
    plane: Dataplane, vllm: VllmServer, path: str
) -> None:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": LONG,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ponder": {"strategy": "single"},
    }
    chunks: list[dict[str, Any]] = []
    text_before_pause = ""
    finished_before_pause = False
    results_before_pause: list[BranchResults] = []
    timeout = aiohttp.ClientTimeout(total=2 * SETTLE_SECONDS)
    # The scheduler's inbox, heard beside it: when the worker published the branch's result.
    nc = await nats.connect(plane.nats_url)
    inbox = await nc.subscribe(plane.subjects.results("scheduler-1"))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(f"{plane.base_url}{path}", json=body) as response,
        ):
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            stream = sse_chunks(response)
            async for chunk in stream:
                chunks.append(chunk)
                if content_of(chunk):
                    break
            # The first token is here: hold vLLM still, so that the generation cannot end
            # while the test looks, and see that its branch has not reported, neither to this
            # client nor on NATS (the flush brings in whatever the server had sent before).
            with paused(vllm):
                text_before_pause = "".join(content_of(c) for c in chunks)
                finished_before_pause = any(progress_of(c) == "branch_finished" for c in chunks)
                await nc.flush()
                while inbox.pending_msgs:
                    message = INBOX_MESSAGE.validate_json((await inbox.next_msg(1.0)).data)
                    if isinstance(message, BranchResults):
                        results_before_pause.append(message)
            async for chunk in stream:
                chunks.append(chunk)
    finally:
        await nc.close()
    query_id = chunks[0]["id"].removeprefix("cmpl-")
    assert not [r for r in results_before_pause if r.query_id == query_id]
    events = [progress_of(c) for c in chunks]
    assert events[0] == "wave_launched", events
    assert not finished_before_pause
    assert events.count("branch_finished") == 1
    first_text = next(i for i, c in enumerate(chunks) if content_of(c))
    assert first_text < events.index("branch_finished"), events
    text = "".join(content_of(c) for c in chunks)
    # The live text is the answer's beginning, and the answer went on after it.
    assert text.startswith(text_before_pause) and len(text) > len(text_before_pause)
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0]["choices"][0]["finish_reason"] == "length"
    ponder = finishing[0]["ponder"]
    assert ponder["strategy"] == "single" and ponder["branches_completed"] == 1
    (branch,) = ponder["branches"]
    assert branch["completion_tokens"] == LONG
    usage = chunks[-1]["usage"]
    assert not chunks[-1]["choices"] and usage["completion_tokens"] == LONG


async def test_a_vote_streams_each_branch_then_its_answer(plane: Dataplane) -> None:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        # Too short for an answer ("#41"): no vote settles early, all four branches finish.
        "max_tokens": 4,
        "stream": True,
        "ponder": {"strategy": "self-consistency", "branches": 4},
    }
    timeout = aiohttp.ClientTimeout(total=2 * SETTLE_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{plane.base_url}/v1/completions", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        chunks = [chunk async for chunk in sse_chunks(response)]
    progress = [c["ponder"] for c in chunks if progress_of(c)]
    assert progress[0]["event"] == "wave_launched" and progress[0]["branches"] == 4
    finished = [p for p in progress if p["event"] == "branch_finished"]
    assert [p["finished"] for p in finished] == [1, 2, 3, 4]
    assert len({p["branch_id"] for p in finished}) == 4
    assert all(p["launched"] == 4 for p in finished)
    # The answer's text comes after the vote, and before the finishing chunk.
    last_finished = max(i for i, c in enumerate(chunks) if progress_of(c) == "branch_finished")
    texts = [i for i, c in enumerate(chunks) if content_of(c)]
    finishing = next(i for i, c in enumerate(chunks) if c["choices"][0]["finish_reason"])
    assert texts and last_finished < min(texts) and max(texts) < finishing
    assert chunks[finishing]["ponder"]["branches_completed"] == 4


@pytest.mark.parametrize("strategy", ["single", "self-consistency"])
async def test_the_openai_client_reads_a_stream_with_progress_chunks(
    plane: Dataplane, strategy: str
) -> None:
    async with openai.AsyncOpenAI(
        base_url=plane.openai_base_url, api_key="unused", max_retries=0
    ) as client:
        stream = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ponder": {"strategy": strategy, "branches": 2}},
        )
        chunks = [chunk async for chunk in stream]
    # A plain client's loop: every chunk's text, whatever it is.
    text = "".join(choice.text for chunk in chunks for choice in chunk.choices)
    assert text
    progress = [
        (chunk.model_extra or {})["ponder"]["event"]
        for chunk in chunks
        if "event" in ((chunk.model_extra or {}).get("ponder") or {})
    ]
    assert progress[0] == "wave_launched" and "branch_finished" in progress
    finished = [c for chunk in chunks for c in chunk.choices if c.finish_reason is not None]
    assert len(finished) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest_asyncio.fixture(scope="module")
async def narrow_plane(
    nats: NatsServer, vllm: VllmServer, stack_log_dir: Path
) -> AsyncIterator[Dataplane]:
    """One worker with two slots, a branch per job, and a long usage settle time: a vote of
    three runs two branches, and the third waits for a slot."""
    async with local_dataplane(
        name="sched-stream-narrow",
        nats_url=nats.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=1,
        config_overrides={
            "slots_per_worker": 2,
            "strategy": {"branches_per_job": 1},
            "slo": {"usage_settle_ms": 10_000},
        },
        log_dir=stack_log_dir,
    ) as started:
        yield started


async def vote_holding_the_worker(
    plane: Dataplane, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Stream `body`; stop the worker (SIGSTOP) once two branch results are on the
    scheduler's inbox, go on (SIGCONT) once the answer's first text arrived. The chunks, and
    the branches that had reported when the answer came."""
    worker = plane.workers[0].process.pid
    nc = await nats.connect(plane.nats_url)
    inbox = await nc.subscribe(plane.subjects.results("scheduler-1"))
    reported: list[str] = []

    async def stop_after_two() -> None:
        async for msg in inbox.messages:
            message = INBOX_MESSAGE.validate_json(msg.data)
            if isinstance(message, BranchResults):
                reported.extend(r.branch_id for r in message.results)
                if len(reported) >= 2:
                    os.kill(worker, signal.SIGSTOP)
                    return

    chunks: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=2 * SETTLE_SECONDS)
    try:
        watch = asyncio.create_task(stop_after_two())
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(f"{plane.base_url}/v1/completions", json=body) as response,
        ):
            assert response.status == 200, await response.text()
            stream = sse_chunks(response)
            async for chunk in stream:
                chunks.append(chunk)
                if content_of(chunk):
                    break
            await asyncio.wait_for(watch, SETTLE_SECONDS)
            await nc.flush()  # brings in whatever the server had sent before the stop
            while inbox.pending_msgs:
                message = INBOX_MESSAGE.validate_json((await inbox.next_msg(1.0)).data)
                if isinstance(message, BranchResults):
                    reported.extend(r.branch_id for r in message.results)
            at_answer = list(reported)
            os.kill(worker, signal.SIGCONT)
            async for chunk in stream:
                chunks.append(chunk)
    finally:
        os.kill(worker, signal.SIGCONT)
        await nc.close()
    return chunks, at_answer


async def test_a_vote_streams_its_answer_before_the_branch_it_cancelled_settles(
    narrow_plane: Dataplane,
) -> None:
    """Self-consistency of three at temperature 0: two equal answers settle the vote. Once two
    results are on the scheduler's inbox the worker is stopped, so the third branch cannot
    report; the answer's text must arrive all the same, and the third branch's settle (its
    branch_finished, its tokens in `usage`) only after the worker goes on. A run where the
    third branch reported before the stop proves nothing and is tried again."""
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ponder": {"strategy": "self-consistency", "branches": 3},
    }
    for _ in range(3):
        chunks, reported_at_answer = await vote_holding_the_worker(narrow_plane, body)
        if len(reported_at_answer) == 2:
            break
    assert len(reported_at_answer) == 2, "the third branch reported before the stop, 3 times"
    events = [progress_of(c) for c in chunks]
    first_text = next(i for i, c in enumerate(chunks) if content_of(c))
    finished = [i for i, event in enumerate(events) if event == "branch_finished"]
    assert len(finished) == 3, events
    assert finished[1] < first_text < finished[2], events  # voted on two, settled the third after
    settled = chunks[finished[2]]["ponder"]
    assert settled["branch_id"] not in reported_at_answer
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishing[0]["ponder"]["stopped_early"] is True
    usage = chunks[-1]["usage"]
    assert not chunks[-1]["choices"]
    spent = sum(b["completion_tokens"] for b in finishing[0]["ponder"]["branches"])
    assert usage["completion_tokens"] == spent  # the settled branch's tokens counted too
