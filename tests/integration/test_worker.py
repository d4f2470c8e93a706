"""Real worker processes (`python -m ponder.workers`) against a real nats-server and real vLLM.

Each test uses a ReasoningService of its own (its own stream), so tests never see each other's
jobs. vLLM serves random weights: assertions are on statuses, token counts and the order of
events. No assertion depends on how fast this machine is: waits are bounded by `SETTLE_SECONDS`,
which only a hang exceeds, and the tests that must act part-way through a generation wait for
vLLM's own token counter and then pause vLLM (SIGSTOP), so that what finishes first never
depends on speed. How quickly a deadline or a cancel takes effect is measured by
`make bench-latency` (bench/stop_latency.py), against its targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bench.clients import vllm_generated_tokens
from ponder.api.jetstream import delete_stream, ensure_stream
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import (
    BranchJob,
    BranchStatus,
    CancelMessage,
    ChatMessage,
    DeadLetter,
    Endpoint,
    SamplingParams,
)
from ponder.local.inbox import ResultsInbox
from ponder.local.nats import NatsServer
from ponder.local.processes import free_port
from ponder.local.vllm import VllmServer
from ponder.local.worker import WorkerProcess, worker_process
from ponder.workers.engine_watch import WEDGED_SECONDS
from tests.integration.vllm_control import paused

PROMPT = "Q:1+2 A:"
PROMPT_TOKENS = 9  # 8 characters + BOS with the arithmetic model's tokenizer
LONG_TOKENS = 240  # with ignore_eos, about 2 s for n=64 on an idle 2-core CPU vLLM
SETTLE_SECONDS = 60.0
"""The longest a test waits for what must happen (a result, an empty queue, an idle vLLM): far
beyond what a busy 2-core machine needs, so only a hang fails it."""
LATE_SLACK_SECONDS = 5.0
"""How long after its deadline an expired job may still answer here: 20 times the 250 ms that
`make bench-latency` measures it against, so that a busy machine's late timers pass. That the
worker stopped at the deadline, not at the end of the generation, the token counts show."""
MID_GENERATION_DEADLINE_SECONDS = 5.0
"""The deadline of the job that vLLM is paused in the middle of: time enough for the worker to
send it to vLLM and read its first tokens on a busy machine."""
_names = itertools.count()


def new_service(**overrides: Any) -> ServiceConfig:
    """A service of its own for one test (a fresh stream)."""
    fields: dict[str, Any] = {
        "name": f"w{next(_names)}-{uuid.uuid4().hex[:6]}",
        "model": "ponder-arith",
        "slots_per_worker": 64,
        "job_ack_wait_seconds": 10.0,
        "job_max_deliver": 3,
    }
    fields.update(overrides)
    fields["strategy"] = {"branches_per_job": 4}
    return ServiceConfig.model_validate(fields)


def subjects_of(service: ServiceConfig) -> ServiceSubjects:
    return ServiceSubjects(service.namespace, service.name)


def new_job(
    service: ServiceConfig,
    reply_subject: str,
    *,
    branches: int = 3,
    max_tokens: int = 8,
    deadline_in: float = 60.0,
    ignore_eos: bool = False,
    logprobs: bool = True,
    model: str | None = None,
) -> BranchJob:
    query_id = f"q-{uuid.uuid4().hex[:8]}"
    return BranchJob(
        query_id=query_id,
        job_id=f"{query_id}.j0",
        branch_ids=[f"{query_id}.b{index}" for index in range(branches)],
        reply_subject=reply_subject,
        model=model or service.model,
        prompt=PROMPT,
        sampling=SamplingParams(
            max_tokens=max_tokens, temperature=1.0, logprobs=logprobs, ignore_eos=ignore_eos
        ),
        deadline_at=time.time() + deadline_in,
    )


def long_job(service: ServiceConfig, reply_subject: str, branches: int = 64) -> BranchJob:
    return new_job(
        service, reply_subject, branches=branches, max_tokens=LONG_TOKENS, ignore_eos=True
    )


@pytest_asyncio.fixture
async def nc(nats: NatsServer) -> AsyncIterator[NatsClient]:
    client = await _connect(nats.url)
    yield client
    await client.close()


async def _connect(url: str) -> NatsClient:
    return await nats.connect(url)


@contextlib.asynccontextmanager
async def stream_of(js: JetStreamContext, service: ServiceConfig) -> AsyncIterator[ServiceSubjects]:
    """The service's stream and consumer, as the operator would create them."""
    subjects = subjects_of(service)
    await ensure_stream(js, subjects, service, max_workers=2)
    try:
        yield subjects
    finally:
        await delete_stream(js, subjects)


