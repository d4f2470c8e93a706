"""A worker's slot use, published for the operator (`WorkerStats` on `worker_stats`).

Before it lowers the worker Deployment's replicas, the operator sets each worker pod's
`controller.kubernetes.io/pod-deletion-cost` from these reports, so that the ReplicaSet deletes
idle workers first and a busy one keeps its branches. NATS rather than a scrape of `/metrics`:
the workers' NetworkPolicy admits only their own namespace to that port, and the operator
already reads the schedulers' stats from NATS. docs/architecture.md, "Scale-down spares work".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient

from ponder.api.wire import WORKER_STATS_INTERVAL_SECONDS, WorkerStats
from ponder.workers.slots import Slots

log = logging.getLogger(__name__)


def worker_stats(
    worker_id: str, slots: Slots, jobs_running: int, *, draining: bool, now: float
) -> WorkerStats:
    """What the worker reports now: its slots, those its running jobs hold, whether it drains."""
    return WorkerStats(
        worker_id=worker_id,
        at=now,
        slots=slots.capacity,
        slots_in_use=max(slots.in_use, 0),
        jobs_running=jobs_running,
        draining=draining,
    )


@dataclass
class SlotReport:
    """Publishes the worker's `WorkerStats` every `interval_seconds` until cancelled, and at once
    when it starts draining."""

    nc: NatsClient
    subject: str
    worker_id: str
    slots: Slots
    jobs_running: Callable[[], int]
    interval_seconds: float = WORKER_STATS_INTERVAL_SECONDS
    clock: Callable[[], float] = time.time

    async def run(self, stop: asyncio.Event) -> None:
        """Report until cancelled (the worker's run owns the task)."""
        while True:
            draining = stop.is_set()
            await self.publish(draining=draining)
            if draining:
                await asyncio.sleep(self.interval_seconds)
            else:  # the first report after the stop goes out at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_seconds)

    async def publish(self, *, draining: bool) -> None:
        """One report; a failure costs only this report (the next comes within an interval)."""
        stats = worker_stats(
            self.worker_id, self.slots, self.jobs_running(), draining=draining, now=self.clock()
        )
        try:
            await self.nc.publish(self.subject, stats.model_dump_json().encode())
        except Exception as error:
            log.warning("publishing slot use failed: %r", error)
