"""The operator's process state: configuration, clients and memory, opened once at start-up.

No module-level singletons: `open_runtime()` builds one `Runtime` that kopf's `memo` carries to
every handler, and closes its connections on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightkube import AsyncClient
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from ponder.api.nats_tls import client_tls
from ponder.api.nats_urls import nats_servers
from ponder.api.service_config import DEFAULT_NATS_URL
from ponder.operator.metrics import OperatorMetrics
from ponder.operator.nats_credentials import (
    DEFAULT_LIFETIME_HOURS,
    IssuedCredentials,
    load_or_create_trust,
    parse_secret_ref,
)
from ponder.operator.nats_trust import NatsTrust
from ponder.operator.passes import STUCK_PASS_SECONDS, PassesInFlight
from ponder.operator.policy import AutoscalerState
from ponder.operator.signals import StatsBoard, WorkerSlotsBoard, stats_subscriber
from ponder.operator.snapshot import ServiceKey
from ponder.operator.status import UnschedulablePod

logger = logging.getLogger(__name__)

FIELD_MANAGER = "ponder-operator"
MAX_CONCURRENT_RECONCILES = 16
"""Below the API client's 20 kept-alive connections: more at once would only open (and TLS
handshake) connections that are closed again, and queue on the API server anyway."""
NATS_CONNECT_TIMEOUT_SECONDS = 3
NATS_FIRST_CONNECT_SECONDS = 10.0
"""Longest wait for a URL's first connection (the client retries by itself until then)."""
NATS_RETRY_AFTER_SECONDS = 15.0
"""A URL that could not be reached is not tried again sooner: its service's reconciles report
it at once instead of waiting for the connect timeout every time."""


class NatsUnreachable(Exception):
    """The NATS server of a service could not be reached."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"NATS at {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class OperatorConfig:
    """What `python -m ponder.operator` was started with."""

    nats_url: str = DEFAULT_NATS_URL
    """NATS server of every service whose spec.nats.url is absent."""
    stream_replicas: int = 1
    """Copies JetStream keeps of every service's job stream: 3 on a three-node cluster."""
    autoscale_interval_seconds: float = 15.0
    """Period of the timer that reads the signals, scales and refreshes status."""
    resync_seconds: float = 300.0
    """Children unchanged since their last apply are re-applied at least this often anyway,
    undoing manual edits, without a server-side apply of every child at every tick."""
    stuck_pass_seconds: float = STUCK_PASS_SECONDS
    """A reconcile pass in flight this long means the loop is stuck: liveness fails."""
    nats_trust_secret: str | None = None
    """`namespace/name` of the Secret with the NATS trust: NATS requires credentials, and the
    operator issues each service its own (`nats_credentials`). None: NATS requires none."""
    nats_ca: Path | None = None
    """The CA bundle (PEM) NATS servers' certificates are verified with: the operator's own
    connections trust it, and every service's pods get a copy. None: NATS without TLS."""
    nats_creds_lifetime_seconds: int = DEFAULT_LIFETIME_HOURS * 3600
    """How long the NATS users issued to a service stay valid; renewed with a third left."""


@dataclass
class NatsPool:
    """One NATS connection (and JetStream context) per URL, opened on first use.

    One URL never waits on another: each has its own lock, held only while that URL connects,
    and a first connect is bounded in time. A URL that could not be reached raises
    `NatsUnreachable` at once for `retry_after_seconds`, then is tried again. Once connected, the
    client reconnects by itself for as long as it takes.
    """

    on_connect: Callable[[NatsClient], Awaitable[Subscription]]
    user_credentials: Path | None = None
    """The operator's own NATS credentials, when NATS requires them."""
    tls: ssl.SSLContext | None = None
    """Verifies the servers' certificates, when NATS requires TLS (`--nats-ca`)."""
    first_connect_seconds: float = NATS_FIRST_CONNECT_SECONDS
    retry_after_seconds: float = NATS_RETRY_AFTER_SECONDS
    _clients: dict[str, NatsClient] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _unreachable: dict[str, tuple[float, str]] = field(default_factory=dict)
    """URL -> (monotonic time it may be tried again, why it failed)."""

    async def jetstream(self, url: str) -> JetStreamContext:
        """JetStream of the server at `url`; NatsUnreachable when it cannot be reached."""
        client = self._clients.get(url)
        if client is None or client.is_closed:
            async with self._locks.setdefault(url, asyncio.Lock()):
                client = self._clients.get(url)
                if client is None or client.is_closed:
                    client = await self._connect(url)
        return client.jetstream(timeout=5)

    async def _connect(self, url: str) -> NatsClient:
        failed = self._unreachable.get(url)
        if failed is not None and time.monotonic() < failed[0]:
            raise NatsUnreachable(url, failed[1])
        client = NatsClient()
        try:
            async with asyncio.timeout(self.first_connect_seconds):
                await client.connect(
                    nats_servers(url),
                    name="ponder-operator",
                    connect_timeout=NATS_CONNECT_TIMEOUT_SECONDS,
                    max_reconnect_attempts=-1,
                    user_credentials=(
                        str(self.user_credentials) if self.user_credentials else None
                    ),
                    tls=self.tls,
                )
        except Exception as error:  # refused, unknown host, no answer in time
            with contextlib.suppress(Exception):
                async with asyncio.timeout(NATS_CONNECT_TIMEOUT_SECONDS):
                    await client.close()
            reason = str(error) or type(error).__name__
            if isinstance(error, TimeoutError):
                reason = f"no connection within {self.first_connect_seconds:g} s"
            self._unreachable[url] = (time.monotonic() + self.retry_after_seconds, reason)
            logger.warning("NATS at %s is unreachable: %s", url, reason)
            raise NatsUnreachable(url, reason) from error
        self._unreachable.pop(url, None)
        await self.on_connect(client)
        self._clients[url] = client
        logger.info("Connected to NATS at %s", url)
        return client

    async def close(self) -> None:
        """Drain every connection (errors on the way out are of no use to anyone)."""
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
class AppliedStream:
    """What the last successful ensure of the job stream and consumer sent, and when."""

    digest: str
    applied_at: float


