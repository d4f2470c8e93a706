"""The autoscaling simulation's pure pieces: the seeded trace, the simulated pool and its
accounting, the KEDA-style rule, and the comparison's verdict (bench/autoscale_*.py)."""

from __future__ import annotations

import dataclasses

import pytest

from bench.autoscale_arms import HpaBehaviour, KedaArm, StaticArm, queue_depth_recommendation
from bench.autoscale_pool import ArmResult, Observed
from bench.autoscale_sim import (
    Scenario,
    load_where_static_falls_to,
    ponder_arm,
    run_arm,
    scenario,
    shortfalls,
    static_size,
)
from bench.autoscale_trace import MAX_LOAD, TraceShape, Workload, arrivals, bursts_of, diurnal
from ponder.api.wire import SchedulerStats

FLAT = TraceShape(
    duration_seconds=600.0,
    peak_queries_per_second=0.5,
    diurnal_period_seconds=600.0,
    trough_fraction=1.0,
    bursts_per_hour=0.0,
)
"""Ten minutes at a constant 0.5 queries/s: 0.5 x 8 branches x ~6 s = ~24 busy slots."""


def small(seed: int = 3, shape: TraceShape = FLAT, startup_seconds: float = 90.0) -> Scenario:
    return scenario(seed, shape.duration_seconds / 3600, startup_seconds, shape=shape)


def test_the_diurnal_base_runs_from_its_trough_to_the_peak_and_back() -> None:
    shape = TraceShape(diurnal_period_seconds=1000.0, trough_fraction=0.2)
    assert diurnal(shape, 0.0) == pytest.approx(0.2)
    assert diurnal(shape, 500.0) == pytest.approx(1.0)
    assert diurnal(shape, 1000.0) == pytest.approx(0.2)


def test_a_seed_gives_one_trace_and_higher_loads_only_add_queries() -> None:
    shape = dataclasses.replace(FLAT, bursts_per_hour=6.0)
    once, again = arrivals(shape, 5, 1.0), arrivals(shape, 5, 1.0)
    assert once == again
    assert once != arrivals(shape, 6, 1.0)
    doubled = arrivals(shape, 5, 2.0)
    assert set(once) < set(doubled)  # same times, same indices: the queries keep their branches
    flat = arrivals(FLAT, 5, 1.0)
    assert 250 < len(flat) < 350  # 0.5 queries/s for 600 s
    assert 1.8 < len(arrivals(FLAT, 5, 2.0)) / len(flat) < 2.2
    with pytest.raises(ValueError):
        arrivals(shape, 5, MAX_LOAD + 1)


def test_bursts_stay_within_the_shape() -> None:
    shape = TraceShape(duration_seconds=36_000.0, bursts_per_hour=2.0)
    bursts = bursts_of(shape, 11)
    assert bursts and bursts == bursts_of(shape, 11)
    for burst in bursts:
        assert 120.0 <= burst.end - burst.start <= 600.0
        assert 1.5 <= burst.factor <= 2.5
        assert 0.0 <= burst.start < shape.duration_seconds


def test_branch_lengths_depend_on_the_query_alone_and_respect_the_cap() -> None:
    workload = Workload()
    lengths = workload.branch_tokens(1, 42, 512)
    assert lengths == workload.branch_tokens(1, 42, 512)
    assert lengths != workload.branch_tokens(1, 43, 512)
    assert len(lengths) == 8 and all(1 <= tokens <= 512 for tokens in lengths)
    assert max(workload.branch_tokens(1, 42, 100)) <= 100


def test_a_constant_load_the_static_pool_carries_attains_everything() -> None:
    case = small()
    result = run_arm(case, StaticArm(4), 1.0)  # 64 slots for ~24 busy
    assert result.queries > 200
    assert result.attainment == 1.0
    assert result.cut_at_deadline == 0
    assert result.granted_share == 1.0 and result.finished_share == 1.0
    assert result.worker_seconds == pytest.approx(4 * FLAT.duration_seconds)
    assert result.peak_workers == 4
    # The branches' own slot time: ~24 busy slots over the run, out of 64.
    assert 15 * 600 < result.slot_seconds < 35 * 600


