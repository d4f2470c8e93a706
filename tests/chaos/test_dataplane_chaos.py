"""The data plane under faults, each injected under a bounded load (`tests.chaos.load`): real
NATS, real vLLM on the CPU with the shipped model, two worker processes, one scheduler.

Every scenario prints (see it with `-s`) and asserts how many queries were answered, failed
with a clear error, lost and duplicated, and the seconds until the service was whole again
(`load.recovery_seconds`). Lost and duplicated must be 0 exactly; every bound on time is one
that only a hang exceeds on a busy 2-core machine (how fast a fault heals is printed, not
asserted tightly).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.scheduler import scheduler_process
from ponder.local.vllm import VllmServer
from tests.chaos.faults import RestartableNats, sigkill
from tests.chaos.load import (
    Load,
    LoadSpec,
    Outcome,
    QueryRecord,
    Tally,
    Target,
    recovery_seconds,
    tally,
)
from tests.cluster.eventually import eventually
from tests.integration.vllm_control import paused
from tests.scrape import metric

pytestmark = [pytest.mark.chaos, pytest.mark.vllm]

SPEC = LoadSpec(queries=48, in_flight=4, seed=10, branches=4)
"""Self-consistency@4 of short arithmetic problems, 4 queries in flight, 48 in all."""
SETTLE_SECONDS = 60.0
"""The longest a scenario waits for what must happen (a part holding a job, a job dropped)."""
RECOVERY_BOUND_SECONDS = 60.0
"""Recovery must come within this: the ack wait (10 s) plus a restart, with room for a busy
machine; the measured figure is printed."""


@contextlib.asynccontextmanager
async def chaos_plane(
    name: str, nats: RestartableNats, vllm: VllmServer, log_dir: Path
) -> AsyncIterator[Dataplane]:
    """A scheduler and two workers of service `name` on the chaos NATS, with the defaults of
    a ReasoningService but 8 slots per worker, so that the load's jobs spread over both."""
    async with local_dataplane(
        name=name,
        nats_url=nats.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=2,
        log_dir=log_dir,
        config_overrides={"slots_per_worker": 8},
    ) as plane:
        assert plane.config.job_ack_wait_seconds * 1000 < SPEC.deadline_ms  # redelivered in time
        yield plane


async def under_load(load: Load, faults: Coroutine[Any, Any, None]) -> list[QueryRecord]:
    """Run the load and the `faults` beside it; the records once both are done."""
    async with asyncio.TaskGroup() as group:
        records = group.create_task(load.run())
        group.create_task(faults)
    return records.result()


async def worker_jobs(http: aiohttp.ClientSession, plane: Dataplane, outcome: str) -> float:
    """Jobs of the plane's running workers that ended with `outcome`."""
    counts = [
        await metric(http, w.http_url, "ponder_worker_jobs_total", f'outcome="{outcome}"')
        for w in plane.workers
    ]
    return sum(counts)


async def holds_a_job(http: aiohttp.ClientSession, plane: Dataplane, index: int) -> None:
    """Return once worker `index` is generating (so that a kill now costs something)."""
    url = plane.workers[index].http_url
    await eventually(
        lambda: metric(http, url, "ponder_worker_slots_in_use"),
        lambda slots: slots > 0,
        timeout_seconds=SETTLE_SECONDS,
        interval_seconds=0.02,
        what=f"worker {index} holding a job",
    )


def report(scenario: str, counts: Tally, recoveries: Sequence[float | None], extra: str) -> None:
    """Print the scenario's figures in one block."""
    shown = ", ".join("never" if r is None else f"{r:.1f} s" for r in recoveries)
    print(
        f"\nchaos {scenario}: {SPEC.queries} queries, {SPEC.in_flight} in flight: {counts.line()}"
    )
    print(f"chaos {scenario}: recovered in {shown}; {extra}")


def assert_nothing_lost_or_duplicated(
    counts: Tally, records: Sequence[QueryRecord], failures_allowed: set[str]
) -> None:
    """Lost, duplicated and unclear are 0 exactly; failures carry only the allowed codes."""
    strays = [
        r for r in records if r.outcome in (Outcome.LOST, Outcome.DUPLICATED, Outcome.UNCLEAR)
    ]
    assert (counts.lost, counts.duplicated, counts.unclear) == (0, 0, 0), strays
    assert counts.answered + counts.failed == SPEC.queries, counts
    assert set(counts.failed_codes) <= failures_allowed, counts


def assert_recovered(recoveries: Sequence[float | None]) -> None:
    """Every fault healed within the generous bound."""
    assert all(r is not None and r < RECOVERY_BOUND_SECONDS for r in recoveries), recoveries


