"""The autoscaler's real signals: the JetStream backlog and the schedulers' stats.

The backlog comes from the JetStream API (`$JS.API.CONSUMER.INFO`, answered by the consumer's
leader), never from one server's monitoring page: with clustered NATS a replica's page can lag,
which is how KEDA's NATS JetStream scaler scaled away on stale numbers. Scheduler replicas
publish `SchedulerStats` on `ponder.<ns>.<name>.stats` every few seconds; the operator keeps the
latest message of each scheduler in memory and ignores the ones that went quiet. A message marked
`step` (the scheduler's load stepped up) is also passed to `StatsBoard.on_step`, which wakes the
service's autoscaler at once instead of at its next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from ponder.api.priority import PRIORITY_ORDER
from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import WORKER_STATS_INTERVAL_SECONDS, SchedulerStats, WorkerStats
from ponder.operator.snapshot import Backlog, ServiceKey, StatsSummary

logger = logging.getLogger(__name__)

STATS_WILDCARD = "ponder.*.*.stats"
STALE_AFTER_SECONDS = 30.0
"""A scheduler silent this long is gone (restarted or scaled down); its last numbers are dropped."""
WORKER_STATS_WILDCARD = "ponder.*.*.worker-stats"
WORKER_STALE_AFTER_SECONDS = 5 * WORKER_STATS_INTERVAL_SECONDS
"""A worker silent this long is gone or wedged: its slot use is forgotten (its pod costs 0)."""


def summarize(stats: list[SchedulerStats]) -> StatsSummary | None:
    """Combine the latest stats of several scheduler replicas (None when there are none)."""
    if not stats:
        return None
    p95s = [s.p95_latency_seconds for s in stats if s.p95_latency_seconds is not None]
    attainment = _weighted(stats, [s.slo_attainment for s in stats], 100)
    rates = [s.branches_per_second for s in stats if s.branches_per_second is not None]
    return StatsSummary(
        schedulers=len(stats),
        branches_outstanding=sum(s.branches_outstanding for s in stats),
        expected_branch_tokens=sum(s.expected_branch_tokens for s in stats),
        queries_in_flight=sum(s.queries_in_flight for s in stats),
        p95_latency_ms=round(max(p95s) * 1000) if p95s else None,
        slo_attainment_percent=attainment,
        tokens_per_query=_weighted(stats, [s.tokens_per_query for s in stats], 1),
        early_stop_percent=_weighted(stats, [s.early_stop_rate for s in stats], 100),
        branches_per_second=sum(rates) if rates else None,
        branch_seconds=_mean_by_queries(stats, [s.branch_seconds for s in stats]),
    )


def _weighted(stats: list[SchedulerStats], values: list[float | None], scale: int) -> int | None:
    """The replicas' values averaged by the queries each served, times `scale`, rounded; None
    when no replica has one."""
    mean = _mean_by_queries(stats, values)
    return None if mean is None else round(scale * mean)


def _mean_by_queries(stats: list[SchedulerStats], values: list[float | None]) -> float | None:
    """The replicas' values averaged by the queries each served; None when no replica has one."""
    known = [
        (value, max(each.queries_total, 1))
        for each, value in zip(stats, values, strict=True)
        if value is not None
    ]
    if not known:
        return None
    weight = sum(w for _, w in known)
    return sum(v * w for v, w in known) / weight


def _service_of(subject: str, kind: str) -> ServiceKey | None:
    """`ponder.<ns>.<name>.<kind>` -> (ns, name); None for any other subject."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != "ponder" or parts[3] != kind:
        return None
    return parts[1], parts[2]


def service_of_stats_subject(subject: str) -> ServiceKey | None:
    """`ponder.<ns>.<name>.stats` -> (ns, name); None for any other subject."""
    return _service_of(subject, "stats")


def service_of_worker_stats_subject(subject: str) -> ServiceKey | None:
    """`ponder.<ns>.<name>.worker-stats` -> (ns, name); None for any other subject."""
    return _service_of(subject, "worker-stats")


Report = TypeVar("Report", SchedulerStats, WorkerStats)


@dataclass
class _LatestReports(Generic[Report]):
    """The latest report of each sender (a scheduler replica, a worker) of every service,
    stamped with our clock, not theirs; a sender silent `stale_after_seconds` is forgotten.

    Keyed by the subject's service, never by what a message claims: a service's programs may
    publish only on their own service's subjects (`ponder.api.nats_permissions`).
    """

    stale_after_seconds: float
    clock: Callable[[], float] = time.monotonic
    _latest: dict[ServiceKey, dict[str, tuple[float, Report]]] = field(default_factory=dict)

    def _keep(self, service: ServiceKey, sender: str, report: Report) -> None:
        self._latest.setdefault(service, {})[sender] = (self.clock(), report)

    def _fresh(self, service: ServiceKey) -> dict[str, Report]:
        """The service's reports by sender, the stale ones dropped on the way."""
        reports = self._latest.get(service, {})
        now = self.clock()
        for sender, (received_at, _) in list(reports.items()):
            if now - received_at > self.stale_after_seconds:
                del reports[sender]
        return {sender: report for sender, (_, report) in reports.items()}

    def forget(self, service: ServiceKey) -> None:
        """Drop every report of a deleted service."""
        self._latest.pop(service, None)


