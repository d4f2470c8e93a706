"""A results inbox: what a scheduler replica would receive, for tests and benchmarks that send
branch jobs straight to the workers and read the results themselves."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchResult, BranchResults


class ResultsInbox:
    """A results subject of the service, under a fresh scheduler id: collects the branch results
    of the `BranchResults` messages (one per job) that workers publish to it.

        async with ResultsInbox(nc, subjects) as inbox:
            job = BranchJob(..., reply_subject=inbox.subject)
            results = await inbox.collect(len(job.branch_ids), within=60)
    """

    def __init__(self, nc: NatsClient, subjects: ServiceSubjects, owner: str = "inbox") -> None:
        self.nc = nc
        scheduler_id = f"{owner}-{uuid.uuid4().hex[:8]}"
        self.subject = subjects.results(scheduler_id)
        self.alive_subject = subjects.alive(scheduler_id)
        self.queue: asyncio.Queue[BranchResult] = asyncio.Queue()

    async def __aenter__(self) -> ResultsInbox:
        async def on_results(msg: Msg) -> None:
            for result in BranchResults.model_validate_json(msg.data).results:
                self.queue.put_nowait(result)

        async def on_alive(msg: Msg) -> None:
            await msg.respond(b"")

        self.subscription = await self.nc.subscribe(self.subject, cb=on_results)
        # Answer the workers' liveness probes as a scheduler does: while the inbox is open,
        # its jobs have a reader (`ponder.workers.liveness`).
        self.alive = await self.nc.subscribe(self.alive_subject, cb=on_alive)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.alive.unsubscribe()
        await self.subscription.unsubscribe()

    async def collect(self, count: int, within: float) -> list[BranchResult]:
        """The next `count` branch results; TimeoutError after `within` seconds."""
        results: list[BranchResult] = []
        async with asyncio.timeout(within):
            while len(results) < count:
                results.append(await self.queue.get())
        return results

    async def nothing_more(self, seconds: float) -> bool:
        """Whether no further result came in the next `seconds`."""
        await asyncio.sleep(seconds)
        return self.queue.empty()