async def test_each_worker_sigkilled_in_turn_loses_and_duplicates_nothing(
    vllm: VllmServer,
    chaos_nats: RestartableNats,
    stack_log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    async with chaos_plane("chaos-workers", chaos_nats, vllm, stack_log_dir) as plane:
        load = Load(SPEC, Target(plane.base_url), http)
        kills: list[float] = []
        redelivered = 0.0

        async def kill_each_worker() -> None:
            nonlocal redelivered
            async with asyncio.TaskGroup() as restarts:
                for index in range(len(plane.workers)):
                    await load.sent(12 + 16 * index)
                    await holds_a_job(http, plane, index)
                    # Its redelivery counter dies with it: read it first.
                    redelivered += await metric(
                        http, plane.workers[index].http_url, "ponder_branches_redelivered_total"
                    )
                    kills.append(time.monotonic())
                    plane.kill_worker(index)
                    # Kubernetes restarts the container on its own time: the next kill does not
                    # wait for it (on a fast machine the load would be over by then, and no
                    # query sent after the kill would show the recovery).
                    restarts.create_task(plane.restart_worker(index))

        records = await under_load(load, kill_each_worker())
        for worker in plane.workers:
            redelivered += await metric(http, worker.http_url, "ponder_branches_redelivered_total")
    counts = tally(records)
    recoveries = [recovery_seconds(records, killed_at) for killed_at in kills]
    report("worker SIGKILL x2", counts, recoveries, f"{redelivered:g} branches redelivered")
    # The killed workers' jobs came back after the ack wait and were answered in time: nothing
    # failed at all.
    assert_nothing_lost_or_duplicated(counts, records, failures_allowed=set())
    assert len(kills) == 2
    assert_recovered(recoveries)


async def test_nats_sigkilled_and_restarted_on_its_store_loses_and_duplicates_nothing(
    vllm: VllmServer,
    chaos_nats: RestartableNats,
    stack_log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    async with chaos_plane("chaos-nats", chaos_nats, vllm, stack_log_dir) as plane:
        load = Load(SPEC, Target(plane.base_url), http)
        killed_at = restarted_at = 0.0

        async def kill_and_restart_nats() -> None:
            nonlocal killed_at, restarted_at
            await load.sent(16)
            await holds_a_job(http, plane, 0)
            killed_at = time.monotonic()
            chaos_nats.kill()
            # Down long enough for every client to see the connection go and reconnect in vain.
            await asyncio.sleep(1.0)
            await chaos_nats.restart()
            restarted_at = time.monotonic()

        records = await under_load(load, kill_and_restart_nats())
    counts = tally(records)
    recovery = recovery_seconds(records, killed_at)
    answered_after = [
        r.ended_at - restarted_at
        for r in records
        if r.sent_at >= restarted_at and r.outcome is Outcome.ANSWERED
    ]
    again = f"{min(answered_after):.1f} s" if answered_after else "never"
    report(
        "NATS SIGKILL + restart",
        counts,
        [recovery],
        f"down {restarted_at - killed_at:.1f} s; a query sent after the restart answered in "
        f"{again}",
    )
    # Jobs on the stream survive on its store; a query may fail while NATS is away, but only
    # with the documented 503 (not queued) or 504 (its results were lost and it ran out of time).
    assert_nothing_lost_or_duplicated(
        counts, records, failures_allowed={"queue_unavailable", "deadline_exceeded"}
    )
    assert_recovered([recovery])


async def test_scheduler_sigkilled_fails_its_clients_clearly_and_workers_drop_its_jobs(
    vllm: VllmServer,
    chaos_nats: RestartableNats,
    stack_log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    async with (
        chaos_plane("chaos-scheduler", chaos_nats, vllm, stack_log_dir) as plane,
        contextlib.AsyncExitStack() as replacement,
    ):
        target = Target(plane.base_url)
        load = Load(SPEC, target, http)
        killed_at = 0.0
        orphaned_before = await worker_jobs(http, plane, "orphaned")
        orphaned_after = 0.0

        async def kill_and_replace_scheduler() -> None:
            nonlocal killed_at, orphaned_after
            await load.sent(16)
            # vLLM is held still around the kill, so that the dead scheduler's jobs are running
            # when it dies (the load's jobs take well under a second), and the workers must find
            # it gone and drop them rather than finish them.
            with paused(vllm):
                await eventually(
                    lambda: worker_jobs_running(http, plane),
                    lambda running: running > 0,
                    timeout_seconds=SETTLE_SECONDS,
                    interval_seconds=0.02,
                    what="a worker holding a job",
                )
                killed_at = time.monotonic()
                sigkill(plane.scheduler.process)
                target.down()  # its endpoint leaves the Service
                orphaned_after = await eventually(
                    lambda: worker_jobs(http, plane, "orphaned"),
                    lambda orphaned: orphaned > orphaned_before,
                    timeout_seconds=SETTLE_SECONDS,
                    interval_seconds=0.1,
                    what="the workers dropping the dead scheduler's jobs",
                )
            # A replacement pod: a new name, so a new scheduler id.
            fresh = await replacement.enter_async_context(
                scheduler_process(plane.config, scheduler_id="scheduler-2", log_dir=stack_log_dir)
            )
            target.up(fresh.base_url)

        records = await under_load(load, kill_and_replace_scheduler())
        orphaned_after = max(orphaned_after, await worker_jobs(http, plane, "orphaned"))
    counts = tally(records)
    recovery = recovery_seconds(records, killed_at)
    dropped = [r.ended_at - killed_at for r in records if r.code == "disconnected"]
    told = f"{max(dropped):.2f} s" if dropped else "-"
    report(
        "scheduler SIGKILL + replacement",
        counts,
        [recovery],
        f"its clients told within {told}; {orphaned_after - orphaned_before:g} of its jobs "
        "orphaned by the workers",
    )
    # Its clients saw the connection close; every later query went to the replacement.
    assert_nothing_lost_or_duplicated(counts, records, failures_allowed={"disconnected", "refused"})
    assert counts.failed_codes.get("disconnected", 0) >= 1
    assert all(r.ended_at - killed_at < SETTLE_SECONDS for r in records if r.code)
    assert orphaned_after > orphaned_before
    assert_recovered([recovery])


async def worker_jobs_running(http: aiohttp.ClientSession, plane: Dataplane) -> float:
    """Branches the plane's workers are generating now."""
    slots = [await metric(http, w.http_url, "ponder_worker_slots_in_use") for w in plane.workers]
    return sum(slots)