async def publish(js: JetStreamContext, subjects: ServiceSubjects, job: BranchJob) -> None:
    await js.publish(
        subjects.jobs, job.model_dump_json().encode(), headers={"Nats-Msg-Id": job.job_id}
    )


async def queued_jobs(js: JetStreamContext, subjects: ServiceSubjects) -> int:
    """Jobs still on the stream (pending or delivered and unacked)."""
    info = await js.stream_info(subjects.stream, subjects_filter=subjects.jobs)
    return (info.state.subjects or {}).get(subjects.jobs, 0)


async def poll_until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until `check()` holds; TimeoutError after `within` seconds."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if await check():
                return time.monotonic() - started
            await asyncio.sleep(0.02)


async def wait_until_queue_empty(js: JetStreamContext, subjects: ServiceSubjects) -> None:
    async def empty() -> bool:
        return await queued_jobs(js, subjects) == 0

    await poll_until(empty, within=SETTLE_SECONDS)
    consumer = await js.consumer_info(subjects.stream, subjects.consumer)
    assert (consumer.num_pending, consumer.num_ack_pending) == (0, 0)


async def dead_letters(js: JetStreamContext, subjects: ServiceSubjects) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    sequence = 1
    while True:
        try:
            stored = await js.get_msg(
                subjects.stream, seq=sequence, subject=subjects.deadletter, next=True
            )
        except NotFoundError:
            return letters
        letters.append(DeadLetter.model_validate_json(stored.data or b""))
        sequence = (stored.seq or sequence) + 1


async def vllm_metric(base_url: str, name: str) -> float:
    """The sum over all series of one metric on vLLM's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def vllm_running(base_url: str) -> float:
    return await vllm_metric(base_url, "vllm:num_requests_running")


async def wait_for_vllm_tokens(base_url: str, more_than: float) -> None:
    """Until vLLM has generated more than `more_than` tokens in all (a counter)."""

    async def generated() -> bool:
        return await vllm_generated_tokens(base_url) > more_than

    await poll_until(generated, within=SETTLE_SECONDS)


async def wait_for_vllm_idle(base_url: str, within: float = SETTLE_SECONDS) -> float:
    """Seconds until vLLM runs nothing."""

    async def idle() -> bool:
        return await vllm_running(base_url) == 0

    return await poll_until(idle, within)


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def worker_metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in worker metrics")


async def wait_for_worker_busy(worker: WorkerProcess) -> None:
    """Until the worker reports slots in use (it is generating)."""

    async def busy() -> bool:
        _, metrics = await http_get(f"{worker.http_url}/metrics")
        return worker_metric(metrics, "ponder_worker_slots_in_use") > 0

    await poll_until(busy, within=SETTLE_SECONDS)


def dead_vllm_url() -> str:
    """A vLLM URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest_asyncio.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    return nc.jetstream()


# --- without vLLM --------------------------------------------------------------------------


async def test_ensure_stream_is_idempotent_and_updates_the_consumer(js: JetStreamContext) -> None:
    service = new_service(job_ack_wait_seconds=5.0)
    subjects = subjects_of(service)
    await ensure_stream(js, subjects, service, max_workers=2)
    await ensure_stream(js, subjects, service, max_workers=2)
    changed = service.model_copy(update={"job_ack_wait_seconds": 7.0, "job_max_deliver": 5})
    await ensure_stream(js, subjects, changed, max_workers=3)
    consumer = await js.consumer_info(subjects.stream, subjects.consumer)
    assert consumer.config.ack_wait == 7.0
    assert consumer.config.max_deliver == 5
    assert consumer.config.max_ack_pending == 3 * service.slots_per_worker
    await delete_stream(js, subjects)
    await delete_stream(js, subjects)  # absent is fine
    with pytest.raises(NotFoundError):
        await js.stream_info(subjects.stream)


