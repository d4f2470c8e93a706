"""Whether the pool is cold, as the scheduler reads it from the workers' consumer on a real
nats-server: cold while nobody pulls and nothing runs, warm while a worker waits for a job or
runs one, and one reading answers for every query within its reuse time."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest_asyncio
from nats.aio.client import Client as NatsClient

from ponder.api.jetstream import ensure_stream
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob, SamplingParams
from ponder.local.nats import NatsServer
from ponder.scheduler.pool import PoolWatch
from tests.cluster.eventually import eventually

WAIT_SECONDS = 30.0
"""Bounds every wait here; only a hang comes near it."""


@pytest_asyncio.fixture
async def service(nats: NatsServer) -> AsyncIterator[tuple[NatsClient, ServiceSubjects]]:
    """A fresh service's stream and workers' consumer, and a client connected to them."""
    config = ServiceConfig(name=f"pool-{secrets.token_hex(3)}", model="tiny")
    subjects = ServiceSubjects(config.namespace, config.name)
    client = NatsClient()
    await client.connect(nats.url)
    try:
        await ensure_stream(client.jetstream(), subjects, config, max_workers=2)
        yield client, subjects
    finally:
        await client.jetstream().delete_stream(subjects.stream)
        await client.close()


async def reads(watch: PoolWatch, cold: bool) -> None:
    """Wait until `watch` reads `cold` (a pull request reaches the server a moment after it is
    sent)."""
    await eventually(
        watch.cold,
        lambda reading: reading is cold,
        timeout_seconds=WAIT_SECONDS,
        interval_seconds=0.05,
        what=f"the pool read as {'cold' if cold else 'warm'}",
    )


async def test_the_pool_is_cold_until_a_worker_pulls_and_while_none_runs_a_job(
    service: tuple[NatsClient, ServiceSubjects],
) -> None:
    client, subjects = service
    js = client.jetstream()
    watch = PoolWatch(js, subjects, reuse_seconds=0)
    assert await watch.cold()

    # A worker with free slots waits on a pull request: warm.
    worker = await js.pull_subscribe_bind(subjects.consumer, subjects.stream)
    pulling = asyncio.create_task(worker.fetch(1, timeout=WAIT_SECONDS))
    await reads(watch, False)

    # It takes a job and runs it (not yet acknowledged): still warm, with no pull waiting.
    job = BranchJob(
        query_id="q",
        job_id="q-0",
        branch_ids=["q-b0"],
        reply_subject=subjects.results("s"),
        model="tiny",
        prompt="Q:1+1 A:",
        sampling=SamplingParams(max_tokens=4),
        deadline_at=time.time() + 60,
    )
    await js.publish(subjects.jobs, job.model_dump_json().encode())
    (message,) = await pulling
    assert not await watch.cold()

    # Done, and nobody pulls any more: cold again.
    await message.ack_sync()
    assert await watch.cold()


async def test_one_reading_answers_for_every_query_within_its_reuse_time(
    service: tuple[NatsClient, ServiceSubjects],
) -> None:
    client, subjects = service
    js = client.jetstream()
    now = [0.0]
    watch = PoolWatch(js, subjects, reuse_seconds=1.0, clock=lambda: now[0])
    assert await watch.cold()

    worker = await js.pull_subscribe_bind(subjects.consumer, subjects.stream)
    pulling = asyncio.create_task(worker.fetch(1, timeout=WAIT_SECONDS))
    await reads(PoolWatch(js, subjects, reuse_seconds=0), False)
    assert await watch.cold(), "read again within its reuse time"
    now[0] = 1.5
    assert not await watch.cold()
    pulling.cancel()
    await asyncio.gather(pulling, return_exceptions=True)


async def test_an_unreadable_consumer_counts_as_warm(
    service: tuple[NatsClient, ServiceSubjects],
) -> None:
    client, subjects = service
    missing = ServiceSubjects(subjects.namespace, f"{subjects.name}-gone")
    assert not await PoolWatch(client.jetstream(), missing, reuse_seconds=0).cold()