def test_a_pool_of_no_workers_attains_nothing() -> None:
    result = run_arm(small(), StaticArm(0), 1.0)
    assert result.queries > 200
    assert result.attainment == 0.0
    assert result.cut_at_deadline == result.queries
    assert result.worker_seconds == 0.0 and result.finished_share == 0.0


def test_ponder_grows_a_pool_that_starts_too_small_with_the_real_policy() -> None:
    case = small(startup_seconds=30.0)
    arm = ponder_arm(case, 1.0)
    arm.initial = 1  # 16 slots for ~24 busy
    result = run_arm(case, arm, 1.0)
    assert result.peak_workers > 2
    assert arm.causes() and set(arm.causes()) <= {"demand", "attainment", "latency", "bounds"}
    assert result.attainment > 0.5


def test_a_run_is_the_same_for_a_seed() -> None:
    shape = dataclasses.replace(FLAT, trough_fraction=0.3, bursts_per_hour=6.0)
    first = run_arm(small(7, shape), ponder_arm(small(7, shape), 1.5), 1.5)
    again = run_arm(small(7, shape), ponder_arm(small(7, shape), 1.5), 1.5)
    other = run_arm(small(8, shape), ponder_arm(small(8, shape), 1.5), 1.5)
    assert first == again
    assert other != first


def test_the_static_pool_is_sized_for_the_peak_at_the_target_utilisation() -> None:
    case = scenario()
    # 1.5 queries/s x 8 branches x ~6.1 s = ~73 busy slots, 12.8 per worker (16 x 80 %).
    assert static_size(case) == 6


def test_the_search_finds_where_the_static_pool_falls_to_90_percent() -> None:
    case = dataclasses.replace(small(), shrink=False)
    load, at_load = load_where_static_falls_to(case, 2, 0.9)  # 32 slots for ~24 busy at load 1
    assert at_load.attainment < 0.9
    assert run_arm(case, StaticArm(2), load - 0.05).attainment >= 0.9


@pytest.mark.parametrize(
    ("queue", "target", "current", "expected"),
    [
        (0, 12.8, 3, 0),
        (100, 12.8, 1, 8),
        (100, 12.8, 8, 8),
        (110, 12.8, 8, 8),  # 110 / 102.4 is within the 10 % tolerance
        (120, 12.8, 8, 10),
        (100, 12.8, 0, 8),
    ],
)
def test_queue_depth_rule(queue: int, target: float, current: int, expected: int) -> None:
    assert queue_depth_recommendation(queue, target, current, tolerance=0.1) == expected


def stats_at(at: float) -> SchedulerStats:
    return SchedulerStats(
        scheduler_id="s",
        at=at,
        queries_in_flight=0,
        branches_outstanding=0,
        expected_branch_tokens=0,
    )


def test_the_keda_arm_scales_like_an_hpa_with_default_behaviour() -> None:
    arm = KedaArm(10.0, min_replicas=1, max_replicas=50, initial=2, behaviour=HpaBehaviour())
    # 400 branches want 40; one period adds at most max(4 pods, 100 % of 2).
    assert arm.desired(Observed(0.0, 2, 300, 100, stats_at(0.0))) == 6
    assert arm.desired(Observed(15.0, 6, 300, 100, stats_at(15.0))) == 12
    # The queue empties: the pool stays at the highest recommendation of the last 300 s.
    assert arm.desired(Observed(30.0, 12, 0, 0, stats_at(30.0))) == 12
    assert arm.desired(Observed(320.0, 12, 0, 0, stats_at(320.0))) == 1


def verdict_result(arm: str, attainment: float, worker_seconds: float) -> ArmResult:
    return ArmResult(
        arm=arm,
        queries=1000,
        attained=round(1000 * attainment),
        cut_at_deadline=0,
        branches_asked=8000,
        branches_granted=8000,
        branches_finished=8000,
        slot_seconds=0.0,
        worker_seconds=worker_seconds,
        peak_workers=1,
        p95_latency_seconds=1.0,
        duration_seconds=1.0,
    )


def test_the_verdict_names_what_fell_short() -> None:
    static = verdict_result("static 6", 0.6, 1000.0)
    assert shortfalls(verdict_result("ponder", 0.98, 650.0), static) == []
    missed = shortfalls(verdict_result("ponder", 0.95, 900.0), static)
    assert missed == ["attainment 95.0% < 97%", "GPU-seconds 0.90x the static pool's > 0.7x"]