async def test_republished_job_within_the_duplicate_window_runs_once(
    js: JetStreamContext, nc: NatsClient
) -> None:
    service = new_service()
    async with stream_of(js, service) as subjects:
        job = new_job(service, "unused")
        await publish(js, subjects, job)
        await publish(js, subjects, job)
        assert await queued_jobs(js, subjects) == 1


async def test_an_engine_failure_on_the_last_delivery_ends_in_failed_branches_and_a_dead_letter(
    nats: NatsServer, nc: NatsClient, js: JetStreamContext, stack_log_dir: Path
) -> None:
    # One delivery: the worker's first health check alone does not mark its engine down (it
    # takes two, and the next is minutes away), so it takes the job; the call finds no engine,
    # the job is handed back, JetStream has no delivery left and says so, and the worker turns
    # that into failed branches and a dead letter. The failed call also had the engine checked
    # at once: confirmed down, the worker takes nothing more.
    service = new_service(job_max_deliver=1, job_ack_wait_seconds=2.0)
    subjects = subjects_of(service)
    async with (
        ResultsInbox(nc, subjects) as inbox,
        worker_process(
            service,
            nats_url=nats.url,
            vllm_url=dead_vllm_url(),
            worker_id="no-engine",
            ensure_stream=True,  # the worker creates the stream for local runs
            log_dir=stack_log_dir,
            extra_args=["--engine-check-seconds", "600"],
        ) as worker,
    ):
        job = new_job(service, inbox.subject, branches=2)
        await publish(js, subjects, job)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
        assert sorted(r.branch_id for r in results) == sorted(job.branch_ids)
        assert all(r.status is BranchStatus.FAILED for r in results)
        assert all("max deliveries reached (1 attempts)" in (r.error or "") for r in results)
        await wait_until_queue_empty(js, subjects)
        (letter,) = await dead_letters(js, subjects)
        assert letter.reason == "max deliveries reached (1 attempts)"
        assert BranchJob.model_validate_json(letter.payload) == job
        _, metrics = await http_get(f"{worker.http_url}/metrics")
        assert worker_metric(metrics, 'ponder_worker_jobs_total{outcome="retried"}') == 1
        assert (
            worker_metric(metrics, 'ponder_worker_deadletters_total{reason="max_deliveries"}') == 1
        )
        assert worker_metric(metrics, "ponder_worker_engine_up") == 0
        await delete_stream(js, subjects)


async def test_healthz_reports_an_unreachable_vllm(
    nats: NatsServer, js: JetStreamContext, stack_log_dir: Path
) -> None:
    service = new_service()
    vllm_url = dead_vllm_url()
    async with (
        stream_of(js, service),
        worker_process(service, nats_url=nats.url, vllm_url=vllm_url, log_dir=stack_log_dir) as w,
    ):
        status, body = await http_get(f"{w.http_url}/healthz")
        assert status == 503
        assert vllm_url in body and "unhealthy" in body


async def test_cancel_that_overtakes_a_queued_job_answers_it_without_generating(
    nats: NatsServer, nc: NatsClient, js: JetStreamContext, stack_log_dir: Path
) -> None:
    service = new_service()
    async with (
        stream_of(js, service) as subjects,
        ResultsInbox(nc, subjects) as inbox,
        worker_process(
            service,
            nats_url=nats.url,
            vllm_url=dead_vllm_url(),
            log_dir=stack_log_dir,
            # One failed check does not mark the engine down; the next is minutes away, so the
            # worker takes the job (the cancel answers it without the engine).
            extra_args=["--engine-check-seconds", "600"],
        ),
    ):
        job = new_job(service, inbox.subject, branches=2)
        cancel = CancelMessage(query_id=job.query_id)
        await nc.publish(subjects.cancel, cancel.model_dump_json().encode())
        await nc.flush()
        # The order, not the pause, decides this on any machine: the server routes the cancel
        # to the worker before it stores (and so delivers) the job published after it on the
        # same connection, and the worker handles its messages in the order they came.
        await asyncio.sleep(0.2)
        await publish(js, subjects, job)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
        assert [r.status for r in results] == [BranchStatus.CANCELLED] * 2
        assert sum(r.completion_tokens for r in results) == 0
        await wait_until_queue_empty(js, subjects)


