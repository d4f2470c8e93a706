"""What one reconcile pass observed, as plain values (pure: no I/O, no clients).

`reconcile.observe` fills a `Snapshot` from the API server, JetStream and the schedulers' stats;
`decide` reads nothing else. The signal types live here rather than in `signals.py`, which
talks to NATS, so that the pure modules can name them without importing a client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ponder.api.crd import ReasoningService
from ponder.operator.policy import AutoscalerState

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Backlog:
    """Jobs of one service waiting for a worker, and jobs being run."""

    pending_jobs: int
    ack_pending_jobs: int

    @property
    def total(self) -> int:
        """Every job not yet acknowledged: waiting or being run."""
        return self.pending_jobs + self.ack_pending_jobs


@dataclass(frozen=True)
class StatsSummary:
    """The fresh stats of every scheduler replica of one service, combined."""

    schedulers: int
    branches_outstanding: int
    expected_branch_tokens: int
    queries_in_flight: int
    p95_latency_ms: int | None  # the worst replica's
    slo_attainment_percent: int | None  # weighted by the queries each replica served
    tokens_per_query: int | None = None  # weighted the same way
    early_stop_percent: int | None = None  # weighted the same way
    branches_per_second: float | None = None  # launched, summed over the replicas
    branch_seconds: float | None = None  # slot time of a branch, weighted by the queries served


@dataclass(frozen=True)
class Snapshot:
    """Everything one reconcile pass decides from, read before anything is applied."""

    service: ReasoningService
    workers: Mapping[str, Any] | None
    """The worker Deployment as the API server returned it; None when it does not exist."""
    scheduler: Mapping[str, Any] | None
    """The scheduler Deployment as the API server returned it; None when it does not exist."""
    stream_error: str | None
    """Why the job stream is unavailable; None when it is there."""
    backlog: Backlog | None
    """The stream's jobs; None when they could not be read (the replicas are held then)."""
    stats: StatsSummary | None
    """The schedulers' fresh stats combined; None when none reported lately."""
    at: float
    """Unix seconds when the signals were read: the autoscaler's clock."""
    remembered_workers: int | None = None
    """The worker count the last pass of this process decided (None after a restart)."""
    autoscaler: AutoscalerState = field(default_factory=AutoscalerState)
    """What the autoscaling policy remembers of this service between ticks."""
    nats_unreachable: bool = False
    """The stream is unavailable because its NATS server could not be reached at all."""
    nats_credentials: str | None = None
    """The Secret of the service's NATS credentials; None when NATS requires none."""
    nats_credentials_error: str | None = None
    """Why the API server refused to write that Secret this pass; None when it took it."""
    nats_ca: str | None = None
    """The PEM of the CA the NATS server's certificate is verified with; None without TLS."""

    @property
    def key(self) -> ServiceKey:
        """(namespace, name) of the service."""
        return self.service.metadata.namespace, self.service.metadata.name
