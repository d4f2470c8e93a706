"""The operator's process state: configuration, clients and memory, opened once at start-up.

No module-level singletons: `open_runtime()` builds one `Runtime` that kopf's `memo` carries to
every handler, and closes its connections on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import nats
from lightkube import AsyncClient
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from ponder.operator.policy import AutoscalerState
from ponder.operator.signals import ServiceKey, StatsBoard, stats_subscriber
from ponder.operator.status import UnschedulablePod

logger = logging.getLogger(__name__)

FIELD_MANAGER = "ponder-operator"
MAX_CONCURRENT_RECONCILES = 16
"""Below the API client's 20 kept-alive connections: more at once would only open (and TLS
handshake) connections that are closed again, and queue on the API server anyway."""
NATS_CONNECT_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class OperatorConfig:
    """What `python -m ponder.operator` was started with."""

    nats_url: str = "nats://127.0.0.1:4222"
    """NATS server of every service whose spec.nats.url is absent."""
    autoscale_interval_seconds: float = 15.0
    """Period of the timer that reads the signals, scales and refreshes status."""
    resync_seconds: float = 300.0
    """Children unchanged since their last apply are re-applied at least this often anyway,
    undoing manual edits, without a server-side apply of every child at every tick."""


@dataclass
class NatsPool:
    """One NATS connection (and JetStream context) per URL, opened on first use."""

    on_connect: Callable[[NatsClient], Awaitable[Subscription]]
    _clients: dict[str, NatsClient] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def jetstream(self, url: str) -> JetStreamContext:
        """JetStream of the server at `url`; raises when it cannot be reached."""
        async with self._lock:
            client = self._clients.get(url)
            if client is None or client.is_closed:
                client = await nats.connect(
                    url,
                    name="ponder-operator",
                    connect_timeout=NATS_CONNECT_TIMEOUT_SECONDS,
                    max_reconnect_attempts=-1,
                )
                await self.on_connect(client)
                self._clients[url] = client
                logger.info("Connected to NATS at %s", url)
            return client.jetstream(timeout=5)

    async def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.drain()
        self._clients.clear()


@dataclass
class AppliedChild:
    """What the last successful apply of one child sent and got back."""

    digest: str
    resource_version: str
    applied_at: float


@dataclass
class Runtime:
    """Everything handlers share; one per operator process."""

    config: OperatorConfig
    kube: AsyncClient
    nats: NatsPool
    stats: StatsBoard
    autoscalers: dict[ServiceKey, AutoscalerState] = field(default_factory=dict)
    desired_workers: dict[ServiceKey, int] = field(default_factory=dict)
    applied: dict[tuple[ServiceKey, str, str], AppliedChild] = field(default_factory=dict)
    streams: dict[ServiceKey, tuple[str, float]] = field(default_factory=dict)
    unschedulable: dict[ServiceKey, tuple[UnschedulablePod, ...]] = field(default_factory=dict)
    """Worker pods found Pending at the last timer tick (pods are listed only then)."""
    refresh_queued: set[ServiceKey] = field(default_factory=set)
    reconcile_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
    )
    _locks: dict[ServiceKey, asyncio.Lock] = field(default_factory=dict)

    def lock(self, service: ServiceKey) -> asyncio.Lock:
        """Serialises the reconciles of one service: kopf runs the timer beside the change
        handlers, and two concurrent reconciles would race on the autoscaler's memory."""
        return self._locks.setdefault(service, asyncio.Lock())

    def forget(self, service: ServiceKey) -> None:
        """Drop the memory of a deleted service."""
        self.autoscalers.pop(service, None)
        self.desired_workers.pop(service, None)
        self.streams.pop(service, None)
        self.stats.forget(service)
        self._locks.pop(service, None)
        self.unschedulable.pop(service, None)
        self.refresh_queued.discard(service)
        for key in [key for key in self.applied if key[0] == service]:
            del self.applied[key]


@contextlib.asynccontextmanager
async def open_runtime(config: OperatorConfig) -> AsyncIterator[Runtime]:
    """The runtime for one operator process; clients are closed on exit."""
    board = StatsBoard()
    pool = NatsPool(on_connect=stats_subscriber(board))
    kube = AsyncClient(field_manager=FIELD_MANAGER)
    try:
        yield Runtime(config=config, kube=kube, nats=pool, stats=board)
    finally:
        await pool.close()
        await kube.close()
