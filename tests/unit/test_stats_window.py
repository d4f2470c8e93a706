"""Sliding-window latency statistics and the load the scheduler observes (pure)."""

from __future__ import annotations

import pytest

from ponder.api.wire import BranchResult, BranchStatus
from ponder.scheduler.load import WORKER_SEEN_SECONDS, LoadTracker, RateWindow
from ponder.scheduler.stats import LatencyWindow, snapshot


def window_with(latencies: list[float], at: float = 0.0) -> LatencyWindow:
    window = LatencyWindow(window_seconds=60.0)
    for latency in latencies:
        window.record(latency, at)
    return window


@pytest.mark.parametrize(
    ("latencies", "fraction", "expected"),
    [
        ([], 0.95, None),
        ([1.0], 0.95, 1.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 21)], 0.95, 19.0),
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([3.0, 1.0, 2.0], 1.0, 3.0),
    ],
)
def test_quantiles_are_nearest_rank(
    latencies: list[float], fraction: float, expected: float | None
) -> None:
    assert window_with(latencies).quantile(fraction, now=1.0) == expected


@pytest.mark.parametrize(
    ("latencies", "target", "expected"),
    [
        ([], 1.0, None),
        ([0.5, 0.9, 1.0, 1.5], 1.0, 0.75),
        ([2.0, 3.0], 1.0, 0.0),
        ([0.1], 1.0, 1.0),
    ],
)
def test_slo_attainment_is_the_share_within_target(
    latencies: list[float], target: float, expected: float | None
) -> None:
    assert window_with(latencies).attainment(target, now=1.0) == expected


def test_old_samples_leave_the_window() -> None:
    window = LatencyWindow(window_seconds=10.0)
    window.record(100.0, at=0.0)
    window.record(1.0, at=5.0)
    assert window.p95(now=9.0) == 100.0
    assert window.p95(now=12.0) == 1.0
    assert window.p95(now=20.0) is None
    assert window.total == 2


def test_window_keeps_at_most_max_samples_newest_first() -> None:
    window = LatencyWindow(window_seconds=60.0, max_samples=3)
    for latency in (9.0, 1.0, 2.0, 3.0):
        window.record(latency, at=0.0)
    assert window.latencies(now=0.0) == [1.0, 2.0, 3.0]


def result(
    worker: str, tokens: int, seconds: float, status: BranchStatus = BranchStatus.COMPLETED
) -> BranchResult:
    return BranchResult(
        query_id="q",
        job_id="q-j0",
        branch_id="q-0",
        status=status,
        completion_tokens=tokens,
        generation_seconds=seconds,
        worker_id=worker,
    )


def test_load_tracker_counts_outstanding_branches_and_their_expected_tokens() -> None:
    load = LoadTracker()
    load.query_started()
    load.branches_launched(8, max_tokens=100, at=0.0)
    assert (load.queries_in_flight, load.branches_outstanding) == (1, 8)
    assert load.expected_branch_tokens() == 800
    load.observe(result("w1", tokens=20, seconds=0.2), now=0.0)
    load.branches_settled(1, max_tokens=100)
    # Observed branches are shorter than their cap: expect the observed length.
    assert load.expected_branch_tokens() == 7 * 20
    load.branches_settled(7, max_tokens=100)
    load.query_finished()
    assert (load.queries_in_flight, load.branches_outstanding) == (0, 0)
    assert load.expected_branch_tokens() == 0


def test_load_tracker_learns_speed_and_workers_from_results() -> None:
    load = LoadTracker()
    assert load.snapshot(now=0.0).workers is None
    load.observe(result("w1", tokens=100, seconds=1.0), now=0.0)
    load.observe(result("w2", tokens=100, seconds=1.0), now=1.0)
    # Failed branches say nothing about speed, but their worker is alive.
    load.observe(result("w3", tokens=0, seconds=0.0, status=BranchStatus.FAILED), now=2.0)
    observed = load.snapshot(now=3.0)
    assert observed.workers == 3
    assert observed.seconds_per_token == pytest.approx(0.01)
    assert observed.mean_completion_tokens == pytest.approx(100.0)
    assert load.snapshot(now=0.5 + WORKER_SEEN_SECONDS).workers == 2