def _parsed(message: Msg, kind: str, model: type[Report]) -> tuple[ServiceKey, Report] | None:
    """The service and report of a message on `ponder.<ns>.<name>.<kind>`; None (a bad one
    logged) for anything else."""
    service = _service_of(message.subject, kind)
    if service is None:
        return None
    try:
        return service, model.model_validate_json(message.data)
    except ValidationError as error:
        logger.warning("Dropped malformed %s on %s: %s", kind, message.subject, error)
        return None


@dataclass
class StatsBoard(_LatestReports[SchedulerStats]):
    """The latest SchedulerStats per scheduler replica of every service (operator memory)."""

    stale_after_seconds: float = STALE_AFTER_SECONDS
    on_step: Callable[[ServiceKey], None] | None = None
    """Told the service of every message marked as a load step, once it is recorded."""

    def record(self, service: ServiceKey, stats: SchedulerStats) -> None:
        """Keep `stats` as its scheduler's latest; a load step goes on to `on_step`."""
        self._keep(service, stats.scheduler_id, stats)
        if stats.step and self.on_step is not None:
            self.on_step(service)

    def summary(self, service: ServiceKey) -> StatsSummary | None:
        """The service's fresh stats combined; stale replicas are forgotten on the way."""
        return summarize(list(self._fresh(service).values()))

    async def on_message(self, message: Msg) -> None:
        """NATS callback for `ponder.*.*.stats`; a bad message is logged and dropped."""
        parsed = _parsed(message, "stats", SchedulerStats)
        if parsed is not None:
            self.record(*parsed)


@dataclass
class WorkerSlotsBoard(_LatestReports[WorkerStats]):
    """The latest slot use each worker of every service reported (operator memory)."""

    stale_after_seconds: float = WORKER_STALE_AFTER_SECONDS

    def record(self, service: ServiceKey, stats: WorkerStats) -> None:
        """Keep `stats` as its worker's latest."""
        self._keep(service, stats.worker_id, stats)

    def slot_use(self, service: ServiceKey) -> dict[str, int]:
        """Slots in use by worker id, of the workers that reported lately."""
        return {worker: stats.slots_in_use for worker, stats in self._fresh(service).items()}

    async def on_message(self, message: Msg) -> None:
        """NATS callback for `ponder.*.*.worker-stats`; a bad message is logged and dropped."""
        parsed = _parsed(message, "worker-stats", WorkerStats)
        if parsed is not None:
            self.record(*parsed)


def stats_subscriber(
    board: StatsBoard, workers: WorkerSlotsBoard | None = None
) -> Callable[[NatsClient], Awaitable[Subscription]]:
    """What to run on every new NATS connection: subscribe the board to every service's stats,
    and `workers` (when given) to every worker's slot use."""

    async def subscribe(client: NatsClient) -> Subscription:
        if workers is not None:
            await client.subscribe(WORKER_STATS_WILDCARD, cb=workers.on_message)
        return await client.subscribe(STATS_WILDCARD, cb=board.on_message)

    return subscribe


async def read_backlog(js: JetStreamContext, subjects: ServiceSubjects) -> Backlog | None:
    """The jobs queue of one service from the JetStream API; None when the stream is missing.

    Summed over the workers' consumers, one per priority class: their pending (not yet
    delivered) and ack-pending (delivered, not yet acknowledged) counts. A class whose consumer
    does not exist yet (a stream set up before classes, not reconciled since) counts the jobs
    on its subject as pending (a work-queue stream keeps a job until it is acknowledged).
    """
    pending = ack_pending = 0
    missing: list[str] = []
    for priority in PRIORITY_ORDER:
        try:
            info = await js.consumer_info(subjects.stream, subjects.consumer_of(priority))
        except NotFoundError:
            missing.append(subjects.jobs_of(priority))
            continue
        pending += int(info.num_pending or 0)
        ack_pending += int(info.num_ack_pending or 0)
    if missing:
        try:
            stream = await js.stream_info(subjects.stream, subjects_filter=f"{subjects.prefix}.>")
        except NotFoundError:
            return None
        per_subject = stream.state.subjects or {}
        pending += sum(int(per_subject.get(subject, 0)) for subject in missing)
    return Backlog(pending_jobs=pending, ack_pending_jobs=ack_pending)
