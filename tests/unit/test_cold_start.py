"""Scale from zero that holds (pure parts): a query that finds no worker is planned whole and
waits for one up to the hold; the hold comes from the spec while the pool may be at zero; the
autoscaler starts a worker on the first queued job at the next tick."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from ponder.api.crd import ReasoningServiceSpec, ScaleToZeroSpec, SloSpec
from ponder.api.jetstream import MAX_AGE_SECONDS
from ponder.api.service_config import BudgetConfig, ServiceConfig, SloConfig, StrategyDefaults
from ponder.api.strategy import StrategyName
from ponder.api.wire import Endpoint
from ponder.operator.policy import AutoscalerState, Recommendation, Signals, decide
from ponder.operator.service_config import cold_start_hold_ms, service_config_from_spec
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.outcome import cold_start_note
from ponder.scheduler.planner import Plan, QueryRequest, plan_query
from ponder.scheduler.pool import is_cold
from tests.unit.test_policy import CONFIG as POLICY

CONFIG = ServiceConfig(
    name="math",
    model="tiny",
    strategy=StrategyDefaults(
        default=StrategyName.SELF_CONSISTENCY, branches=8, max_branches=32, branches_per_job=4
    ),
    budget=BudgetConfig(default_tokens=4096, max_tokens=16384, max_tokens_per_branch=128),
    slo=SloConfig(target_latency_ms=5000, max_deadline_ms=60_000, cold_start_hold_ms=600_000),
    slots_per_worker=8,
)

BUSY = LoadSnapshot(500, workers=2, seconds_per_token=0.01, mean_completion_tokens=100)
"""What the scheduler last saw of the pool: two workers, far behind (the planner shrinks)."""


def plan(load: LoadSnapshot | None, config: ServiceConfig = CONFIG) -> Plan:
    query = QueryRequest(
        query_id="q1",
        endpoint=Endpoint.COMPLETIONS,
        question="1+2",
        prompt="Q:1+2 A:",
        messages=None,
        ponder=PonderOptions(branches=16),
        max_tokens=128,
    )
    result = plan_query(query, config, load)
    assert isinstance(result, Plan), result
    return result


@pytest.mark.parametrize(
    ("case", "load", "config", "branches", "hold_ms", "k"),
    [
        ("warm and idle: as asked, no hold", LoadSnapshot(), CONFIG, 16, 0, 4),
        ("warm and far behind: shrunk, no hold", BUSY, CONFIG, 1, 0, 1),
        ("cold: whole, and held", replace(BUSY, cold=True), CONFIG, 16, 600_000, 4),
        (
            "cold without a hold: whole, ends at its deadline",
            replace(BUSY, cold=True),
            CONFIG.model_copy(update={"slo": SloConfig(target_latency_ms=5000)}),
            16,
            0,
            4,
        ),
    ],
)
def test_a_cold_pool_gets_the_whole_query_and_the_hold(
    case: str, load: LoadSnapshot, config: ServiceConfig, branches: int, hold_ms: int, k: int
) -> None:
    planned = plan(load, config)
    assert planned.query.branches == branches, case
    assert planned.shrunk is (branches < 16), case
    assert (planned.deadline_ms, planned.hold_ms) == (5000, hold_ms), case
    assert planned.wait_ms == 5000 + hold_ms, case
    # The workers seen before a cold spell are gone: a wave is not split for them.
    assert planned.branches_per_job == k, case


@pytest.mark.parametrize(
    ("waiting_pulls", "running_jobs", "cold"),
    [
        (0, 0, True),  # nobody pulls, nothing runs: at zero, starting, or every engine down
        (1, 0, False),  # an idle worker waits for a job
        (0, 3, False),  # every slot busy: the pool is warm, just full
        (2, 5, False),
    ],
)
def test_the_pool_is_cold_when_nobody_pulls_and_nothing_runs(
    waiting_pulls: int, running_jobs: int, cold: bool
) -> None:
    assert is_cold(waiting_pulls, running_jobs) is cold


def spec(**changes: Any) -> ReasoningServiceSpec:
    return ReasoningServiceSpec.model_validate({"model": {"name": "m"}, **changes})


@pytest.mark.parametrize(
    ("case", "changes", "hold_ms"),
    [
        ("a pool that keeps a worker has no cold start", {}, 0),
        (
            "scale to zero: the default hold, ten minutes",
            {
                "workers": {"minReplicas": 0},
                "autoscaling": {"scaleToZero": {"enabled": True}},
            },
            600_000,
        ),
        (
            "scale to zero with its own hold",
            {
                "workers": {"minReplicas": 0},
                "autoscaling": {"scaleToZero": {"enabled": True, "holdSeconds": 240}},
            },
            240_000,
        ),
        (
            "KEDA may scale it to zero (External, minReplicas 0)",
            {"workers": {"minReplicas": 0}, "autoscaling": {"mode": "External"}},
            600_000,
        ),
        (
            "holdSeconds 0 turns the hold off",
            {
                "workers": {"minReplicas": 0},
                "autoscaling": {"scaleToZero": {"enabled": True, "holdSeconds": 0}},
            },
            0,
        ),
    ],
)
def test_the_hold_applies_while_the_pool_may_be_at_zero(
    case: str, changes: dict[str, Any], hold_ms: int
) -> None:
    service = spec(**changes)
    assert cold_start_hold_ms(service) == hold_ms, case
    config = service_config_from_spec("ns", "svc", service, "nats://nats:4222")
    assert config.slo.cold_start_hold_ms == hold_ms, case


def test_the_hold_is_at_least_a_gpu_pods_start_by_default() -> None:
    hold = spec().autoscaling.scale_to_zero.hold_seconds
    assert hold >= 300  # a GPU pod's image pull and model load take minutes


NOW = 1_000_000.0
TICK_SECONDS = 15.0
ZERO = replace(POLICY, min_replicas=0, max_replicas=4, scale_to_zero=True)
SCALED_TO_ZERO = AutoscalerState(
    history=(Recommendation(NOW - 3600, 0),), last_active_at=NOW - 4200, last_scale_at=NOW - 3600
)
"""An hour after the idle rule took the pool to zero."""


@pytest.mark.parametrize(
    ("case", "signals", "replicas"),
    [
        ("nothing queued: stays at zero", Signals(NOW, 0), 0),
        ("the first queued job starts a worker", Signals(NOW, 0, pending_jobs=1), 1),
        (
            "a held query the schedulers report, before its job is counted",
            Signals(NOW, 0, queries_in_flight=1, scheduler_branches=1),
            1,
        ),
        ("a job being delivered", Signals(NOW, 0, ack_pending_jobs=1), 1),
    ],
)
def test_the_first_queued_job_scales_zero_to_one_at_the_next_tick(
    case: str, signals: Signals, replicas: int
) -> None:
    decision = decide(ZERO, signals, SCALED_TO_ZERO)
    assert decision.replicas == replicas, f"{case}: {decision.reason}"
    if replicas:
        assert decision.message.startswith("Scaled workers from 0 to 1"), decision.message


def test_zero_to_one_then_the_idle_period_again_before_zero() -> None:
    """One tick after the job is queued there is a worker; it is not taken away while the
    query runs, nor before a whole idle period after it."""
    state, replicas, at = SCALED_TO_ZERO, 0, NOW
    decision = decide(ZERO, Signals(at, replicas, pending_jobs=1), state)
    state, replicas = decision.state, decision.replicas
    assert replicas == 1
    for _ in range(3):  # the job runs
        at += TICK_SECONDS
        decision = decide(ZERO, Signals(at, replicas, ack_pending_jobs=1), state)
        state, replicas = decision.state, decision.replicas
        assert replicas == 1
    answered_at = at
    while at - answered_at < ZERO.idle_seconds - TICK_SECONDS:
        at += TICK_SECONDS
        decision = decide(ZERO, Signals(at, replicas), state)
        state, replicas = decision.state, decision.replicas
        assert replicas == 1, f"{at - answered_at:.0f} s after the answer: {decision.reason}"
    at += 2 * TICK_SECONDS
    assert decide(ZERO, Signals(at, replicas), state).replicas == 0


def test_a_deadline_message_names_the_hold_it_waited_out() -> None:
    assert cold_start_note(0) == ""
    assert "cold-start hold of 600000 ms" in cold_start_note(600_000)
    assert "scaleToZero.holdSeconds" in cold_start_note(600_000)


def test_the_stream_keeps_a_held_job_through_the_longest_hold_and_deadline() -> None:
    with pytest.raises(ValidationError):
        ScaleToZeroSpec(hold_seconds=3601)
    with pytest.raises(ValidationError):
        SloSpec(max_deadline_milliseconds=3_600_001)
    longest_hold = ScaleToZeroSpec(hold_seconds=3600).hold_seconds
    longest_deadline = SloSpec(max_deadline_milliseconds=3_600_000).max_deadline_milliseconds
    assert longest_hold + longest_deadline / 1000 <= MAX_AGE_SECONDS
