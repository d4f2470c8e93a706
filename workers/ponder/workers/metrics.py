"""The worker's Prometheus collectors, on a registry of its own (no module-level singletons)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ponder.api import metrics as names
from ponder.api.wire import BranchResult


class JobOutcome(StrEnum):
    """Label values of `ponder_worker_jobs_total{outcome}`: what became of a fetched job."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"  # the engine refused it, or an unexpected error; results say why
    RETRIED = "retried"  # engine unavailable: handed back with a delay for another try
    HANDED_BACK = "handed_back"  # draining: handed back for another worker at once
    MALFORMED = "malformed"  # dead-lettered and terminated
    MAX_DELIVERIES = "max_deliveries"  # turned into FAILED results from the advisory
    ORPHANED = "orphaned"  # its scheduler is gone: dropped (acked), before or while running


class DeadLetterReason(StrEnum):
    MALFORMED = "malformed"
    MAX_DELIVERIES = "max_deliveries"
    FOREIGN_REPLY_SUBJECT = "foreign_reply_subject"  # names an inbox not of this service


CANCEL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class WorkerMetrics:
    """Every metric one worker exports."""

    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry()
        self.worker_id = worker_id
        self.slots_in_use = Gauge(
            names.WORKER_SLOTS_IN_USE,
            "Branches this worker is generating now",
            registry=self.registry,
        )
        self.slots = Gauge(
            names.WORKER_SLOTS, "Branches this worker runs at once", registry=self.registry
        )
        self.engine_up = Gauge(
            names.WORKER_ENGINE_UP,
            "1 while this worker's engine answers its health check, 0 while it is down and the "
            "worker takes no jobs",
            registry=self.registry,
        )
        self.engine_up.set(1)
        self.jobs = Counter(
            names.WORKER_JOBS_TOTAL,
            "Fetched jobs by what became of them",
            ["outcome"],
            registry=self.registry,
        )
        self.generation_seconds = Histogram(
            names.WORKER_GENERATION_SECONDS,
            "Seconds a job spent generating in vLLM (all its branches at once)",
            buckets=GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.cancel_to_free_seconds = Histogram(
            names.WORKER_CANCEL_TO_FREE_SECONDS,
            "Seconds from a cancel (or a dead scheduler's abort) reaching a running job to its "
            "engine call ending, its connection closed (vLLM then aborts the sequences)",
            buckets=CANCEL_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            names.WORKER_TOKENS_TOTAL,
            "Tokens processed by vLLM for this worker's jobs",
            ["kind"],
            registry=self.registry,
        )
        self.deadletters = Counter(
            names.WORKER_DEADLETTERS_TOTAL,
            "Jobs kept on the dead-letter subject",
            ["reason"],
            registry=self.registry,
        )
        self.redelivered_branches = Counter(
            names.BRANCHES_REDELIVERED_TOTAL,
            "Branches this worker received on a second or later delivery",
            registry=self.registry,
        )
        self.answer_probes = Counter(
            names.WORKER_ANSWER_PROBES_TOTAL,
            "Answer probes run for branches with the answer-probe early exit",
            registry=self.registry,
        )
        self.early_exits = Counter(
            names.WORKER_EARLY_EXITS_TOTAL,
            "Branches stopped by their answer probe",
            registry=self.registry,
        )
        self.low_confidence_stops = Counter(
            names.WORKER_LOW_CONFIDENCE_STOPS_TOTAL,
            "Branches stopped because a window of their confidence fell below the threshold "
            "(deep-conf)",
            registry=self.registry,
        )
        self.tokens_after_answer = Counter(
            names.WORKER_TOKENS_AFTER_ANSWER_TOTAL,
            "Tokens branches generated after their answer had settled (overthinking)",
            registry=self.registry,
        )
        # Every label value is exported from the start (at 0), and resolved once: `labels()`
        # takes a lock and builds a key on each call, and jobs are counted on the hot path.
        self._jobs_by_outcome = {
            outcome: self.jobs.labels(outcome=outcome.value) for outcome in JobOutcome
        }
        for reason in DeadLetterReason:
            self.deadletters.labels(reason=reason.value)
        self._prompt_tokens = self.tokens.labels(kind="prompt")
        self._completion_tokens = self.tokens.labels(kind="completion")

    def track_slots(self, capacity: int, in_use: Callable[[], float]) -> None:
        """Read slot usage at scrape time, so it is never stale."""
        self.slots.set(capacity)
        self.slots_in_use.set_function(in_use)

    def count_job(self, outcome: JobOutcome) -> None:
        self._jobs_by_outcome[outcome].inc()

    def count_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens:
            self._prompt_tokens.inc(prompt_tokens)
        if completion_tokens:
            self._completion_tokens.inc(completion_tokens)

    def count_answers(self, results: list[BranchResult]) -> None:
        """Probes, early exits, low-confidence stops and tokens after the answer of one job's
        branches."""
        for result in results:
            if result.probes:
                self.answer_probes.inc(result.probes)
            if result.early_exit:
                self.early_exits.inc()
            if result.low_confidence:
                self.low_confidence_stops.inc()
            if result.tokens_after_answer:
                self.tokens_after_answer.inc(result.tokens_after_answer)

    def count_deadletter(self, reason: DeadLetterReason) -> None:
        self.deadletters.labels(reason=reason.value).inc()