# --- with vLLM -----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def served(
    nats: NatsServer, vllm: VllmServer, stack_log_dir: Path
) -> AsyncIterator[tuple[ServiceConfig, WorkerProcess]]:
    """One service with one worker on the real vLLM, shared by the quick vLLM tests."""
    service = new_service()
    client = await _connect(nats.url)
    subjects = subjects_of(service)
    await ensure_stream(client.jetstream(), subjects, service, max_workers=2)
    try:
        async with worker_process(
            service, nats_url=nats.url, vllm_url=vllm.base_url, log_dir=stack_log_dir
        ) as worker:
            yield service, worker
    finally:
        await delete_stream(client.jetstream(), subjects)
        await client.close()


@pytest.mark.vllm
async def test_job_yields_a_result_per_branch_with_tokens_and_is_acked(
    served: tuple[ServiceConfig, WorkerProcess], nc: NatsClient, js: JetStreamContext
) -> None:
    service, worker = served
    subjects = subjects_of(service)
    async with ResultsInbox(nc, subjects) as inbox:
        job = new_job(service, inbox.subject, branches=3, max_tokens=8)
        await publish(js, subjects, job)
        results = await inbox.collect(3, within=SETTLE_SECONDS)
    assert sorted(r.branch_id for r in results) == sorted(job.branch_ids)
    by_branch = {r.branch_id: r for r in results}
    assert by_branch[job.branch_ids[0]].prompt_tokens == PROMPT_TOKENS
    assert all(by_branch[b].prompt_tokens == 0 for b in job.branch_ids[1:])
    for result in results:
        assert result.status is BranchStatus.COMPLETED
        assert result.query_id == job.query_id and result.job_id == job.job_id
        assert 1 <= result.completion_tokens <= 8
        assert result.finish_reason in ("stop", "length")
        assert result.mean_logprob is not None and result.mean_logprob < 0
        assert result.worker_id == worker.worker_id
        assert result.generation_seconds > 0
    await wait_until_queue_empty(js, subjects)


@pytest.mark.vllm
async def test_chat_job_ending_with_an_assistant_message_continues_that_message(
    served: tuple[ServiceConfig, WorkerProcess], nc: NatsClient, js: JetStreamContext
) -> None:
    """A strategy's continuation on the chat endpoint (a beam prefix, budget forcing's "Wait"):
    vLLM renders the conversation up to the end of the assistant message and generates on from
    there. The session's chat template (`bench/arith_chat_template.jinja`) closes a finished
    assistant reply with EOS; continuing leaves it out, so the prompt is exactly BOS + question
    + the reply so far, one token per character."""
    service, _ = served
    subjects = subjects_of(service)
    reply_so_far = "1+2="
    async with ResultsInbox(nc, subjects) as inbox:
        job = new_job(service, inbox.subject, branches=2, max_tokens=4).model_copy(
            update={
                "endpoint": Endpoint.CHAT,
                "prompt": None,
                "messages": [
                    ChatMessage(role="user", content=PROMPT),
                    ChatMessage(role="assistant", content=reply_so_far),
                ],
            }
        )
        await publish(js, subjects, job)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
    assert [r.status for r in results] == [BranchStatus.COMPLETED] * 2, results
    assert sum(r.prompt_tokens for r in results) == PROMPT_TOKENS + len(reply_so_far)
    assert all(1 <= r.completion_tokens <= 4 for r in results)
    await wait_until_queue_empty(js, subjects)


@pytest.mark.vllm
async def test_job_past_its_deadline_is_acked_expired_and_vllm_sees_no_request(
    served: tuple[ServiceConfig, WorkerProcess],
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
) -> None:
    service, _ = served
    subjects = subjects_of(service)
    prompt_tokens_before = await vllm_metric(vllm.base_url, "vllm:prompt_tokens_total")
    async with ResultsInbox(nc, subjects) as inbox:
        job = new_job(service, inbox.subject, branches=2, deadline_in=-1.0)
        await publish(js, subjects, job)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
    assert [r.status for r in results] == [BranchStatus.EXPIRED] * 2
    assert sum(r.completion_tokens + r.prompt_tokens for r in results) == 0
    await wait_until_queue_empty(js, subjects)
    assert await vllm_metric(vllm.base_url, "vllm:prompt_tokens_total") == prompt_tokens_before


