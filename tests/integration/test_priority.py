"""Priority classes on real NATS: Critical jobs are taken before a Sheddable backlog.

One real scheduler process and one real worker loop (in this process) on a real nats-server;
the worker's engine generates every branch in a fixed time, since what is tested is the order
in which jobs leave the queue, not vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import pytest

from ponder.api.jetstream import ensure_stream
from ponder.api.priority import PRIORITY_ORDER
from ponder.api.service_config import ServiceConfig, SloConfig, StrategyDefaults
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob
from ponder.local.nats import NatsServer, nats_server
from ponder.local.processes import free_port
from ponder.local.scheduler import scheduler_process
from ponder.operator.signals import read_backlog
from ponder.workers.app import worker_app
from ponder.workers.config import WorkerSettings
from ponder.workers.engine import EngineHealth
from ponder.workers.generation import Generation

GENERATION_SECONDS = 0.5
"""Every branch's generation time: long enough that queueing, not overhead, sets latency."""
SLOTS = 2
SHEDDABLE_CLIENTS = 8
"""Concurrent Sheddable clients: 6 jobs queued behind the 2 running, 3 rounds of FIFO wait."""
SAMPLES = 7
BASELINE_FLOOR_SECONDS = GENERATION_SECONDS
"""The unloaded latency is never taken as less than one generation (scheduling noise on a
tiny baseline must not make the bound tighter than the issue's 2x of a real query)."""

OBJECTIVE = "x-gateway-inference-objective"


class FixedTimeEngine:
    """Generates every branch in `GENERATION_SECONDS`, with a fixed answer."""

    async def generate(self, job: BranchJob, generation: Generation) -> None:
        await asyncio.sleep(GENERATION_SECONDS)
        generation.prompt_tokens = 4
        for choice in generation.choices:
            choice.text_parts.append(" 42")
            choice.completion_tokens = 10
            choice.finish_reason = "stop"

    async def health(self) -> EngineHealth:
        return EngineHealth()


def service(nats_url: str) -> ServiceConfig:
    return ServiceConfig(
        name="prio",
        model="fixed",
        nats_url=nats_url,
        slots_per_worker=SLOTS,
        strategy=StrategyDefaults(branches_per_job=1),
        # A long deadline: Sheddable queries queue rather than being shed, the pool stays full.
        slo=SloConfig(target_latency_ms=60_000, max_deadline_ms=60_000),
    )


@contextlib.asynccontextmanager
async def worker(config: ServiceConfig, nats_url: str) -> AsyncIterator[None]:
    settings = WorkerSettings(
        service=config,
        nats_url=nats_url,
        vllm_url="http://127.0.0.1:9",  # never called: the engine is the fixed-time one
        worker_id="prio-worker",
        slots=SLOTS,
        http_host="127.0.0.1",
        http_port=free_port(),
    )
    stop = asyncio.Event()
    async with worker_app(settings, FixedTimeEngine()) as started:
        task = asyncio.create_task(started.run(stop))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)


async def ask(session: aiohttp.ClientSession, url: str, priority: str) -> tuple[int, float, dict]:
    body = {"model": "fixed", "prompt": "Q:", "max_tokens": 16, "ponder": {"strategy": "single"}}
    started = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json=body, headers={OBJECTIVE: priority}) as r:
        answer = await r.json()
        return r.status, time.perf_counter() - started, answer


async def critical_latencies(session: aiohttp.ClientSession, url: str) -> list[float]:
    samples = []
    pause = random.Random(7)
    for _ in range(SAMPLES):
        # Arrivals at random moments: a query sent the instant the previous one answered would
        # always arrive just after the slots it freed were refilled.
        await asyncio.sleep(pause.uniform(0, GENERATION_SECONDS))
        status, seconds, answer = await ask(session, url, "critical")
        assert status == 200, answer
        assert answer["ponder"]["plan"]["priority"] == "Critical"
        samples.append(seconds)
    return samples


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with nats_server(tmp_path) as started:
        yield started


async def test_critical_p50_stays_within_twice_unloaded_under_a_sheddable_backlog(
    server: NatsServer, tmp_path: Path
) -> None:
    config = service(server.url)
    async with (
        scheduler_process(config, ensure_stream=True, log_dir=tmp_path) as scheduler,
        worker(config, server.url),
        aiohttp.ClientSession() as session,
    ):
        url = scheduler.base_url
        await ask(session, url, "critical")  # warm up: the scheduler learns the worker
        unloaded = statistics.median(await critical_latencies(session, url))

        stop = asyncio.Event()
        shed: list[int] = []

        async def sheddable_client() -> None:
            while not stop.is_set():
                status, _, _ = await ask(session, url, "Sheddable")
                shed.append(status)
                if status != 200:
                    await asyncio.sleep(0.05)

        async with asyncio.TaskGroup() as clients:
            for _ in range(SHEDDABLE_CLIENTS):
                clients.create_task(sheddable_client())
            await asyncio.sleep(2 * GENERATION_SECONDS)  # the backlog builds up
            loaded = statistics.median(await critical_latencies(session, url))
            stop.set()

    baseline = max(unloaded, BASELINE_FLOOR_SECONDS)
    print(
        f"critical p50 unloaded {unloaded * 1000:.0f} ms, under {SHEDDABLE_CLIENTS} Sheddable "
        f"clients {loaded * 1000:.0f} ms ({loaded / unloaded:.2f}x); Sheddable answers "
        f"{shed.count(200)}, refused {len(shed) - shed.count(200)}"
    )
    assert shed.count(200) >= SHEDDABLE_CLIENTS  # the pool really ran Sheddable work
    # In FIFO order a Critical query would wait 3 rounds behind the backlog (about 4x).
    assert loaded <= 2 * baseline


async def test_the_backlog_counts_every_class(server: NatsServer) -> None:
    config = service(server.url)
    subjects = ServiceSubjects(config.namespace, config.name)
    client = await nats.connect(server.url)
    try:
        js = client.jetstream()
        await ensure_stream(js, subjects, config, max_workers=1)
        for priority in PRIORITY_ORDER:
            for _ in range(priority.rank + 1):
                await js.publish(subjects.jobs_of(priority), b"{}")
        backlog = await read_backlog(js, subjects)
    finally:
        await client.close()
    assert backlog is not None and (backlog.pending_jobs, backlog.ack_pending_jobs) == (6, 0)
