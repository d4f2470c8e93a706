"""What this scheduler replica observes about the pool, for the planner and the stats.

Pure bookkeeping (the caller passes the clock): queries and branches in flight, how fast
branches generate (an exponentially weighted mean of seconds per token and tokens per branch),
how long a branch holds a worker slot and how many branches arrive per second (the autoscaler's
queueing estimate), and how many workers answered recently (`worker_id` of results).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ponder.api.wire import BRANCH_RATE_WINDOW_SECONDS, BranchResult, BranchStatus

EWMA_WEIGHT = 0.1
"""Weight of the newest observation: ~the last 10-20 branches dominate the estimate."""

WORKER_SEEN_SECONDS = 60.0
"""A worker counts towards the pool while it reported a result this recently."""


@dataclass(frozen=True)
class LoadSnapshot:
    """What the scheduler currently observes about the pool (all optional: cold start).

    `branches_outstanding`: branches launched and not finished, ahead of a new query.
    `workers`: worker processes that reported recently; with `ServiceConfig.slots_per_worker`
    it gives the pool's slots. `seconds_per_token` and `mean_completion_tokens`: observed
    generation speed per branch and branch length, which estimate a branch's duration.
    `cold`: no worker is taking jobs (the pool is at zero, or starting), as the workers'
    consumer says (`pool.PoolWatch`); what was observed of the pool before says nothing then.
    """

    branches_outstanding: int = 0
    workers: int | None = None
    seconds_per_token: float | None = None
    mean_completion_tokens: float | None = None
    cold: bool = False


class RateWindow:
    """Events per second over the last `window_seconds`: what was recorded in
    (now - window, now], over the whole window (a fresh window under-reads, never over-reads)."""

    def __init__(self, window_seconds: float = BRANCH_RATE_WINDOW_SECONDS) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self._events: deque[tuple[float, int]] = deque()
        self._count = 0

    def record(self, count: int, at: float) -> None:
        """`count` events at time `at` (seconds, any clock that never goes back)."""
        if count > 0:
            self._events.append((at, count))
            self._count += count

    def rate(self, now: float) -> float:
        """Events per second of the window ending at `now`."""
        horizon = now - self.window_seconds
        while self._events and self._events[0][0] <= horizon:
            self._count -= self._events.popleft()[1]
        return self._count / self.window_seconds


class LoadTracker:
    """Counters updated by the query runners; `snapshot()` feeds the planner."""

    def __init__(self) -> None:
        self.queries_in_flight = 0
        self.branches_outstanding = 0
        self._outstanding_token_caps = 0
        self.seconds_per_token: float | None = None
        self.mean_completion_tokens: float | None = None
        self.branch_seconds: float | None = None
        """Mean seconds a branch held its slot (EWMA over every branch that ran)."""
        self.arrivals = RateWindow()
        """Branches launched per second: the arrival rate at the pool's slots."""
        self.on_launched: Callable[[], None] | None = None
        """Called after every launch (the stats publisher checks then for a load step)."""
        self._workers_seen: dict[str, float] = {}

    def query_started(self) -> None:
        self.queries_in_flight += 1

    def query_finished(self) -> None:
        self.queries_in_flight = max(0, self.queries_in_flight - 1)

    def branches_launched(self, count: int, max_tokens: int, at: float) -> None:
        """`count` branches of up to `max_tokens` each launched at time `at`."""
        self.branches_outstanding += count
        self._outstanding_token_caps += count * max_tokens
        self.arrivals.record(count, at)
        if self.on_launched is not None:
            self.on_launched()

    def branches_settled(self, count: int, max_tokens: int) -> None:
        """Branches that are no longer outstanding: reported, or given up on (cancelled)."""
        self.branches_outstanding = max(0, self.branches_outstanding - count)
        self._outstanding_token_caps = max(0, self._outstanding_token_caps - count * max_tokens)

    def observe(self, result: BranchResult, now: float) -> None:
        """Learn from one branch result: its worker is alive, how long it held its slot, and
        (when it completed) how fast and long it was."""
        if result.worker_id:
            self._workers_seen[result.worker_id] = now
        if result.generation_seconds > 0:
            # A cancelled or expired branch held its slot too, for as long as it ran; one that
            # never started (0 s) held none.
            self.branch_seconds = _ewma(self.branch_seconds, result.generation_seconds)
        if result.status != BranchStatus.COMPLETED or result.completion_tokens == 0:
            return
        per_token = result.generation_seconds / result.completion_tokens
        self.seconds_per_token = _ewma(self.seconds_per_token, per_token)
        self.mean_completion_tokens = _ewma(
            self.mean_completion_tokens, float(result.completion_tokens)
        )

    def workers(self, now: float) -> int | None:
        """Workers that reported within `WORKER_SEEN_SECONDS`, or None when none did."""
        horizon = now - WORKER_SEEN_SECONDS
        for worker_id in [w for w, seen in self._workers_seen.items() if seen < horizon]:
            del self._workers_seen[worker_id]
        return len(self._workers_seen) or None

    def expected_branch_tokens(self) -> int:
        """Tokens the outstanding branches are expected to generate (their caps, or the
        observed mean length when that is smaller)."""
        caps = self._outstanding_token_caps
        if self.mean_completion_tokens is None:
            return caps
        return min(caps, round(self.branches_outstanding * self.mean_completion_tokens))

    def snapshot(self, now: float) -> LoadSnapshot:
        """What the planner sees of the pool at `now`."""
        return LoadSnapshot(
            branches_outstanding=self.branches_outstanding,
            workers=self.workers(now),
            seconds_per_token=self.seconds_per_token,
            mean_completion_tokens=self.mean_completion_tokens,
        )


def _ewma(previous: float | None, value: float) -> float:
    return value if previous is None else previous + EWMA_WEIGHT * (value - previous)
