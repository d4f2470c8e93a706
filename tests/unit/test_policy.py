"""The autoscaling policy (pure): a table of decisions, a burst simulated tick by tick, the SLO
rule's queueing estimate, and the pure parts of the signals it is fed."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from ponder.api.crd import ReasoningServiceSpec
from ponder.api.wire import SchedulerStats
from ponder.operator.decide import signals_from
from ponder.operator.policy import (
    AutoscalerState,
    PolicyConfig,
    Recommendation,
    Signals,
    decide,
    held_replicas,
    raw_recommendation,
)
from ponder.operator.signals import StatsBoard, service_of_stats_subject, summarize
from ponder.operator.snapshot import Backlog

NOW = 1_000_000.0
CONFIG = PolicyConfig(
    min_replicas=1,
    max_replicas=10,
    branches_per_worker=25.6,  # 32 slots x 80 %
    max_tokens_per_branch=1024,
    slo_target_ms=30_000,
    scale_up_at_slo_fraction=0.9,
    scale_up_window_seconds=0,
    scale_down_window_seconds=300,
    max_scale_up_step=4,
    max_scale_up_percent=100,
    scale_to_zero=False,
    idle_seconds=600,
)


def history(*entries: tuple[float, int]) -> AutoscalerState:
    return AutoscalerState(
        history=tuple(Recommendation(NOW - age, replicas) for age, replicas in entries),
        last_active_at=NOW - 1,
    )


@pytest.mark.parametrize(
    ("case", "config", "signals", "state", "expected"),
    [
        ("idle at the minimum stays", CONFIG, Signals(NOW, 1), AutoscalerState(), 1),
        (
            "500 queued jobs scale up, limited per decision",
            CONFIG,
            Signals(NOW, 1, pending_jobs=500),
            AutoscalerState(),
            5,
        ),
        (
            "the step grows with the pool (100 % of 6 workers)",
            CONFIG,
            Signals(NOW, 6, pending_jobs=500),
            AutoscalerState(),
            10,
        ),
        ("demand within capacity holds", CONFIG, Signals(NOW, 2, 40, 10), AutoscalerState(), 2),
        ("ack-pending counts as demand", CONFIG, Signals(NOW, 2, 10, 50), AutoscalerState(), 3),
        (
            "the schedulers' branch count wins over the job count",
            CONFIG,
            Signals(NOW, 1, pending_jobs=10, scheduler_branches=100),
            AutoscalerState(),
            4,
        ),
        (
            "expected tokens well under the branch budget discount demand",
            CONFIG,
            Signals(NOW, 1, scheduler_branches=100, expected_branch_tokens=100 * 256),
            AutoscalerState(),
            1,
        ),
        (
            "p95 near the SLO adds a worker",
            CONFIG,
            Signals(NOW, 2, pending_jobs=10, p95_latency_ms=28_000),
            AutoscalerState(),
            3,
        ),
        (
            "p95 near the SLO with nothing queued adds none",
            CONFIG,
            Signals(NOW, 2, p95_latency_ms=28_000),
            history((10, 2)),
            2,
        ),
        (
            "a fresh operator does not shrink the pool at once",
            CONFIG,
            Signals(NOW, 5),
            AutoscalerState(),
            5,
        ),
        (
            "scale-down waits for the window",
            CONFIG,
            Signals(NOW, 5),
            history((200, 5), (100, 5), (15, 1)),
            5,
        ),
        (
            "scale-down after the window",
            CONFIG,
            Signals(NOW, 5),
            history((400, 5), (301, 5)),
            1,
        ),
        (
            "scale-down to the highest recommendation of the window",
            CONFIG,
            Signals(NOW, 5),
            history((400, 5), (200, 3), (100, 2)),
            3,
        ),
        (
            "a raised minReplicas applies now",
            replace(CONFIG, min_replicas=3),
            Signals(NOW, 1),
            history((100, 1)),
            3,
        ),
        (
            "a lowered maxReplicas applies now",
            replace(CONFIG, max_replicas=4),
            Signals(NOW, 8, pending_jobs=500),
            history((100, 8)),
            4,
        ),
        (
            "demand starts a pool at zero",
            replace(CONFIG, min_replicas=0),
            Signals(NOW, 0, pending_jobs=5),
            history((100, 0)),
            1,
        ),
        (
            "a scale-up window needs a sustained recommendation",
            replace(CONFIG, scale_up_window_seconds=60),
            Signals(NOW, 1, pending_jobs=100),
            history((30, 1)),
            1,
        ),
        (
            "scale to zero after the idle period",
            replace(CONFIG, scale_to_zero=True),
            Signals(NOW, 2),
            AutoscalerState(history=(Recommendation(NOW - 15, 1),), last_active_at=NOW - 700),
            0,
        ),
        (
            "no scale to zero before the idle period",
            replace(CONFIG, scale_to_zero=True),
            Signals(NOW, 1),
            AutoscalerState(history=(Recommendation(NOW - 15, 1),), last_active_at=NOW - 100),
            1,
        ),
        (
            "queries in flight keep an idle-looking pool awake",
            replace(CONFIG, scale_to_zero=True),
            Signals(NOW, 1, queries_in_flight=2),
            AutoscalerState(history=(Recommendation(NOW - 15, 1),), last_active_at=NOW - 700),
            1,
        ),
    ],
)
def test_decision(
    case: str, config: PolicyConfig, signals: Signals, state: AutoscalerState, expected: int
) -> None:
    decision = decide(config, signals, state)
    assert decision.replicas == expected, f"{case}: {decision.reason}"
    assert decision.reason


def test_decision_explains_itself() -> None:
    decision = decide(CONFIG, Signals(NOW, 1, pending_jobs=500), AutoscalerState())
    assert decision.message.startswith("Scaled workers from 1 to 5: 500 branches queued or running")
    assert "limited to 4 workers per decision" in decision.message
    assert "maxReplicas 10" in decision.message


def test_waiting_scale_down_says_so() -> None:
    decision = decide(CONFIG, Signals(NOW, 5), history((100, 5)))
    assert not decision.changed
    assert "300 s stabilisation window" in decision.reason


def test_policy_config_from_spec() -> None:
    spec = ReasoningServiceSpec.model_validate(
        {
            "model": {"name": "m"},
            "workers": {"slotsPerWorker": 16, "minReplicas": 2, "maxReplicas": 6},
            "autoscaling": {"targetUtilizationPercent": 50, "scaleToZero": {"enabled": True}},
        }
    )
    config = PolicyConfig.from_spec(spec)
    assert config.branches_per_worker == 8
    assert (config.min_replicas, config.max_replicas, config.scale_to_zero) == (2, 6, True)
    explicit = spec.model_copy(
        update={"autoscaling": spec.autoscaling.model_copy(update={"target_queue_per_worker": 50})}
    )
    assert PolicyConfig.from_spec(explicit).branches_per_worker == 50


@pytest.mark.parametrize(
    ("overrides", "remembered", "status", "current", "expected"),
    [
        ({}, None, None, None, 1),
        ({}, 3, 2, 1, 3),
        ({}, None, 2, 1, 2),
        ({}, None, None, 4, 4),
        ({}, 9, None, None, 4),  # above maxReplicas 4
        ({"autoscaling": {"scaleToZero": {"enabled": True}}}, 0, None, None, 0),
        ({}, 0, None, None, 1),  # zero only with scale-to-zero
        ({"autoscaling": {"mode": "External"}, "workers": {"replicas": 7}}, 2, 2, 2, 7),
        ({"autoscaling": {"mode": "External"}}, 2, 2, 3, 3),
    ],
)
def test_held_replicas_between_decisions(
    overrides: dict[str, Any],
    remembered: int | None,
    status: int | None,
    current: int | None,
    expected: int,
) -> None:
    spec = ReasoningServiceSpec.model_validate({"model": {"name": "m"}, **overrides})
    assert held_replicas(spec, remembered, status, current) == expected


def simulate(
    config: PolicyConfig, arrivals: dict[int, int], ticks: int, tick_seconds: int = 15
) -> list[tuple[int, int, int]]:
    """(time, queued branches, replicas) per tick; each worker finishes its target per tick."""
    state = AutoscalerState()
    replicas, queued = config.min_replicas, 0
    trajectory = []
    for tick in range(ticks):
        at = tick * tick_seconds
        queued += arrivals.get(at, 0)
        decision = decide(config, Signals(NOW + at, replicas, pending_jobs=queued), state)
        state, replicas = decision.state, decision.replicas
        trajectory.append((at, queued, replicas))
        queued = max(0, queued - math.floor(replicas * config.branches_per_worker))
    return trajectory


def test_burst_scales_up_within_two_ticks_and_down_only_after_the_window() -> None:
    config = replace(CONFIG, max_replicas=20)
    burst_at = 60
    trajectory = simulate(config, {burst_at: 500}, ticks=60)
    by_time = {at: replicas for at, _, replicas in trajectory}

    assert by_time[burst_at - 15] == 1
    assert by_time[burst_at + 15] > 1, "no scale-up within two ticks of the burst"
    peak = max(by_time.values())
    assert peak > 5

    drained_at = min(at for at, queued, _ in trajectory if at > burst_at and queued == 0)
    drops = [
        at
        for (at, _, replicas), (_, _, before) in zip(trajectory[1:], trajectory[:-1], strict=True)
        if replicas < before
    ]
    first_drop = min(drops)
    assert first_drop >= burst_at + config.scale_down_window_seconds
    assert all(replicas == peak for at, _, replicas in trajectory if drained_at <= at < first_drop)
    assert trajectory[-1][2] == config.min_replicas
    back_at_min = min(at for at, _, replicas in trajectory if at > burst_at and replicas == 1)
    assert back_at_min <= drained_at + config.scale_down_window_seconds + 15


# --- the signals the policy is fed ---------------------------------------------------------------


def stats(scheduler_id: str, **fields: Any) -> SchedulerStats:
    values: dict[str, Any] = {
        "scheduler_id": scheduler_id,
        "at": NOW,
        "queries_in_flight": 1,
        "branches_outstanding": 10,
        "expected_branch_tokens": 1000,
    }
    values.update(fields)
    return SchedulerStats(**values)


def test_scheduler_stats_combine_across_replicas() -> None:
    summary = summarize(
        [
            stats(
                "a",
                p95_latency_seconds=1.5,
                slo_attainment=1.0,
                queries_total=300,
                tokens_per_query=1000.0,
                early_stop_rate=0.5,
            ),
            stats(
                "b",
                p95_latency_seconds=4.0,
                slo_attainment=0.9,
                queries_total=100,
                tokens_per_query=2000.0,
            ),
        ]
    )
    assert summary is not None
    assert (summary.schedulers, summary.branches_outstanding) == (2, 20)
    assert (summary.expected_branch_tokens, summary.queries_in_flight) == (2000, 2)
    assert summary.p95_latency_ms == 4000  # the worst replica
    assert summary.slo_attainment_percent == 98  # weighted by queries served
    assert summary.tokens_per_query == 1250  # weighted the same way
    assert summary.early_stop_percent == 50  # only replica a reported one
    assert summarize([]) is None


@pytest.mark.parametrize(
    ("subject", "service"),
    [
        ("ponder.team-a.math.stats", ("team-a", "math")),
        ("ponder.team-a.math.jobs", None),
        ("ponder.team-a.stats", None),
        ("other.team-a.math.stats", None),
    ],
)
def test_stats_subjects_name_their_service(subject: str, service: tuple[str, str] | None) -> None:
    assert service_of_stats_subject(subject) == service


def test_stats_board_forgets_silent_schedulers() -> None:
    clock = [0.0]
    board = StatsBoard(stale_after_seconds=30, clock=lambda: clock[0])
    board.record(("ns", "svc"), stats("a"))
    clock[0] = 20.0
    board.record(("ns", "svc"), stats("b", branches_outstanding=5))
    summary = board.summary(("ns", "svc"))
    assert summary is not None and summary.branches_outstanding == 15
    clock[0] = 40.0  # a went quiet 40 s ago, b 20 s ago
    summary = board.summary(("ns", "svc"))
    assert summary is not None and summary.branches_outstanding == 5
    clock[0] = 60.0
    assert board.summary(("ns", "svc")) is None
    assert board.summary(("ns", "other")) is None


@pytest.mark.parametrize(
    ("config", "signals", "state", "cause"),
    [
        (CONFIG, Signals(NOW, 1, pending_jobs=60), AutoscalerState(), "demand"),
        (
            CONFIG,
            Signals(NOW, 2, pending_jobs=10, p95_latency_ms=28_000),
            AutoscalerState(),
            "latency",
        ),
        (CONFIG, Signals(NOW, 4, pending_jobs=1000), AutoscalerState(), "bounds"),
        (
            replace(CONFIG, scale_to_zero=True, min_replicas=0),
            Signals(NOW, 1),
            AutoscalerState(last_active_at=NOW - 700),
            "idle",
        ),
    ],
)
def test_a_decision_names_its_cause_in_one_word(
    config: PolicyConfig, signals: Signals, state: AutoscalerState, cause: str
) -> None:
    decision = decide(config, signals, state)
    assert decision.changed and decision.cause == cause, decision


# --- SLO attainment as the target: the queueing estimate -----------------------------------------

# Eight slots per worker, run full (targetUtilizationPercent 100), so that Erlang C's headroom
# shows: Little's law alone would carry 4 branches/s x 6 s = 24 busy slots on 3 workers.
TIGHT = replace(
    CONFIG,
    max_replicas=20,
    branches_per_worker=8,
    slots_per_worker=8,
    slo_target_ms=7_000,
    slo_attainment=0.95,
)


def loaded(current: int, **fields: Any) -> Signals:
    """A tick with 10 branches queued, 4 arriving per second, 6 s each, the SLO attained."""
    values: dict[str, Any] = {
        "pending_jobs": 10,
        "slo_attainment_percent": 95,
        "branches_per_second": 4.0,
        "branch_seconds": 6.0,
    }
    values.update(fields)
    return Signals(NOW, current, **values)


@pytest.mark.parametrize(
    ("case", "config", "signals", "workers", "cause"),
    [
        (
            # 1 s of slack (7 s SLO, 6 s branches): 31 slots keep P(wait > 1 s) within 5 %.
            "the queueing estimate sizes the pool for the attainment target",
            TIGHT,
            loaded(2),
            4,
            "attainment",
        ),
        (
            # 20 % missed where 5 % may be: a quarter of the late share, 0.0125: 33 slots.
            "attainment below target tightens the estimate by the observed misses",
            TIGHT,
            loaded(2, slo_attainment_percent=80),
            5,
            "attainment",
        ),
        (
            "the estimate replaces one-more-worker: from 2 straight to what the rate needs",
            TIGHT,
            loaded(2, slo_attainment_percent=80, branches_per_second=8.0),
            8,  # 48 busy slots: 60 slots at a late share of 0.0125
            "attainment",
        ),
        (
            # p95 6.5 s >= 90 % of 7 s: size for 6.3 s, 0.3 s of slack: 33 slots.
            "p95 near the SLO sizes the pool for the near-SLO latency",
            TIGHT,
            loaded(2, slo_attainment_percent=None, p95_latency_ms=6_500),
            5,
            "latency",
        ),
        (
            "a branch as long as the SLO has no slack: no branch may wait (34 slots)",
            replace(TIGHT, slo_target_ms=6_000),
            loaded(2, slo_attainment_percent=None),
            5,
            "attainment",
        ),
        (
            "attainmentPercent 100 is sized as 99.9 (38 slots)",
            replace(TIGHT, slo_attainment=1.0),
            loaded(2, slo_attainment_percent=99),
            5,
            "attainment",
        ),
        (
            "with ample slack Little's law at the target utilisation binds",
            replace(TIGHT, slo_target_ms=30_000, branches_per_worker=5),
            loaded(2),
            5,  # 24 busy slots / 5 per worker; Erlang C wants only 25 slots, 4 workers
            "attainment",
        ),
        ("demand beyond the estimate wins", TIGHT, loaded(2, pending_jobs=100), 13, "demand"),
        (
            "without a branch time yet a missed SLO adds one worker, as before",
            TIGHT,
            loaded(5, slo_attainment_percent=80, branch_seconds=None),
            6,
            "attainment",
        ),
        (
            "without a branch time and no miss the demand rule alone",
            TIGHT,
            loaded(2, branch_seconds=None),
            2,  # 10 queued branches at 8 each
            "demand",
        ),
        (
            "an idle service adds nothing for a rate or a miss it remembers",
            TIGHT,
            loaded(2, pending_jobs=0, slo_attainment_percent=80),
            0,
            "demand",
        ),
    ],
)
def test_the_queueing_estimate_sizes_the_pool_for_the_slo(
    case: str, config: PolicyConfig, signals: Signals, workers: int, cause: str
) -> None:
    wanted, reasons, got_cause = raw_recommendation(config, signals)
    assert (wanted, got_cause) == (workers, cause), f"{case}: {reasons}"


def test_the_estimate_explains_itself() -> None:
    decision = decide(TIGHT, loaded(2, slo_attainment_percent=80), AutoscalerState())
    assert (decision.replicas, decision.cause) == (5, "attainment")
    assert "SLO attainment 80% is below the 95% target" in decision.reason
    assert "4 branches/s x 6 s = 24 busy slots need 5 workers" in decision.reason
    assert "33 slots keep P(wait > 1 s) <= 0.0125" in decision.reason


def test_a_lagging_attainment_window_does_not_grow_the_pool_tick_after_tick() -> None:
    """The schedulers' window remembers a miss for a minute after the pool has grown enough: the
    estimate, sized from the rate, holds the pool where it is, where one-more-worker would
    have added a worker every tick."""
    state, replicas = AutoscalerState(), 2
    sized = []
    for tick in range(6):
        signals = replace(loaded(replicas, slo_attainment_percent=80), at=NOW + 15 * tick)
        decision = decide(TIGHT, signals, state)
        state, replicas = decision.state, decision.replicas
        sized.append(replicas)
    assert sized == [5] * 6
    state, replicas = AutoscalerState(), 2
    unsized = []
    for tick in range(6):
        signals = loaded(replicas, slo_attainment_percent=80, branch_seconds=None)
        decision = decide(TIGHT, replace(signals, at=NOW + 15 * tick), state)
        state, replicas = decision.state, decision.replicas
        unsized.append(replicas)
    assert unsized == [3, 4, 5, 6, 7, 8]


def test_the_estimate_keeps_the_scale_down_window_and_the_step_limit() -> None:
    # The rate fell: the estimate wants fewer workers, but only after the window.
    held = decide(TIGHT, loaded(10, branches_per_second=1.0), history((100, 10)))
    assert held.replicas == 10
    # A tenfold rate asks for many more; one decision adds at most max(4, 100 % of 2).
    step = decide(TIGHT, loaded(2, branches_per_second=40.0), AutoscalerState())
    assert step.replicas == 6 and "limited to 4 workers per decision" in step.reason


def test_policy_config_reads_the_slo_attainment_and_the_slots() -> None:
    spec = ReasoningServiceSpec.model_validate(
        {
            "model": {"name": "m"},
            "workers": {"slotsPerWorker": 16},
            "slo": {"attainmentPercent": 99},
        }
    )
    config = PolicyConfig.from_spec(spec)
    assert (config.slots_per_worker, config.slo_attainment) == (16, 0.99)


def test_scheduler_rates_add_up_and_branch_times_average_by_queries() -> None:
    summary = summarize(
        [
            stats("a", queries_total=300, branches_per_second=3.0, branch_seconds=4.0),
            stats("b", queries_total=100, branches_per_second=1.0, branch_seconds=8.0),
            stats("c", queries_total=50),  # an older scheduler that reports neither
        ]
    )
    assert summary is not None
    assert summary.branches_per_second == pytest.approx(4.0)
    assert summary.branch_seconds == pytest.approx(5.0)
    none = summarize([stats("c")])
    assert none is not None and none.branches_per_second is None and none.branch_seconds is None


def test_the_policy_is_fed_the_schedulers_attainment_rate_and_branch_time() -> None:
    summary = summarize(
        [stats("a", slo_attainment=0.9, branches_per_second=2.5, branch_seconds=3.0)]
    )
    signals = signals_from(NOW, 3, Backlog(pending_jobs=4, ack_pending_jobs=6), summary)
    assert (signals.slo_attainment_percent, signals.branches_per_second) == (90, 2.5)
    assert signals.branch_seconds == 3.0
    assert (signals.pending_jobs, signals.ack_pending_jobs, signals.current_replicas) == (4, 6, 3)
    unread = signals_from(NOW, 3, None, None)
    assert unread.slo_attainment_percent is None and unread.branches_per_second is None