@dataclass
class ServiceMemory:
    """What the operator remembers of one service between reconciles.

    Every field is an optimisation or a smoothing that rebuilds itself after a restart: nothing
    here is needed to converge, and a deleted service's memory goes with `Runtime.forget`.
    """

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises the reconciles of this service: kopf runs the timer beside the change
    handlers, and two concurrent reconciles would race on the autoscaler's memory."""
    autoscaler: AutoscalerState = field(default_factory=AutoscalerState)
    """The autoscaling policy's history and clocks."""
    desired_workers: int | None = None
    """The worker count the last reconcile applied (None: none yet in this process)."""
    applied: dict[tuple[str, str], AppliedChild] = field(default_factory=dict)
    """The last apply of each child, by (kind, name)."""
    stream: AppliedStream | None = None
    """The last successful ensure of the job stream (None: none, or it failed since)."""
    unschedulable_workers: tuple[UnschedulablePod, ...] = ()
    """Worker pods found Pending at the last timer tick (pods are listed only then)."""
    nats_credentials: IssuedCredentials | None = None
    """The service's NATS users as this process last issued them (None: none yet); written
    into its Secret on every pass, renewed when a third of their lifetime is left."""
    refresh_queued: bool = False
    """A refresh after a child's change waits for the lock; more changes need no other."""
    load_stepped: asyncio.Event = field(default_factory=asyncio.Event, compare=False)
    """Set when a scheduler of the service pushed a load step: the service's step daemon
    (`handlers.on_load_step`) lets the autoscaler decide at once, not at the next tick."""


@dataclass
class Runtime:
    """Everything handlers share; one per operator process."""

    config: OperatorConfig
    kube: AsyncClient
    nats: NatsPool
    stats: StatsBoard
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    worker_slots: WorkerSlotsBoard = field(default_factory=WorkerSlotsBoard)
    """Each worker's latest slot use: the pod-deletion costs set before a scale-down."""
    reconcile_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)
    )
    passes: PassesInFlight = field(default_factory=PassesInFlight)
    """Reconcile passes in flight (the liveness probe reads the oldest)."""
    trust: NatsTrust | None = None
    """The NATS trust services' credentials are issued from; None when NATS requires none."""
    nats_ca: str | None = None
    """The PEM text of `OperatorConfig.nats_ca`, copied into every service's ConfigMap."""
    _services: dict[ServiceKey, ServiceMemory] = field(default_factory=dict)

    def memory(self, service: ServiceKey) -> ServiceMemory:
        """The memory of `service`, empty the first time it is asked for."""
        memory = self._services.get(service)
        if memory is None:
            memory = self._services[service] = ServiceMemory()
        return memory

    def wake_autoscaler(self, service: ServiceKey) -> None:
        """A scheduler of `service` pushed a load step (`StatsBoard.on_step`): wake its step
        daemon. A service this process does not look after (no memory) is ignored."""
        memory = self._services.get(service)
        if memory is not None:
            memory.load_stepped.set()

    def forget(self, service: ServiceKey) -> None:
        """Drop the memory of a deleted service, its schedulers' stats included."""
        self._services.pop(service, None)
        self.stats.forget(service)
        self.worker_slots.forget(service)
        self.metrics.forget(service)


@contextlib.asynccontextmanager
async def open_runtime(config: OperatorConfig) -> AsyncIterator[Runtime]:
    """The runtime for one operator process; clients are closed on exit."""
    # First: a CA file that cannot be read stops the operator before it opens anything.
    tls = client_tls(config.nats_ca)  # a ValueError naming the file when it is no CA bundle
    nats_ca = None if config.nats_ca is None else config.nats_ca.read_text()
    board = StatsBoard()
    worker_slots = WorkerSlotsBoard()
    kube = AsyncClient(field_manager=FIELD_MANAGER)
    with tempfile.TemporaryDirectory(prefix="ponder-operator-") as scratch:
        trust, credentials = None, None
        if config.nats_trust_secret is not None:
            namespace, name = parse_secret_ref(config.nats_trust_secret)
            trust = await load_or_create_trust(kube, namespace, name)
            credentials = Path(scratch) / "operator.creds"
            credentials.write_text(trust.admin_creds(int(time.time())))
        pool = NatsPool(
            on_connect=stats_subscriber(board, worker_slots),
            user_credentials=credentials,
            tls=tls,
        )
        try:
            runtime = Runtime(
                config=config,
                kube=kube,
                nats=pool,
                stats=board,
                worker_slots=worker_slots,
                trust=trust,
                nats_ca=nats_ca,
            )
            board.on_step = runtime.wake_autoscaler
            yield runtime
        finally:
            await pool.close()
            await kube.close()