def test_stats_snapshot_reports_load_and_latency() -> None:
    load = LoadTracker()
    load.query_started()
    load.branches_launched(4, max_tokens=50, at=10.0)
    window = window_with([0.5, 2.0], at=10.0)
    stats = snapshot("s1", load, window, target_latency_seconds=1.0, at=123.0, monotonic_now=11.0)
    assert stats.scheduler_id == "s1"
    assert (stats.queries_in_flight, stats.branches_outstanding) == (1, 4)
    assert stats.expected_branch_tokens == 200
    assert stats.p95_latency_seconds == 2.0
    assert stats.slo_attainment == 0.5
    assert stats.queries_total == 2
    assert stats.branches_per_second == pytest.approx(4 / 30)  # 4 launched in a 30 s window
    assert stats.branch_seconds is None  # no branch has reported yet


def test_tokens_per_query_and_early_stops_are_over_the_window() -> None:
    window = LatencyWindow(window_seconds=10.0)
    assert window.mean_tokens(now=0.0) is None and window.early_stop_rate(now=0.0) is None
    window.record(1.0, at=0.0, tokens=900, stopped_early=False)
    window.record(1.0, at=5.0, tokens=100, stopped_early=True)
    window.record(1.0, at=6.0, tokens=200, stopped_early=True)
    assert window.mean_tokens(now=9.0) == 400
    assert window.early_stop_rate(now=9.0) == pytest.approx(2 / 3)
    # The first query has left the window.
    assert window.mean_tokens(now=12.0) == 150 and window.early_stop_rate(now=12.0) == 1.0
    stats = snapshot("s1", LoadTracker(), window, 30.0, at=1.0, monotonic_now=12.0)
    assert (stats.tokens_per_query, stats.early_stop_rate) == (150, 1.0)


def test_rate_window_counts_the_events_of_its_window_over_its_length() -> None:
    rate = RateWindow(window_seconds=10.0)
    assert rate.rate(now=0.0) == 0.0
    rate.record(8, at=0.0)
    rate.record(0, at=1.0)  # nothing launched counts for nothing
    rate.record(12, at=5.0)
    assert rate.rate(now=5.0) == pytest.approx(2.0)
    assert rate.rate(now=10.0) == pytest.approx(1.2)  # the first 8 have left (0, 10]
    assert rate.rate(now=15.0) == 0.0
    with pytest.raises(ValueError):
        RateWindow(window_seconds=0.0)


def test_load_tracker_learns_arrivals_and_how_long_a_branch_holds_its_slot() -> None:
    load = LoadTracker()
    load.branches_launched(30, max_tokens=100, at=0.0)
    load.branches_launched(30, max_tokens=100, at=20.0)
    assert load.arrivals.rate(now=20.0) == pytest.approx(2.0)
    assert load.arrivals.rate(now=31.0) == pytest.approx(1.0)
    load.observe(result("w1", tokens=100, seconds=4.0), now=21.0)
    assert load.branch_seconds == pytest.approx(4.0)
    # A branch cut short held its slot for as long as it ran; one that never started, not at all.
    load.observe(result("w1", tokens=10, seconds=2.0, status=BranchStatus.CANCELLED), now=22.0)
    load.observe(result("w1", tokens=0, seconds=0.0, status=BranchStatus.CANCELLED), now=22.0)
    assert load.branch_seconds == pytest.approx(4.0 + 0.1 * (2.0 - 4.0))
    assert load.seconds_per_token == pytest.approx(0.04)  # speed still from completed ones only
    stats = snapshot("s1", load, LatencyWindow(), 30.0, at=1.0, monotonic_now=31.0)
    assert stats.branches_per_second == pytest.approx(1.0)
    assert stats.branch_seconds == pytest.approx(3.8)
