"""Whether the worker pool is cold: no worker is taking jobs (scaled to zero, or starting).

The signal is the workers' durable consumers of the service's stream (one per priority class),
read through the JetStream API as the autoscaler reads its backlog (`$JS.API.CONSUMER.LIST`, one
request for all of them). A worker with a free slot and an engine that answers always keeps a
pull request waiting (`num_waiting`), and every job a worker runs is ack-pending until it is
done; with neither on any consumer, no worker would take a job now. That is the simplest
honest signal the scheduler has: the results it received say nothing of a pool that has been
idle (a warm pool reports no results either), and the worker Deployment's replica count is
neither the scheduler's to read nor true while the pods start. The one false reading is an
idle worker caught between two pull requests (a round trip once every fetch timeout, a second
by default): that query is merely planned as cold, with the hold.

Only a service whose pool may be at zero (`cold_start_hold_ms` > 0) asks, at most once a second
(`reuse_seconds`): a burst of queries shares one answer, and a service at minReplicas 1 or more
never asks. A read that fails or times out counts as warm, which is how every query was planned
before the hold existed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from ponder.api.subjects import ServiceSubjects

log = logging.getLogger(__name__)

REUSE_SECONDS = 1.0
"""How long one reading of the consumers answers for every query."""

READ_TIMEOUT_SECONDS = 0.5
"""Longest a query waits for the consumers' state before it is planned as warm."""


def is_cold(waiting_pulls: int, running_jobs: int) -> bool:
    """Whether no worker would take a job now: none is pulling and none runs one (each summed
    over the stream's consumers)."""
    return waiting_pulls == 0 and running_jobs == 0


class PoolWatch:
    """Reads, and briefly remembers, whether the pool of one service is cold."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: ServiceSubjects,
        *,
        reuse_seconds: float = REUSE_SECONDS,
        timeout_seconds: float = READ_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._reuse_seconds = reuse_seconds
        self._timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._read_at: float | None = None
        self._cold = False

    async def cold(self) -> bool:
        """Whether the pool is cold, as the consumer said within the last `reuse_seconds`."""
        async with self._lock:  # queries arriving together wait for one reading
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._reuse_seconds:
                return self._cold
            self._cold = await self._read()
            self._read_at = self._clock()
            return self._cold

    async def _read(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout_seconds):
                consumers = await self._js.consumers_info(self._subjects.stream)
        except (NatsError, TimeoutError) as error:
            log.warning("could not read the workers' consumers, planning as warm: %r", error)
            return False
        return is_cold(
            sum(each.num_waiting or 0 for each in consumers),
            sum(each.num_ack_pending or 0 for each in consumers),
        )