@pytest.mark.vllm
async def test_malformed_jobs_are_dead_lettered_and_the_worker_keeps_serving(
    served: tuple[ServiceConfig, WorkerProcess], nc: NatsClient, js: JetStreamContext
) -> None:
    service, worker = served
    subjects = subjects_of(service)
    async with ResultsInbox(nc, subjects) as inbox:
        await js.publish(subjects.jobs, b"{not json")
        broken = new_job(service, inbox.subject, branches=2).model_dump(mode="json")
        broken["sampling"]["max_tokens"] = -5
        await js.publish(subjects.jobs, json.dumps(broken).encode())
        failed = await inbox.collect(2, within=SETTLE_SECONDS)
        assert [r.status for r in failed] == [BranchStatus.FAILED] * 2
        assert all("sampling.max_tokens" in (r.error or "") for r in failed)

        job = new_job(service, inbox.subject, branches=2)
        await publish(js, subjects, job)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
        assert [r.status for r in results] == [BranchStatus.COMPLETED] * 2
    await wait_until_queue_empty(js, subjects)
    letters = await dead_letters(js, subjects)
    assert letters[0].payload == "{not json"
    assert all(letter.reason.startswith("malformed job: ") for letter in letters)
    assert "sampling.max_tokens" in letters[1].reason
    assert all(letter.worker_id == worker.worker_id for letter in letters)
    _, metrics = await http_get(f"{worker.http_url}/metrics")
    assert worker_metric(metrics, 'ponder_worker_deadletters_total{reason="malformed"}') == 2
    assert worker.process.poll() is None


@pytest.mark.vllm
async def test_a_job_naming_a_foreign_reply_subject_is_dead_lettered_and_never_answered(
    served: tuple[ServiceConfig, WorkerProcess], nc: NatsClient, js: JetStreamContext
) -> None:
    # A forged job must not make a worker publish where its service's schedulers do not listen:
    # on a JetStream API subject (this one would delete the stream), another service's inbox,
    # or this service's own cancel subject.
    service, worker = served
    subjects = subjects_of(service)
    foreign = [
        f"$JS.API.STREAM.DELETE.{subjects.stream}",
        "ponder.another-team.svc.results.scheduler-1",
        subjects.cancel,
    ]
    published: list[str] = []

    async def seen(msg: Msg) -> None:
        published.append(msg.subject)

    listeners = [await nc.subscribe(subject, cb=seen) for subject in foreign]
    try:
        for subject in foreign:
            await publish(js, subjects, new_job(service, subject, branches=1))
        await wait_until_queue_empty(js, subjects)
        await nc.flush()
    finally:
        for listener in listeners:
            await listener.unsubscribe()
    assert published == []
    await js.stream_info(subjects.stream)  # still there
    letters = [
        letter
        for letter in await dead_letters(js, subjects)
        if letter.reason.startswith("foreign reply subject")
    ]
    assert len(letters) == 3 and all(subjects.prefix in letter.reason for letter in letters)
    _, metrics = await http_get(f"{worker.http_url}/metrics")
    reason = 'ponder_worker_deadletters_total{reason="foreign_reply_subject"}'
    assert worker_metric(metrics, reason) == 3
    assert worker.process.poll() is None


@pytest.mark.vllm
async def test_rejected_job_fails_with_vllms_reason_without_retrying(
    served: tuple[ServiceConfig, WorkerProcess], nc: NatsClient, js: JetStreamContext
) -> None:
    service, _ = served
    subjects = subjects_of(service)
    async with ResultsInbox(nc, subjects) as inbox:
        job = new_job(service, inbox.subject, branches=2, model="no-such-model")
        await publish(js, subjects, job)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
        assert [r.status for r in results] == [BranchStatus.FAILED] * 2
        assert all("no-such-model" in (r.error or "") for r in results)
        assert await inbox.nothing_more(0.5)
    await wait_until_queue_empty(js, subjects)


