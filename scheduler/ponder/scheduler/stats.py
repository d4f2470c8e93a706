"""Latency statistics over a sliding window, and the loop that publishes them for the autoscaler.

`LatencyWindow` and `is_load_step` are pure (the caller passes the clock); `stats_updates` paces
the updates (one every `interval_seconds`, one at once when the load steps up, rate-limited) and
`publish_stats` is the I/O edge that sends them on the service's stats subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient

from ponder.api.wire import STATS_INTERVAL_SECONDS, SchedulerStats
from ponder.scheduler.load import LoadTracker

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_SAMPLES = 10_000
STEP_FACTOR = 1.5
"""A load step: outstanding branches or the branch arrival rate at least this many times what
the previous update said (and by at least the minimum below)."""
STEP_MIN_BRANCHES = 8
"""The least growth of outstanding branches that is a step (the app passes one worker's slots
when more: a smaller step can hardly change the worker count)."""
STEP_MIN_RATE = 1.0
"""The least growth of branches launched per second that is a step."""
STEP_CHECK_GAP_SECONDS = 0.5
"""Between two checks for a load step, so at most one extra update per half second: a storm of
queries costs the publisher two snapshots a second, and NATS two messages, not one per query."""


@dataclass(frozen=True)
class _Sample:
    at: float
    latency: float
    tokens: int
    stopped_early: bool


class LatencyWindow:
    """Finished queries of the last `window_seconds` (at most `max_samples`, newest kept): their
    latencies, tokens and whether their strategy stopped early."""

    def __init__(
        self, window_seconds: float = DEFAULT_WINDOW_SECONDS, max_samples: int = DEFAULT_MAX_SAMPLES
    ) -> None:
        if window_seconds <= 0 or max_samples < 1:
            raise ValueError("window_seconds and max_samples must be positive")
        self.window_seconds = window_seconds
        self._samples: deque[_Sample] = deque(maxlen=max_samples)
        self.total = 0

    def record(
        self, latency_seconds: float, at: float, *, tokens: int = 0, stopped_early: bool = False
    ) -> None:
        """Add one finished query, observed at time `at` (seconds, any clock): its latency, its
        tokens (prompt and completion, every branch) and whether it stopped early."""
        self._samples.append(_Sample(at, latency_seconds, tokens, stopped_early))
        self.total += 1

    def _current(self, now: float) -> list[_Sample]:
        horizon = now - self.window_seconds
        while self._samples and self._samples[0].at < horizon:
            self._samples.popleft()
        return list(self._samples)

    def latencies(self, now: float) -> list[float]:
        """The latencies still inside the window at `now`, oldest first."""
        return [sample.latency for sample in self._current(now)]

    def mean_tokens(self, now: float) -> float | None:
        """Mean tokens per query of the window, or None when empty."""
        samples = self._current(now)
        return sum(s.tokens for s in samples) / len(samples) if samples else None

    def early_stop_rate(self, now: float) -> float | None:
        """Share of the window's queries whose strategy stopped early, or None when empty."""
        samples = self._current(now)
        return sum(1 for s in samples if s.stopped_early) / len(samples) if samples else None

    def quantile(self, fraction: float, now: float) -> float | None:
        """Nearest-rank quantile (0 < fraction <= 1) of the window, or None when empty."""
        latencies = sorted(self.latencies(now))
        if not latencies:
            return None
        rank = max(1, math.ceil(fraction * len(latencies)))
        return latencies[rank - 1]

    def p95(self, now: float) -> float | None:
        return self.quantile(0.95, now)

    def attainment(self, target_seconds: float, now: float) -> float | None:
        """Share of the window's queries that answered within `target_seconds`, or None."""
        latencies = self.latencies(now)
        if not latencies:
            return None
        return sum(1 for latency in latencies if latency <= target_seconds) / len(latencies)


def snapshot(
    scheduler_id: str,
    load: LoadTracker,
    window: LatencyWindow,
    target_latency_seconds: float,
    at: float,
    monotonic_now: float,
) -> SchedulerStats:
    """The stats message for this moment (`at`: unix time; `monotonic_now`: the window's clock)."""
    return SchedulerStats(
        scheduler_id=scheduler_id,
        at=at,
        queries_in_flight=load.queries_in_flight,
        branches_outstanding=load.branches_outstanding,
        expected_branch_tokens=load.expected_branch_tokens(),
        p95_latency_seconds=window.p95(monotonic_now),
        slo_attainment=window.attainment(target_latency_seconds, monotonic_now),
        queries_total=window.total,
        tokens_per_query=window.mean_tokens(monotonic_now),
        early_stop_rate=window.early_stop_rate(monotonic_now),
        branches_per_second=load.arrivals.rate(monotonic_now),
        branch_seconds=load.branch_seconds,
    )


