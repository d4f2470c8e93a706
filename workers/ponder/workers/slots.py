"""A worker's slots: how many branches (vLLM sequences) it runs at once, and how many jobs it
may fetch right now.

Slots are counted in branches; JetStream hands out jobs of k branches each, and k is known only
once a job is fetched. So a worker fetches `free // expected_k` jobs, where expected_k is the
service's `branches_per_job` (what the planner uses unless it shrinks a query): it never asks for
more jobs than it expects to have room for. A job larger than expected still runs when it comes;
the overshoot is bounded by that one job, and fetching waits until it is done. When nothing runs
a worker takes one job whatever its size, so a job wider than the whole worker is never stuck.
"""

from __future__ import annotations

import asyncio


def fetch_batch(capacity: int, in_use: int, expected_branches_per_job: int) -> int:
    """How many jobs to fetch now (0: wait for a slot to free)."""
    free = capacity - in_use
    if in_use == 0:
        return max(1, free // expected_branches_per_job)
    if free < expected_branches_per_job:
        return 0
    return free // expected_branches_per_job


class Slots:
    """The slots in use by this worker's running jobs (single event loop, no locking needed)."""

    def __init__(self, capacity: int, expected_branches_per_job: int) -> None:
        if capacity < 1 or expected_branches_per_job < 1:
            raise ValueError("slot capacity and expected branches per job must be at least 1")
        self.capacity = capacity
        self.expected_branches_per_job = expected_branches_per_job
        self.in_use = 0
        self._freed = asyncio.Event()

    def fetch_batch(self) -> int:
        return fetch_batch(self.capacity, self.in_use, self.expected_branches_per_job)

    def acquire(self, branches: int) -> None:
        self.in_use += branches

    def release(self, branches: int) -> None:
        self.in_use -= branches
        self._freed.set()

    async def wait_for_batch(self, stop: asyncio.Event) -> int:
        """Wait until a batch can be fetched; 0 once `stop` is set."""
        while not stop.is_set():
            batch = self.fetch_batch()
            if batch:
                return batch
            self._freed.clear()
            freed = asyncio.ensure_future(self._freed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({freed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                freed.cancel()
                stopped.cancel()
        return 0
