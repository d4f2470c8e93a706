"""The operator's Prometheus metrics, served on their own port (`--metrics-port`, 8090).

Per service (labels `namespace`, `name`): the workers the operator wants and those the
Deployment runs and has ready; every scale decision, by direction and cause (demand, latency,
attainment, bounds, idle); and the autoscaler's inputs as it last read them: branches queued or
running, the stream's jobs (pending, being run), the tokens the outstanding branches are
expected to generate, the schedulers' worst p95 latency against the SLO target, and SLO
attainment. Per operator: reconcile duration and errors by trigger. A deleted service's series
are removed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from ponder.api import metrics as names
from ponder.api.crd import ReasoningServiceStatus
from ponder.operator.decide import Plan, queue_depth_branches
from ponder.operator.snapshot import ServiceKey, Snapshot

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 8090
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SERVICE = ["namespace", "name"]


class OperatorMetrics:
    """Every collector of one operator process, registered on `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.desired = Gauge(
            names.DESIRED_REPLICAS, "Workers the operator wants.", SERVICE, registry=r
        )
        self.actual = Gauge(
            names.ACTUAL_REPLICAS, "Worker pods the Deployment runs.", SERVICE, registry=r
        )
        self.ready = Gauge(names.READY_REPLICAS, "Worker pods ready.", SERVICE, registry=r)
        self.decisions = Counter(
            names.SCALE_DECISIONS_TOTAL,
            "Decisions that changed the worker count, by direction (up, down) and cause "
            "(demand, latency, attainment, bounds, idle).",
            [*SERVICE, "direction", "cause"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            names.RECONCILE_SECONDS,
            "Duration of one reconcile pass, by trigger (timer, change, step: a load step).",
            ["trigger"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            names.RECONCILE_ERRORS_TOTAL,
            "Reconcile passes that raised, by trigger and error type (kopf retries them).",
            ["trigger", "error"],
            registry=r,
        )
        self.active = Gauge(
            names.OPERATOR_ACTIVE,
            "1 while this replica is the active one (standalone: always), 0 while it stands by "
            "paused behind a live peer of a higher priority.",
            registry=r,
        )
        self.demand = Gauge(
            names.AUTOSCALER_DEMAND_BRANCHES,
            "Branches queued or running, as the autoscaler last read them.",
            SERVICE,
            registry=r,
        )
        self.backlog = Gauge(
            names.AUTOSCALER_BACKLOG_JOBS,
            "The job stream's jobs, by state (pending: waiting for a worker; running).",
            [*SERVICE, "state"],
            registry=r,
        )
        self.expected_tokens = Gauge(
            names.AUTOSCALER_EXPECTED_BRANCH_TOKENS,
            "Tokens the outstanding branches are expected to generate (schedulers' stats).",
            SERVICE,
            registry=r,
        )
        self.p95 = Gauge(
            names.AUTOSCALER_P95_LATENCY_SECONDS,
            "The schedulers' worst p95 query latency.",
            SERVICE,
            registry=r,
        )
        self.slo_target = Gauge(
            names.AUTOSCALER_SLO_TARGET_SECONDS,
            "spec.slo.targetLatencyMilliseconds, in seconds.",
            SERVICE,
            registry=r,
        )
        self.attainment = Gauge(
            names.AUTOSCALER_SLO_ATTAINMENT_RATIO,
            "Share of recent queries within the SLO target, over all schedulers.",
            SERVICE,
            registry=r,
        )
        self._per_service = (
            self.desired,
            self.actual,
            self.ready,
            self.demand,
            self.expected_tokens,
            self.p95,
            self.slo_target,
            self.attainment,
        )

    def observe_pass(self, snapshot: Snapshot, plan: Plan, status: ReasoningServiceStatus) -> None:
        """Record what one pass of a service read and decided."""
        namespace, name = snapshot.key
        self.desired.labels(namespace, name).set(plan.worker_replicas)
        self.actual.labels(namespace, name).set(status.replicas or 0)
        self.ready.labels(namespace, name).set(status.ready_replicas or 0)
        decision = plan.decision
        if decision is not None and decision.changed:
            direction = "up" if decision.replicas > decision.current_replicas else "down"
            self.decisions.labels(namespace, name, direction, decision.cause).inc()
        spec = snapshot.service.spec
        self.slo_target.labels(namespace, name).set(spec.slo.target_latency_milliseconds / 1000)
        backlog, stats = snapshot.backlog, snapshot.stats
        if backlog is not None:
            self.backlog.labels(namespace, name, "pending").set(backlog.pending_jobs)
            self.backlog.labels(namespace, name, "running").set(backlog.ack_pending_jobs)
        self.demand.labels(namespace, name).set(queue_depth_branches(snapshot) or 0)
        expected = stats.expected_branch_tokens if stats else 0
        self.expected_tokens.labels(namespace, name).set(expected)
        p95 = _seconds(stats.p95_latency_ms if stats else None)
        self._set_or_clear(self.p95, namespace, name, p95)
        attainment = stats.slo_attainment_percent if stats else None
        self._set_or_clear(
            self.attainment, namespace, name, attainment / 100 if attainment is not None else None
        )

    @staticmethod
    def _set_or_clear(gauge: Gauge, namespace: str, name: str, value: float | None) -> None:
        """Unknown is no sample at all, never a made-up 0."""
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        else:
            gauge.labels(namespace, name).set(value)

    def forget(self, key: ServiceKey) -> None:
        """Remove a deleted service's series."""
        namespace, name = key
        for gauge in self._per_service:
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for state in ("pending", "running"):
            with contextlib.suppress(KeyError):
                self.backlog.remove(namespace, name, state)
        for labels in list(self.decisions._metrics):
            if labels[:2] == (namespace, name):
                self.decisions.remove(*labels)

    @contextlib.contextmanager
    def timed(self, trigger: str) -> Iterator[None]:
        """Time one reconcile pass and count it as an error when it raises."""
        started = time.monotonic()
        try:
            yield
        except Exception as error:
            self.reconcile_errors.labels(trigger, type(error).__name__).inc()
            raise
        finally:
            self.reconcile_seconds.labels(trigger).observe(time.monotonic() - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _seconds(milliseconds: int | None) -> float | None:
    return milliseconds / 1000 if milliseconds is not None else None


@contextlib.asynccontextmanager
async def metrics_server(
    metrics: OperatorMetrics, host: str, port: int
) -> AsyncIterator[web.AppRunner | None]:
    """Serve `GET /metrics` on host:port while the block runs; port 0: not at all."""
    if port == 0:
        yield None
        return

    async def serve(_: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving metrics on http://%s:%d/metrics", host, port)
    try:
        yield runner
    finally:
        await runner.cleanup()