@pytest.mark.vllm
async def test_cancel_mid_generation_returns_partial_results_and_frees_vllm(
    served: tuple[ServiceConfig, WorkerProcess],
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
) -> None:
    service, worker = served
    subjects = subjects_of(service)
    generated_before = await vllm_generated_tokens(vllm.base_url)
    _, metrics_before = await http_get(f"{worker.http_url}/metrics")
    freed = "ponder_worker_cancel_to_free_seconds"
    async with ResultsInbox(nc, subjects) as inbox:
        job = long_job(service, inbox.subject)
        full_generation = len(job.branch_ids) * LONG_TOKENS
        await publish(js, subjects, job)
        # A tenth of the way in by vLLM's own count, then vLLM paused: the job cannot finish
        # before the cancel however slowly this machine runs the worker. The second lets the
        # worker read what vLLM had already streamed (vLLM can send no more meanwhile), so the
        # cancelled branches carry part of a generation.
        await wait_for_vllm_tokens(vllm.base_url, more_than=generated_before + full_generation / 10)
        with paused(vllm):
            await asyncio.sleep(1.0)
            cancel = CancelMessage(query_id=job.query_id, reason="test")
            cancelled_at = time.monotonic()
            await nc.publish(subjects.cancel, cancel.model_dump_json().encode())
            results = await inbox.collect(len(job.branch_ids), within=SETTLE_SECONDS)
            cancel_to_results = time.monotonic() - cancelled_at
        # vLLM is freed: nothing of the job runs on. How soon it drops the request is
        # `make bench-latency`'s figure: on a busy machine vLLM's API server may notice the
        # closed connection only after its engine has generated the rest.
        await wait_for_vllm_idle(vllm.base_url)
    assert all(r.status is BranchStatus.CANCELLED for r in results)
    tokens = [r.completion_tokens for r in results]
    assert sum(tokens) > 0 and max(tokens) < LONG_TOKENS
    assert sum(len(r.text) for r in results) > 0  # the partial text came back
    assert sum(r.prompt_tokens for r in results) == PROMPT_TOKENS
    # The worker timed it: one engine call freed by a cancel, no later than its results came.
    _, metrics_after = await http_get(f"{worker.http_url}/metrics")
    count = worker_metric(metrics_after, f"{freed}_count") - worker_metric(
        metrics_before, f"{freed}_count"
    )
    seconds = worker_metric(metrics_after, f"{freed}_sum") - worker_metric(
        metrics_before, f"{freed}_sum"
    )
    assert count == 1
    assert 0 <= seconds <= cancel_to_results
    await wait_until_queue_empty(js, subjects)


@pytest.mark.vllm
async def test_a_worker_takes_no_jobs_while_its_engine_is_down_and_runs_them_once_it_is_back(
    served: tuple[ServiceConfig, WorkerProcess],
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
) -> None:
    service, worker = served
    subjects = subjects_of(service)

    async def engine_up() -> float:
        _, metrics = await http_get(f"{worker.http_url}/metrics")
        return worker_metric(metrics, "ponder_worker_engine_up")

    async with ResultsInbox(nc, subjects) as inbox:
        job = new_job(service, inbox.subject, branches=2, max_tokens=8)
        with paused(vllm):  # a wedged engine: its /health does not answer
            # Silent for WEDGED_SECONDS (a busy engine answers late, so only then is it down).
            silent = await poll_until(lambda: _equals(engine_up(), 0), within=2 * SETTLE_SECONDS)
            assert silent >= WEDGED_SECONDS
            status, body = await http_get(f"{worker.http_url}/healthz")
            assert status == 503 and "unhealthy" in body
            await publish(js, subjects, job)
            # Several fetch timeouts pass; a worker taking jobs would have pulled this one.
            await asyncio.sleep(3.0)
            consumer = await js.consumer_info(subjects.stream, subjects.consumer)
            assert (consumer.num_pending, consumer.num_ack_pending) == (1, 0)
        results = await inbox.collect(2, within=SETTLE_SECONDS)
    assert [r.status for r in results] == [BranchStatus.COMPLETED] * 2
    assert await engine_up() == 1
    await wait_until_queue_empty(js, subjects)


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


