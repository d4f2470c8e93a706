"""A load step reaches the autoscaler at once: the scheduler's step rule and the pacing of its
stats updates (pure rule; the pacing on a real event loop, without NATS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from ponder.api.wire import SchedulerStats
from ponder.operator.runtime import NatsPool, OperatorConfig, Runtime
from ponder.operator.signals import StatsBoard
from ponder.scheduler.load import LoadTracker
from ponder.scheduler.stats import is_load_step, stats_updates

LONG_INTERVAL = 600.0
"""A stats interval no test waits for: any update before it is a pushed one."""
WAIT_SECONDS = 30.0
"""The longest a test waits for an update that must come (only a hang takes longer)."""


def stats(outstanding: int = 0, rate: float | None = 0.0, **fields: Any) -> SchedulerStats:
    return SchedulerStats(
        scheduler_id="s1",
        at=0.0,
        queries_in_flight=0,
        branches_outstanding=outstanding,
        expected_branch_tokens=0,
        branches_per_second=rate,
        **fields,
    )


@pytest.mark.parametrize(
    ("previous", "current", "step"),
    [
        # Work arriving at an idle pool is a step, however little.
        (stats(0, 0.0), stats(1, 0.1), True),
        (stats(0, None), stats(1, None), True),
        (stats(0, 0.0), stats(0, 0.0), False),
        # Between two queries of a light load the pool is not idle: the rate remembers them.
        (stats(0, 0.5), stats(7, 0.7), False),
        (stats(0, 0.5), stats(8, 0.7), True),
        # Outstanding branches: 1.5-fold and by at least 8.
        (stats(10, 5.0), stats(14, 5.0), False),
        (stats(10, 5.0), stats(15, 5.0), False),
        (stats(10, 5.0), stats(18, 5.0), True),
        (stats(100, 5.0), stats(149, 5.0), False),
        (stats(100, 5.0), stats(150, 5.0), True),
        (stats(100, 5.0), stats(500, 5.0), True),
        # The arrival rate: 1.5-fold and by at least one branch a second.
        (stats(10, 1.0), stats(10, 1.9), False),
        (stats(10, 2.0), stats(10, 3.0), True),
        (stats(10, 10.0), stats(10, 14.0), False),
        (stats(10, 10.0), stats(10, 15.0), True),
        (stats(10, None), stats(10, 1.0), True),
        # A fall is never a step.
        (stats(500, 50.0), stats(0, 0.0), False),
        (stats(500, 50.0), stats(100, 60.0), False),
    ],
)
def test_a_load_step_is_a_jump_up_of_branches_or_arrivals(
    previous: SchedulerStats, current: SchedulerStats, step: bool
) -> None:
    assert is_load_step(previous, current) is step


@pytest.mark.parametrize(
    ("min_branches", "step"),
    [(8, True), (32, False)],
)
def test_the_least_step_of_branches_is_what_the_caller_says(min_branches: int, step: bool) -> None:
    # The app passes one worker's slots: 20 more branches are not a step for 32-slot workers.
    assert is_load_step(stats(10, 5.0), stats(30, 5.0), min_branches=min_branches) is step


def test_wire_stats_without_the_step_field_read_as_periodic() -> None:
    old = stats(3).model_dump(mode="json")
    del old["step"]
    assert SchedulerStats.model_validate(old).step is False


class Load:
    """What `make_stats` reads: a tracker the test launches branches on."""

    def __init__(self) -> None:
        self.tracker = LoadTracker()
        self.changed = asyncio.Event()
        self.tracker.on_launched = self.changed.set
        self.snapshots = 0

    def make_stats(self) -> SchedulerStats:
        self.snapshots += 1
        return stats(self.tracker.branches_outstanding, 0.0)

    def launch(self, count: int) -> None:
        self.tracker.branches_launched(count, 64, time.monotonic())


async def next_update(updates: Any, within_seconds: float = WAIT_SECONDS) -> SchedulerStats:
    update: SchedulerStats = await asyncio.wait_for(anext(updates), within_seconds)
    return update


async def test_a_load_step_is_pushed_at_once_and_marked() -> None:
    load = Load()
    updates = stats_updates(load.make_stats, LONG_INTERVAL, load.changed, check_gap_seconds=0.05)
    try:
        first = await next_update(updates)
        assert (first.branches_outstanding, first.step) == (0, False)
        stepped_at = time.monotonic()
        load.launch(200)
        pushed = await next_update(updates)
        assert (pushed.branches_outstanding, pushed.step) == (200, True)
        assert time.monotonic() - stepped_at < LONG_INTERVAL / 10
    finally:
        await updates.aclose()


async def test_a_launch_that_is_no_step_waits_for_the_interval() -> None:
    load = Load()
    load.launch(100)
    updates = stats_updates(load.make_stats, LONG_INTERVAL, load.changed, check_gap_seconds=0.05)
    try:
        await next_update(updates)
        load.launch(10)  # 100 -> 110: no step
        with pytest.raises(TimeoutError):
            await next_update(updates, within_seconds=1.0)
    finally:
        await updates.aclose()


async def test_a_storm_of_steps_is_pushed_at_most_once_per_check_gap() -> None:
    load = Load()
    gap = 0.25
    updates = stats_updates(load.make_stats, LONG_INTERVAL, load.changed, check_gap_seconds=gap)
    received: list[SchedulerStats] = []

    async def receive() -> None:
        async for update in updates:
            received.append(update)

    receiving = asyncio.create_task(receive())
    started = time.monotonic()
    launches = 0
    try:
        # Every few milliseconds the load doubles: each check finds a step.
        while time.monotonic() - started < 1.5 or len(received) < 3:
            assert time.monotonic() - started < WAIT_SECONDS, received
            load.launch(max(8, load.tracker.branches_outstanding))
            launches += 1
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        await updates.aclose()
    pushed = received[1:]
    assert all(update.step for update in pushed), received
    assert len(pushed) <= elapsed / gap + 1, (len(pushed), elapsed)
    # One snapshot per check, not one per launch.
    assert load.snapshots <= len(received) + elapsed / gap + 1 < launches


async def test_without_a_wake_only_the_periodic_updates_come_marked_when_they_step() -> None:
    load = Load()
    updates = stats_updates(load.make_stats, 0.05, None)
    try:
        assert not (await next_update(updates)).step
        load.launch(50)
        stepped = await next_update(updates)
        assert (stepped.branches_outstanding, stepped.step) == (50, True)
        assert not (await next_update(updates)).step
    finally:
        await updates.aclose()


def test_the_operator_is_told_of_a_step_only_for_marked_updates() -> None:
    told: list[tuple[str, str]] = []
    board = StatsBoard(on_step=told.append)
    board.record(("ns", "svc"), stats(10))
    board.record(("ns", "svc"), stats(500, step=True))
    assert told == [("ns", "svc")]
    summary = board.summary(("ns", "svc"))
    assert summary is not None and summary.branches_outstanding == 500


# A client that is never called: nothing here talks to an API server or NATS.
UNUSED_API_SERVER = KubeConfig.from_dict(
    {
        "clusters": [{"name": "none", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "none", "user": {}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "current-context": "none",
    }
)


async def never_connects(client: NatsClient) -> Subscription:
    raise AssertionError("no NATS connection in this test")


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    board = StatsBoard()
    kube = AsyncClient(config=UNUSED_API_SERVER)
    try:
        runtime = Runtime(
            config=OperatorConfig(), kube=kube, nats=NatsPool(never_connects), stats=board
        )
        board.on_step = runtime.wake_autoscaler  # as open_runtime wires them
        yield runtime
    finally:
        await kube.close()


async def test_a_pushed_step_wakes_that_services_autoscaler_alone(runtime: Runtime) -> None:
    looked_after, other = runtime.memory(("ns", "svc")), runtime.memory(("ns", "other"))
    runtime.stats.record(("ns", "svc"), stats(10))
    assert not looked_after.load_stepped.is_set()
    runtime.stats.record(("ns", "svc"), stats(500, step=True))
    assert looked_after.load_stepped.is_set()
    assert not other.load_stepped.is_set()
    # A service this process has no memory of gets none from a step.
    runtime.stats.record(("ns", "unknown"), stats(500, step=True))
    assert not runtime.memory(("ns", "unknown")).load_stepped.is_set()
