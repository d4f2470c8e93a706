"""The scheduler's Prometheus collectors, on a registry owned by one app (no global state)."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ponder.api import metrics as names

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
BRANCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class QueryOutcome(StrEnum):
    """`outcome` label of ponder_queries_total."""

    ANSWERED = "answered"  # the strategy finished
    DEADLINE = "deadline"  # answered with the best so far at the deadline
    NO_ANSWER = "no_answer"  # 504/502: nothing to answer with
    REJECTED = "rejected"  # refused (4xx) by the planner, the queue (too large), or the engine
    ABANDONED = "abandoned"  # the client went away


class BranchEvent(StrEnum):
    LAUNCHED = "launched"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class SchedulerMetrics:
    """Every collector of one scheduler app, registered on `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.queries = Counter(
            names.QUERIES_TOTAL,
            "Queries by strategy and outcome.",
            ["strategy", "outcome"],
            registry=self.registry,
        )
        self.query_latency = Histogram(
            names.QUERY_LATENCY_SECONDS,
            "Query latency from request to answer.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.query_tokens = Histogram(
            names.QUERY_TOKENS,
            "Tokens (prompt + completion, all branches) per query.",
            ["strategy"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.branches = Counter(
            names.BRANCHES_TOTAL,
            "Branches by event.",
            ["event"],
            registry=self.registry,
        )
        self.branches_saved = Counter(
            names.BRANCHES_SAVED_TOTAL,
            "Branches an adaptive strategy did not launch because it stopped early.",
            registry=self.registry,
        )
        self.branches_redelivered = Counter(
            names.BRANCHES_REDELIVERED_TOTAL,
            "Branch results reported more than once (a redelivered job); the first one counts.",
            registry=self.registry,
        )
        self.results_malformed = Counter(
            names.RESULTS_MALFORMED_TOTAL,
            "Messages on the results subject that were not valid branch results.",
            registry=self.registry,
        )
        self.late_tokens = Counter(
            names.LATE_TOKENS_TOTAL,
            "Tokens of branch results that arrived after their query had answered (past "
            "spec.slo.usageSettleMilliseconds): spent, but in no response's usage.",
            ["kind"],
            registry=self.registry,
        )
        self.plans_shrunk = Counter(
            names.PLANS_SHRUNK_TOTAL,
            "Queries granted fewer branches than asked, to fit budget, load or deadline.",
            registry=self.registry,
        )
        self.branches_to_consensus = Histogram(
            names.BRANCHES_TO_CONSENSUS,
            "Branches answered, in arrival order, until the final answer first led the count.",
            ["strategy"],
            buckets=BRANCH_BUCKETS,
            registry=self.registry,
        )
        self.early_stops = Counter(
            names.EARLY_STOPS_TOTAL,
            "Answered queries whose strategy stopped before its branch cap had completed "
            '(their share of ponder_queries_total{outcome="answered"} is the early-stop rate).',
            ["strategy"],
            registry=self.registry,
        )
        self.tokens_saved = Counter(
            names.TOKENS_SAVED_TOTAL,
            "Completion tokens early stopping left unspent, against the plan's maximum "
            "(the budget, or every branch at its cap if less).",
            ["strategy"],
            registry=self.registry,
        )
        self.tokens_before_final = Histogram(
            names.TOKENS_BEFORE_FINAL_ANSWER,
            "Completion tokens spent, in arrival order, until a branch first gave the final "
            "answer.",
            ["strategy"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.tokens_after_answer = Histogram(
            names.QUERY_TOKENS_AFTER_ANSWER,
            "Tokens a query's branches generated after their answer had settled (overthinking), "
            "for queries whose workers read it (the answer-probe early exit).",
            ["strategy"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.confidence_at_stop = Histogram(
            names.CONFIDENCE_AT_STOP,
            "The strategy's confidence in the answer it gave.",
            ["strategy"],
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.requests_refused = Counter(
            names.REQUESTS_REFUSED_TOTAL,
            "API requests refused before they were queued, by error code (invalid_api_key, "
            "permission_denied, rate_limit_exceeded).",
            ["code"],
            registry=self.registry,
        )
        self.tenant_tokens = Counter(
            names.TENANT_GENERATED_TOKENS_TOTAL,
            "Completion tokens generated for each tenant's queries (what its tokensPerMinute "
            "limit is charged).",
            ["tenant"],
            registry=self.registry,
        )
        self.slo_attainment = Gauge(
            names.SLO_ATTAINMENT_RATIO,
            "Share of recent queries that answered within the SLO's target latency.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            names.QUEUE_DEPTH_BRANCHES,
            "Branches this scheduler launched that have not finished.",
            registry=self.registry,
        )
        # Resolved once: `labels()` takes a lock and builds a key on every call, and branches
        # are counted on the hot path of every query.
        self._branches_by_event = {
            event: self.branches.labels(event=event.value) for event in BranchEvent
        }

    def count_branches(self, event: BranchEvent, count: int = 1) -> None:
        if count > 0:
            self._branches_by_event[event].inc(count)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