@pytest.mark.vllm
async def test_deadline_mid_generation_expires_the_job_with_partial_results(
    served: tuple[ServiceConfig, WorkerProcess],
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
) -> None:
    service, _ = served
    subjects = subjects_of(service)
    generated_before = await vllm_generated_tokens(vllm.base_url)
    async with ResultsInbox(nc, subjects) as inbox:
        deadline_at = time.time() + MID_GENERATION_DEADLINE_SECONDS
        job = long_job(service, inbox.subject).model_copy(update={"deadline_at": deadline_at})
        full_generation = len(job.branch_ids) * LONG_TOKENS
        await publish(js, subjects, job)
        # Once a tenth of the job is generated (or at the deadline, on a very slow machine),
        # vLLM is paused until the job's results are in: the deadline falls mid-generation
        # whatever this machine's speed, and the worker, not vLLM, ends the job.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                wait_for_vllm_tokens(
                    vllm.base_url, more_than=generated_before + full_generation / 10
                ),
                timeout=max(0.0, deadline_at - time.time()),
            )
        with paused(vllm):
            results = await inbox.collect(len(job.branch_ids), within=SETTLE_SECONDS)
            late_seconds = time.time() - job.deadline_at
        # vLLM is freed: nothing of the job runs on (how soon: `make bench-latency`).
        await wait_for_vllm_idle(vllm.base_url)
    assert all(r.status is BranchStatus.EXPIRED for r in results)
    # Answered at the deadline: never before it, and the generation was cut short (the token
    # counts), not run to its end.
    assert 0 <= late_seconds < LATE_SLACK_SECONDS, late_seconds
    tokens = [r.completion_tokens for r in results]
    assert sum(tokens) > 0 and max(tokens) < LONG_TOKENS
    await wait_until_queue_empty(js, subjects)


@pytest.mark.vllm
async def test_healthz_and_metrics_answer(
    served: tuple[ServiceConfig, WorkerProcess],
) -> None:
    service, worker = served
    status, body = await http_get(f"{worker.http_url}/healthz")
    assert (status, body) == (200, '{"status": "ok"}')
    status, metrics = await http_get(f"{worker.http_url}/metrics")
    assert status == 200
    assert worker_metric(metrics, "ponder_worker_slots") == service.slots_per_worker
    assert worker_metric(metrics, "ponder_worker_slots_in_use") == 0
    assert worker_metric(metrics, 'ponder_worker_jobs_total{outcome="completed"}') >= 0
    assert "ponder_worker_generation_seconds_bucket" in metrics
    assert 'ponder_worker_tokens_total{kind="completion"}' in metrics
    # vLLM's own metrics ride along: in a pod the engine listens on loopback only.
    assert any(line.startswith("vllm:num_requests_running") for line in metrics.splitlines())


@pytest.mark.vllm
async def test_worker_killed_mid_job_loses_nothing(
    nats: NatsServer,
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
    stack_log_dir: Path,
) -> None:
    service = new_service(job_ack_wait_seconds=2.0)
    async with stream_of(js, service) as subjects, ResultsInbox(nc, subjects) as inbox:
        # The longest job a worker takes, so that the kill lands before it ends however slowly
        # this test's polls run.
        job = long_job(service, inbox.subject)
        generated_before = await vllm_generated_tokens(vllm.base_url)
        async with worker_process(
            service,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            worker_id="doomed",
            log_dir=stack_log_dir,
        ) as doomed:
            await publish(js, subjects, job)
            await wait_for_worker_busy(doomed)
            # Generating, by vLLM's token counter: a slow poll can miss the running gauge.
            await wait_for_vllm_tokens(vllm.base_url, more_than=generated_before)
            os.killpg(doomed.process.pid, signal.SIGKILL)
            doomed.process.wait(5)
        await wait_for_vllm_idle(vllm.base_url)  # its connection died with it
        async with worker_process(
            service,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            worker_id="survivor",
            log_dir=stack_log_dir,
        ) as survivor:
            results = await inbox.collect(len(job.branch_ids), within=SETTLE_SECONDS)
            await wait_until_queue_empty(js, subjects)
            _, metrics = await http_get(f"{survivor.http_url}/metrics")
    assert sorted(r.branch_id for r in results) == sorted(job.branch_ids)
    assert all(r.status is BranchStatus.COMPLETED for r in results)
    assert all(r.worker_id == "survivor" for r in results)
    assert all(r.completion_tokens == LONG_TOKENS for r in results)
    assert worker_metric(metrics, "ponder_branches_redelivered_total") == len(job.branch_ids)


