"""The operator's per-service memory: one object per service, gone with the service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lightkube import AsyncClient, KubeConfig

from ponder.api.wire import SchedulerStats
from ponder.operator.policy import AutoscalerState, Recommendation
from ponder.operator.runtime import (
    AppliedChild,
    AppliedStream,
    NatsPool,
    OperatorConfig,
    Runtime,
    ServiceMemory,
)
from ponder.operator.signals import StatsBoard, stats_subscriber
from ponder.operator.status import UnschedulablePod

SERVICE = ("team-a", "math")
OTHER = ("team-b", "math")
# A client that is never called: nothing in these tests talks to an API server.
UNUSED_API_SERVER = KubeConfig.from_dict(
    {
        "clusters": [{"name": "none", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "none", "user": {}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "current-context": "none",
    }
)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    board = StatsBoard()
    kube = AsyncClient(config=UNUSED_API_SERVER)
    try:
        yield Runtime(
            config=OperatorConfig(),
            kube=kube,
            nats=NatsPool(on_connect=stats_subscriber(board)),
            stats=board,
        )
    finally:
        await kube.close()


def remember_everything(memory: ServiceMemory) -> None:
    memory.autoscaler = AutoscalerState(history=(Recommendation(1.0, 3),))
    memory.desired_workers = 3
    memory.applied["Deployment", "math-workers"] = AppliedChild("digest", "42", 1.0)
    memory.stream = AppliedStream("digest", 1.0)
    memory.unschedulable_workers = (UnschedulablePod("math-workers-x", "Insufficient"),)
    memory.refresh_queued = True


def stats(scheduler_id: str) -> SchedulerStats:
    return SchedulerStats(
        scheduler_id=scheduler_id,
        at=0.0,
        queries_in_flight=1,
        branches_outstanding=4,
        expected_branch_tokens=1024,
    )


async def test_each_service_has_one_memory_that_a_fresh_service_finds_empty(
    runtime: Runtime,
) -> None:
    memory = runtime.memory(SERVICE)
    assert runtime.memory(SERVICE) is memory
    assert memory == ServiceMemory(lock=memory.lock)
    remember_everything(memory)
    assert runtime.memory(OTHER).desired_workers is None
    assert runtime.memory(OTHER).lock is not memory.lock


async def test_forgetting_a_deleted_service_drops_its_memory_and_stats_only(
    runtime: Runtime,
) -> None:
    remember_everything(runtime.memory(SERVICE))
    remember_everything(runtime.memory(OTHER))
    runtime.stats.record(SERVICE, stats("a"))
    runtime.stats.record(OTHER, stats("b"))

    runtime.forget(SERVICE)

    fresh = runtime.memory(SERVICE)
    assert fresh == ServiceMemory(lock=fresh.lock)
    assert runtime.stats.summary(SERVICE) is None
    assert runtime.memory(OTHER).desired_workers == 3
    summary = runtime.stats.summary(OTHER)
    assert summary is not None and summary.schedulers == 1
