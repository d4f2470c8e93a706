"""A worker's slot-use reports and its drain, on a real worker process, nats-server and vLLM.

The operator chooses the pods a scale-down removes from these reports (docs/architecture.md,
"Scale-down spares work"), and the pod it removes must settle every job inside the grace
period the operator rendered: what it cannot finish in its `--drain-seconds` it hands back.
vLLM is paused (SIGSTOP) through the drain, so nothing finishes however fast this machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchStatus, WorkerStats
from ponder.local.inbox import ResultsInbox
from ponder.local.nats import NatsServer
from ponder.local.vllm import VllmServer
from ponder.local.worker import worker_process
from ponder.operator.render import HAND_BACK_SECONDS
from tests.integration.test_worker import (  # noqa: F401 (js, nc: fixtures, used by name)
    SETTLE_SECONDS,
    js,
    long_job,
    nc,
    new_service,
    poll_until,
    publish,
    queued_jobs,
    stream_of,
    wait_until_queue_empty,
)
from tests.integration.vllm_control import paused

SLOTS = 8
BRANCHES_PER_JOB = 4
"""The service's branchesPerJob (`new_service`): the worker fetches SLOTS // 4 jobs at once."""
JOBS = SLOTS // BRANCHES_PER_JOB
DRAIN_SECONDS = 2.0


@contextlib.asynccontextmanager
async def worker_reports(
    client: NatsClient, subjects: ServiceSubjects
) -> AsyncIterator[list[WorkerStats]]:
    """Every `WorkerStats` published for the service while the block runs, in order."""
    received: list[WorkerStats] = []

    async def on_message(message: Msg) -> None:
        received.append(WorkerStats.model_validate_json(message.data))

    subscription = await client.subscribe(subjects.worker_stats, cb=on_message)
    try:
        yield received
    finally:
        await subscription.unsubscribe()


async def report_where(
    reports: list[WorkerStats], worker_id: str, slots_in_use: int, *, draining: bool
) -> WorkerStats:
    """The first report of `worker_id` with that slot use and drain state."""

    def found() -> WorkerStats | None:
        return next(
            (
                r
                for r in reports
                if r.worker_id == worker_id
                and r.slots_in_use == slots_in_use
                and r.draining is draining
            ),
            None,
        )

    async def seen() -> bool:
        return found() is not None

    await poll_until(seen, within=SETTLE_SECONDS)
    report = found()
    assert report is not None
    return report


@pytest.mark.vllm
async def test_a_draining_worker_reports_its_slots_and_hands_back_every_job_within_its_grace(
    nats: NatsServer,
    nc: NatsClient,  # noqa: F811 (the fixture)
    js: JetStreamContext,  # noqa: F811 (the fixture)
    vllm: VllmServer,
    stack_log_dir: Path,
) -> None:
    service = new_service()
    async with (
        stream_of(js, service) as subjects,
        ResultsInbox(nc, subjects) as inbox,
        worker_reports(nc, subjects) as reports,
    ):
        jobs = [long_job(service, inbox.subject, branches=BRANCHES_PER_JOB) for _ in range(JOBS)]
        async with worker_process(
            service,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            worker_id="leaving",
            slots=SLOTS,
            drain_seconds=DRAIN_SECONDS,
            log_dir=stack_log_dir,
        ) as leaving:
            idle = await report_where(reports, "leaving", 0, draining=False)
            assert (idle.slots, idle.jobs_running) == (SLOTS, 0)
            with paused(vllm):
                for job in jobs:
                    await publish(js, subjects, job)
                busy = await report_where(reports, "leaving", SLOTS, draining=False)
                assert busy.jobs_running == JOBS
                stopped_at = time.monotonic()
                leaving.process.send_signal(signal.SIGTERM)
                draining = await report_where(reports, "leaving", SLOTS, draining=True)
                assert draining.jobs_running == JOBS
                returncode = await asyncio.to_thread(leaving.process.wait, SETTLE_SECONDS)
                seconds = time.monotonic() - stopped_at
        log_path = stack_log_dir / f"worker-leaving-{leaving.port}.log"
        assert returncode == 0
        # The operator renders --drain-seconds as the grace period less HAND_BACK_SECONDS.
        assert seconds <= DRAIN_SECONDS + HAND_BACK_SECONDS, seconds
        assert await inbox.nothing_more(0.1)  # handed back, not answered
        assert await queued_jobs(js, subjects) == JOBS
        async with worker_process(
            service,
            nats_url=nats.url,
            vllm_url=vllm.base_url,
            worker_id="staying",
            slots=SLOTS,
            log_dir=stack_log_dir,
        ):
            results = await inbox.collect(JOBS * BRANCHES_PER_JOB, within=SETTLE_SECONDS)
            await wait_until_queue_empty(js, subjects)
    assert all(r.status is BranchStatus.COMPLETED and r.worker_id == "staying" for r in results)
    log = await asyncio.to_thread(log_path.read_text, errors="replace")
    assert f"draining: {JOBS} jobs running" in log
    assert f"handed {JOBS} unfinished jobs back" in log