@pytest.mark.vllm
async def test_generation_longer_than_the_ack_wait_is_kept_alive_and_runs_once(
    nats: NatsServer,
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
    stack_log_dir: Path,
) -> None:
    # Once the job's generation has begun, vLLM is paused for two and a half ack waits: the
    # generation outlives the ack wait whatever this machine's speed, and only the worker's
    # heartbeats (a third of the ack wait apart) keep JetStream from handing the job to another.
    ack_wait_seconds = 4.0
    # Room for a second copy of the job: a redelivery would run at once and show.
    service = new_service(slots_per_worker=128, job_ack_wait_seconds=ack_wait_seconds)
    async with (
        stream_of(js, service) as subjects,
        ResultsInbox(nc, subjects) as inbox,
        worker_process(
            service, nats_url=nats.url, vllm_url=vllm.base_url, log_dir=stack_log_dir
        ) as worker,
    ):
        generated_before = await vllm_generated_tokens(vllm.base_url)
        job = long_job(service, inbox.subject)
        started = time.monotonic()
        await publish(js, subjects, job)
        await wait_for_vllm_tokens(vllm.base_url, more_than=generated_before)
        with paused(vllm):
            await asyncio.sleep(2.5 * ack_wait_seconds)
        results = await inbox.collect(len(job.branch_ids), within=SETTLE_SECONDS)
        seconds = time.monotonic() - started
        assert await inbox.nothing_more(1.0)  # no redelivery ran it a second time
        _, metrics = await http_get(f"{worker.http_url}/metrics")
    assert seconds > 2 * ack_wait_seconds
    assert all(r.status is BranchStatus.COMPLETED for r in results)
    assert worker_metric(metrics, "ponder_branches_redelivered_total") == 0


@pytest.mark.vllm
async def test_sigterm_drains_in_flight_work_and_exits_zero(
    nats: NatsServer,
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
    stack_log_dir: Path,
) -> None:
    service = new_service()
    async with (
        stream_of(js, service) as subjects,
        ResultsInbox(nc, subjects) as inbox,
        worker_process(
            service, nats_url=nats.url, vllm_url=vllm.base_url, log_dir=stack_log_dir
        ) as worker,
    ):
        job = long_job(service, inbox.subject)
        await publish(js, subjects, job)
        await wait_for_worker_busy(worker)
        worker.process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(worker.process.wait, SETTLE_SECONDS)
        results = await inbox.collect(len(job.branch_ids), within=SETTLE_SECONDS)
        assert returncode == 0
        assert all(r.status is BranchStatus.COMPLETED for r in results)
        assert all(r.completion_tokens == LONG_TOKENS for r in results)
        await wait_until_queue_empty(js, subjects)


@pytest.mark.vllm
async def test_drain_hands_unfinished_jobs_to_another_worker(
    nats: NatsServer,
    nc: NatsClient,
    js: JetStreamContext,
    vllm: VllmServer,
    stack_log_dir: Path,
) -> None:
    service = new_service()
    async with stream_of(js, service) as subjects, ResultsInbox(nc, subjects) as inbox:
        job = long_job(service, inbox.subject)
        async with worker_process(
            service,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            worker_id="leaving",
            drain_seconds=0.1,
            log_dir=stack_log_dir,
        ) as leaving:
            await publish(js, subjects, job)
            await wait_for_worker_busy(leaving)
            leaving.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(leaving.process.wait, SETTLE_SECONDS) == 0
        assert await inbox.nothing_more(0.1)  # handed back, not answered
        assert await queued_jobs(js, subjects) == 1
        async with worker_process(
            service,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            worker_id="staying",
            log_dir=stack_log_dir,
        ):
            results = await inbox.collect(len(job.branch_ids), within=SETTLE_SECONDS)
            await wait_until_queue_empty(js, subjects)
    assert all(r.status is BranchStatus.COMPLETED and r.worker_id == "staying" for r in results)