def is_load_step(
    previous: SchedulerStats,
    current: SchedulerStats,
    *,
    min_branches: int = STEP_MIN_BRANCHES,
    factor: float = STEP_FACTOR,
    min_rate: float = STEP_MIN_RATE,
) -> bool:
    """Whether the load stepped up from the `previous` update to `current`: work arrived at a
    pool that had none (no branch outstanding, none launched in the rate's window), or the
    outstanding branches or the arrival rate grew `factor`-fold, by at least `min_branches` or
    `min_rate`. A fall is never a step: scale-down waits for its stabilisation window anyway."""
    was_idle = previous.branches_outstanding == 0 and not previous.branches_per_second
    if was_idle and current.branches_outstanding > 0:
        return True
    before, now = previous.branches_outstanding, current.branches_outstanding
    if now - before >= min_branches and now >= before * factor:
        return True
    rate_before = previous.branches_per_second or 0.0
    rate_now = current.branches_per_second or 0.0
    return rate_now - rate_before >= min_rate and rate_now >= rate_before * factor


async def stats_updates(
    make_stats: Callable[[], SchedulerStats],
    interval_seconds: float = STATS_INTERVAL_SECONDS,
    load_changed: asyncio.Event | None = None,
    *,
    check_gap_seconds: float = STEP_CHECK_GAP_SECONDS,
    is_step: Callable[[SchedulerStats, SchedulerStats], bool] = is_load_step,
) -> AsyncGenerator[SchedulerStats, None]:
    """The updates to publish: the first at once, then one every `interval_seconds`, and in
    between one as soon as the load steps up (`is_step` against the last update), marked
    `step`. `load_changed` (set when branches are launched) wakes the check; checks, and so
    the extra updates, come at most one per `check_gap_seconds`. Without `load_changed` only
    the periodic updates come (still marked when they are a step)."""
    loop = asyncio.get_running_loop()
    previous: SchedulerStats | None = None
    stats = make_stats()
    while True:
        if previous is not None and not stats.step and is_step(previous, stats):
            stats = stats.model_copy(update={"step": True})
        yield stats
        previous, sent_at = stats, loop.time()
        due, checked_at = sent_at + interval_seconds, sent_at
        while True:
            check_at = checked_at + check_gap_seconds
            if (
                load_changed is None
                or not await _set_before(load_changed, due)
                or check_at >= due  # the periodic update comes first, and is checked too
            ):
                await asyncio.sleep(max(0.0, due - loop.time()))
                stats = make_stats()
                break
            await asyncio.sleep(max(0.0, check_at - loop.time()))
            load_changed.clear()
            checked_at = loop.time()
            stats = make_stats()
            if is_step(previous, stats):
                break


async def _set_before(event: asyncio.Event, deadline: float) -> bool:
    """Wait for `event` until the loop's clock reads `deadline`; whether it was set."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return event.is_set()
    try:
        async with asyncio.timeout(remaining):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def publish_stats(
    nc: NatsClient,
    subject: str,
    make_stats: Callable[[], SchedulerStats],
    interval_seconds: float = STATS_INTERVAL_SECONDS,
    on_published: Callable[[SchedulerStats], None] | None = None,
    *,
    load_changed: asyncio.Event | None = None,
    is_step: Callable[[SchedulerStats, SchedulerStats], bool] = is_load_step,
) -> None:
    """Publish `stats_updates(make_stats, ...)` on `subject` until cancelled: every
    `interval_seconds`, and at once on a load step (woken by `load_changed`).

    A failed publish (NATS reconnecting) is logged and the loop goes on.
    """
    updates = stats_updates(make_stats, interval_seconds, load_changed, is_step=is_step)
    async with contextlib.aclosing(updates):
        async for stats in updates:
            # `step` only when set: an operator older than the field still reads the periodic
            # updates (its wire model forbids unknown fields) and misses only the pushes.
            body = stats.model_dump_json(exclude=None if stats.step else {"step"})
            try:
                await nc.publish(subject, body.encode())
            except Exception as error:
                log.warning("publishing stats on %s failed: %r", subject, error)
            if on_published is not None:
                on_published(stats)
