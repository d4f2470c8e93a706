"""Pulling jobs by priority class: Critical's consumer first, then Standard's, then Sheddable's.

Each class's jobs have their own subject and consumer (`ponder.api.subjects`); JetStream hands
out one consumer's messages in stream order whatever a pull request says, so the order between
classes is the worker's (docs/architecture.md, "Priority classes", says why not NATS 2.12's
prioritized consumers). `fetch` asks each class in turn for what is queued now (a no-wait pull
request), for no more jobs than the worker has room for; when nothing is queued anywhere, it
leaves one lingering request of one job on every class, so the first job of any class starts at
once, and returns when one arrives or the timeout ends. A lingering request may still deliver
after `fetch` returned; every job delivered goes to the `admit` callback as it arrives, so no job
waits in the worker. The overshoot over the worker's free slots is bounded by one job per class.

nats-py 2.16 has no no-wait pull that returns at once (its `fetch` lingers for the timeout when
nothing is queued), so the pull requests are written here, as JetStream's API defines them: a
JSON request on `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` whose reply subject is an inbox
of this worker, answered by the jobs and then a status (404 no messages, 408 expired, 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ponder.api.priority import PRIORITY_ORDER, Priority
from ponder.api.subjects import ServiceSubjects

STATUS_HEADER = "Status"
HEARTBEAT_STATUS = "100"
NO_WAIT_ANSWER_SECONDS = 5.0
"""Longest wait for the server to answer a no-wait pull (it answers within milliseconds; a lost
answer, e.g. on a reconnect, must not stall the worker)."""
LINGER_GRACE_SECONDS = 1.0
"""A lingering request whose expiry status never came is taken as ended this long after it."""


@dataclass
class _Request:
    """The one pull request of a class in flight."""

    wanted: int
    ends_by: float  # monotonic; past it, the request is taken as ended
    delivered: int = 0


class ClassPull:
    """Pull requests on one priority class's consumer, answered on an inbox of their own: at
    most one request in flight, so a status always ends that request."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: ServiceSubjects,
        priority: Priority,
        admit: Callable[[Msg], Awaitable[None]],
        arrived: asyncio.Event,
    ) -> None:
        self.nc = nc
        self.priority = priority
        self.next_subject = (
            f"$JS.API.CONSUMER.MSG.NEXT.{subjects.stream}.{subjects.consumer_of(priority)}"
        )
        self.inbox = nc.new_inbox()
        self._admit = admit
        self._arrived = arrived
        self._request: _Request | None = None
        self._ended = asyncio.Event()
        self._ended.set()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(self.inbox, cb=self._on_message)

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    @property
    def in_flight(self) -> bool:
        """Whether a request of this class may still deliver (a lingering one, usually)."""
        request = self._request
        if request is not None and time.monotonic() > request.ends_by:
            self._end()  # its end never came (a reconnect): a late job is still admitted
        return self._request is not None

    @property
    def ended(self) -> asyncio.Event:
        """Set while no request of this class is in flight."""
        return self._ended

    async def take_queued(self, batch: int) -> int:
        """Ask for up to `batch` jobs queued now; the number delivered once the server said
        there are no more (or `batch` came)."""
        request = await self._send(batch, {"batch": batch, "no_wait": True}, NO_WAIT_ANSWER_SECONDS)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(NO_WAIT_ANSWER_SECONDS):
                await self._ended.wait()
        if self._request is request:
            self._end()  # no answer in time: whatever it still brings is admitted as it comes
        return request.delivered

    async def linger(self, seconds: float) -> None:
        """Leave a request for the next job of this class, expiring after `seconds`."""
        expires_ns = max(1, int(seconds * 1_000_000_000))
        await self._send(1, {"batch": 1, "expires": expires_ns}, seconds + LINGER_GRACE_SECONDS)

    async def _send(self, wanted: int, body: dict[str, object], lasts: float) -> _Request:
        request = self._request = _Request(wanted=wanted, ends_by=time.monotonic() + lasts)
        self._ended.clear()
        await self.nc.publish(self.next_subject, json.dumps(body).encode(), reply=self.inbox)
        return request

    def _end(self) -> None:
        self._request = None
        self._ended.set()

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status == HEARTBEAT_STATUS:
            return
        if status is not None or not msg.reply:
            self._end()  # 404 no messages, 408 expired, 409 (consumer changed, too many)
            return
        request = self._request
        if request is not None:
            request.delivered += 1
            if request.delivered >= request.wanted:
                self._end()
        self._arrived.set()
        await self._admit(msg)


class PriorityPuller:
    """A worker's pull requests on its service's consumers, Critical's first (see the module)."""

    def __init__(
        self,
        nc: NatsClient,
        subjects: ServiceSubjects,
        admit: Callable[[Msg], Awaitable[None]],
    ) -> None:
        self._arrived = asyncio.Event()
        self.classes = [
            ClassPull(nc, subjects, priority, admit, self._arrived) for priority in PRIORITY_ORDER
        ]

    async def start(self) -> None:
        for each in self.classes:
            await each.start()

    async def stop(self) -> None:
        for each in self.classes:
            await each.stop()

    @property
    def lingering(self) -> bool:
        """Whether a request may still deliver a job (the drain waits for them to end)."""
        return any(each.in_flight for each in self.classes)

    async def fetch(self, batch: int, timeout_seconds: float) -> int:
        """Have up to `batch` jobs delivered to `admit`, the most important class first;
        wait up to `timeout_seconds` for one when none is queued. The jobs delivered."""
        delivered = 0
        for each in self.classes:
            if delivered >= batch:
                return delivered
            if each.in_flight:
                continue  # its lingering request takes its next job, and admits it
            delivered += await each.take_queued(batch - delivered)
        if delivered:
            return delivered
        self._arrived.clear()
        for each in self.classes:
            if not each.in_flight:
                await each.linger(timeout_seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await self._arrived.wait()
        return 1 if self._arrived.is_set() else 0

    async def wait_lingering(self, seconds: float) -> None:
        """Wait, up to `seconds`, until no request may deliver any more."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                for each in self.classes:
                    if each.in_flight:
                        await each.ended.wait()
