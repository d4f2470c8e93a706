"""NATS subject and stream names of one ReasoningService.

docs/architecture.md, "Subjects and stream", lists them with what each carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.api.priority import PRIORITY_ORDER, Priority

WORKERS_CONSUMER = "workers"
"""Durable name of the pull consumer of Standard jobs that all workers of a pool share; each
other class's consumer is `workers-<class>` (`ServiceSubjects.consumer_of`)."""


@dataclass(frozen=True)
class ServiceSubjects:
    """Every subject of one ReasoningService `namespace/name`.

    Kubernetes namespaces and our service names are DNS-1035 labels (no dots, no underscores;
    the CRD enforces it), so `.` never splits a name and `_` separates them unambiguously in
    stream names, where `-` is kept as it is.
    """

    namespace: str
    name: str

    @property
    def prefix(self) -> str:
        return f"ponder.{self.namespace}.{self.name}"

    @property
    def jobs(self) -> str:
        """JetStream subject of Standard branch jobs (work-queue stream)."""
        return f"{self.prefix}.jobs"

    def jobs_of(self, priority: Priority) -> str:
        """JetStream subject of one class's jobs: `jobs` for Standard (the subject a service
        had before classes), `jobs.critical` and `jobs.sheddable` for the others."""
        if priority is Priority.STANDARD:
            return self.jobs
        return f"{self.jobs}.{priority.value.lower()}"

    @property
    def job_subjects(self) -> list[str]:
        """Every class's jobs subject, Critical first."""
        return [self.jobs_of(priority) for priority in PRIORITY_ORDER]

    @property
    def deadletter(self) -> str:
        """JetStream subject (same stream) where malformed or undeliverable jobs are kept."""
        return f"{self.prefix}.deadletter"

    def results(self, scheduler_id: str) -> str:
        """Core NATS inbox of one scheduler replica."""
        return f"{self.prefix}.results.{scheduler_id}"

    def alive(self, scheduler_id: str) -> str:
        """Core NATS subject a scheduler replica answers requests on while it lives; workers
        ask it whether a job's results still have a reader (`ponder.workers.liveness`)."""
        return f"{self.prefix}.alive.{scheduler_id}"

    def scheduler_of_inbox(self, subject: str) -> str | None:
        """The scheduler id of one of this service's results inboxes; None for anything else."""
        if not self.is_results_inbox(subject):
            return None
        return subject[len(f"{self.prefix}.results.") :]

    def is_results_inbox(self, subject: str) -> bool:
        """`subject` is the results inbox of one of this service's schedulers: the only place
        its workers publish results to, whatever a job names (a forged job must not make a
        worker publish anywhere else, `$JS.API.*` included)."""
        head = f"{self.prefix}.results."
        if not subject.startswith(head):
            return False
        replica = subject[len(head) :]
        return bool(replica) and not any(c in replica for c in ".*> \t\r\n")

    @property
    def results_wildcard(self) -> str:
        """Every results inbox of this service's schedulers."""
        return f"{self.prefix}.results.*"

    @property
    def alive_wildcard(self) -> str:
        """Every liveness subject of this service's schedulers."""
        return f"{self.prefix}.alive.*"

    @property
    def inbox_prefix(self) -> str:
        """Prefix of the reply inboxes this service's programs create (JetStream publish
        acknowledgements, the jobs a pull delivers, liveness answers): per service, so that
        NATS permissions keep one service's replies from another (`ponder.api.nats_permissions`).
        """
        return f"_INBOX.{self.namespace}.{self.name}"

    @property
    def cancel(self) -> str:
        """Core NATS subject of query cancellations."""
        return f"{self.prefix}.cancel"

    @property
    def stats(self) -> str:
        """Core NATS subject where schedulers publish load and latency for the autoscaler."""
        return f"{self.prefix}.stats"

    @property
    def worker_stats(self) -> str:
        """Core NATS subject where workers publish their slot use (`WorkerStats`), from which
        the operator chooses the idle pods a scale-down removes."""
        return f"{self.prefix}.worker-stats"

    @property
    def stream(self) -> str:
        """JetStream stream name, e.g. `PONDER_DEFAULT_MATH-SOLVER`."""
        return f"PONDER_{self.namespace.upper()}_{self.name.upper()}"

    @property
    def stream_subjects(self) -> list[str]:
        return [*self.job_subjects, self.deadletter]

    @property
    def consumer(self) -> str:
        """The consumer of Standard jobs."""
        return WORKERS_CONSUMER

    def consumer_of(self, priority: Priority) -> str:
        """The workers' consumer of one class's jobs: `workers` for Standard,
        `workers-critical` and `workers-sheddable` for the others."""
        if priority is Priority.STANDARD:
            return WORKERS_CONSUMER
        return f"{WORKERS_CONSUMER}-{priority.value.lower()}"

    @property
    def consumers(self) -> list[str]:
        """Every class's consumer, Critical first."""
        return [self.consumer_of(priority) for priority in PRIORITY_ORDER]

    def max_deliveries_advisory(self, priority: Priority = Priority.STANDARD) -> str:
        """Advisory JetStream publishes when a job reached its consumer's MaxDeliver."""
        consumer = self.consumer_of(priority)
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{consumer}"
