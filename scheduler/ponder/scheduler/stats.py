"""Latency statistics over a sliding window, and the loop that publishes them for the autoscaler.

`LatencyWindow` is pure (the caller passes the clock); `publish_stats` is the I/O edge that
sends a `SchedulerStats` on the service's stats subject every `interval_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient

from ponder.api.wire import STATS_INTERVAL_SECONDS, SchedulerStats
from ponder.scheduler.load import LoadTracker

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_SAMPLES = 10_000


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


async def publish_stats(
    nc: NatsClient,
    subject: str,
    make_stats: Callable[[], SchedulerStats],
    interval_seconds: float = STATS_INTERVAL_SECONDS,
    on_published: Callable[[SchedulerStats], None] | None = None,
) -> None:
    """Publish `make_stats()` on `subject` every `interval_seconds` until cancelled.

    A failed publish (NATS reconnecting) is logged and the loop goes on.
    """
    while True:
        stats = make_stats()
        try:
            await nc.publish(subject, stats.model_dump_json().encode())
        except Exception as error:
            log.warning("publishing stats on %s failed: %r", subject, error)
        if on_published is not None:
            on_published(stats)
        await asyncio.sleep(interval_seconds)
