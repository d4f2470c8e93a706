"""Load-adaptive width: `spec.slo.loadAdaptation` Static, Shrink and ShrinkAndGrow.

The service below has 4 workers x 16 slots = 64 slots; a branch is expected to take 1 s
(0.01 s per token x 100 tokens) and the default deadline is 5 s, so one round fits 0.8 of it.
A query that leaves `ponder.branches` to the service asks for 8, at 128 tokens each of a
4096-token budget: the budget pays for 32, as many as `spec.strategy.maxBranches`.
"""

from __future__ import annotations

from typing import Any

import pytest

from ponder.api.priority import Priority
from ponder.api.service_config import (
    BudgetConfig,
    LoadAdaptation,
    ServiceConfig,
    SloConfig,
    StrategyDefaults,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import Endpoint
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.outcome import QueryOutcome
from ponder.scheduler.planner import (
    GROW_SLOT_SHARE,
    Plan,
    PlanError,
    QueryRequest,
    may_grow,
    plan_query,
)
from ponder.scheduler.response import ponder_info
from ponder.scheduler.strategies import STRATEGIES


def config(adaptation: LoadAdaptation) -> ServiceConfig:
    return ServiceConfig(
        name="math",
        model="tiny",
        strategy=StrategyDefaults(
            default=StrategyName.SELF_CONSISTENCY, branches=8, max_branches=32
        ),
        budget=BudgetConfig(default_tokens=4096, max_tokens=16384, max_tokens_per_branch=128),
        slo=SloConfig(target_latency_ms=5000, max_deadline_ms=60_000, load_adaptation=adaptation),
        slots_per_worker=16,
    )


GROW = config(LoadAdaptation.SHRINK_AND_GROW)
SHRINK = config(LoadAdaptation.SHRINK)
STATIC = config(LoadAdaptation.STATIC)


def load(outstanding: int, **fields: Any) -> LoadSnapshot:
    return LoadSnapshot(
        outstanding,
        workers=fields.pop("workers", 4),
        seconds_per_token=fields.pop("seconds_per_token", 0.01),
        mean_completion_tokens=100,
        **fields,
    )


IDLE = load(0)
BUSY = load(200)  # 200 outstanding on 64 slots: rounds fit = int(5 * 0.8 / 1) = 4 -> 56 free


def request(
    priority: Priority = Priority.STANDARD, max_tokens: int | None = None, **ponder: Any
) -> QueryRequest:
    return QueryRequest(
        query_id="q1",
        endpoint=Endpoint.COMPLETIONS,
        question="1+2",
        prompt="Q:1+2 A:",
        messages=None,
        ponder=PonderOptions(**ponder),
        priority=priority,
        max_tokens=max_tokens,
    )


def planned(result: Plan | PlanError) -> Plan:
    assert isinstance(result, Plan), result
    return result


@pytest.mark.parametrize(
    ("snapshot", "options", "branches"),
    [
        # Idle: half of 64 idle slots is 32, which max_branches and the budget allow.
        (IDLE, {}, 32),
        # 40 outstanding: 24 idle, half of it 12.
        (load(40), {}, 12),
        # 48 outstanding: 16 idle, half of it 8, no more than asked.
        (load(48), {}, 8),
        # Never past the query's max_branches.
        (IDLE, {"max_branches": 12}, 12),
        # Never past what the budget pays for at 128 tokens a branch: 1280 / 128 = 10.
        (IDLE, {"budget_tokens": 1280}, 10),
        # No slack: a 1 s branch does not fit 0.8 of a 1 s deadline.
        (IDLE, {"deadline_ms": 1000}, 8),
        # A longer deadline lets the same idle pool grow.
        (IDLE, {"deadline_ms": 1500}, 32),
        # An explicit ponder.branches is the caller's width.
        (IDLE, {"branches": 8}, 8),
        (IDLE, {"branches": 4, "max_branches": 16}, 4),
        # Nothing observed (cold start) and a cold pool: it cannot know the pool is idle.
        (LoadSnapshot(0), {}, 8),
        (load(0, cold=True), {}, 8),
        # Speed unobserved (an instant engine reports 0 s per token).
        (load(0, seconds_per_token=0.0), {}, 8),
    ],
)
def test_shrink_and_grow_widens_defaulted_queries_on_an_idle_pool_with_slack(
    snapshot: LoadSnapshot, options: dict[str, Any], branches: int
) -> None:
    plan = planned(plan_query(request(**options), GROW, snapshot))
    assert plan.query.branches == branches
    assert plan.query.max_branches == branches  # self-consistency launches all at once
    assert plan.query.wave_size == branches
    assert plan.grown is (branches > plan.requested_branches)
    assert not plan.shrunk


def test_growth_says_how_idle_the_pool_was_and_what_bounded_it() -> None:
    plan = planned(plan_query(request(), GROW, IDLE))
    assert plan.requested_branches == 8
    assert plan.grow_reason is not None
    assert plan.grow_reason.startswith("idle: 64 of 64 slots idle")
    assert f"granted 32 instead of 8 (at most {GROW_SLOT_SHARE:g} of the idle slots)" in (
        plan.grow_reason
    )
    by_budget = planned(plan_query(request(budget_tokens=1280), GROW, IDLE))
    assert by_budget.grow_reason is not None
    assert "what budget_tokens=1280 pays for" in by_budget.grow_reason
    by_limit = planned(plan_query(request(max_branches=12), GROW, IDLE))
    assert by_limit.grow_reason is not None and "max_branches=12" in by_limit.grow_reason


def test_the_response_plan_shows_the_growth() -> None:
    plan = planned(plan_query(request(), GROW, IDLE))
    info = ponder_info(QueryOutcome(plan=plan, answer=None)).plan
    assert (info.requested_branches, info.branches, info.grown) == (8, 32, True)
    assert info.grow_reason == plan.grow_reason and not info.shrunk
    quiet = ponder_info(
        QueryOutcome(plan=planned(plan_query(request(), SHRINK, IDLE)), answer=None)
    )
    assert (quiet.plan.branches, quiet.plan.grown, quiet.plan.grow_reason) == (8, False, None)


@pytest.mark.parametrize(
    ("priority", "branches"),
    [
        (Priority.CRITICAL, 32),  # grows (within the Standard share of its deadline)
        (Priority.STANDARD, 32),
        (Priority.SHEDDABLE, 8),  # yields capacity, never takes more
    ],
)
def test_growth_by_priority_class(priority: Priority, branches: int) -> None:
    assert planned(plan_query(request(priority), GROW, IDLE)).query.branches == branches


def test_a_busy_pool_still_shrinks_under_shrink_and_grow() -> None:
    plan = planned(plan_query(request(branches=16), GROW, load(60)))
    # rounds fit = 4 -> 256 - 60 = 196 free, 16 fit; at 250 outstanding only 6 do.
    assert plan.query.branches == 16 and not plan.grown
    shrunk = planned(plan_query(request(branches=16), GROW, load(250)))
    assert shrunk.query.branches == 6 and shrunk.shrunk and not shrunk.grown
    # A defaulted query on the busy pool is neither grown nor shrunk below what fits.
    busy = planned(plan_query(request(), GROW, BUSY))
    assert busy.query.branches == 8 and not busy.grown and not busy.shrunk


@pytest.mark.parametrize(
    ("name", "grows"),
    [
        (StrategyName.SELF_CONSISTENCY, True),
        (StrategyName.BEST_OF_N, True),
        (StrategyName.WEIGHTED_VOTE, True),
        (StrategyName.SINGLE, False),  # one branch whatever is asked
        (StrategyName.ADAPTIVE_CONSISTENCY, False),  # its waves size themselves
        (StrategyName.BEAM_SEARCH, False),  # a step is as wide as the beam
        (StrategyName.REFINE, False),  # turns wait on each other
        (StrategyName.BUDGET_FORCING, False),
    ],
)
def test_only_strategies_that_launch_elastic_branches_at_once_grow(
    name: StrategyName, grows: bool
) -> None:
    strategy = STRATEGIES[name]
    assert may_grow(strategy) is grows
    plan = planned(plan_query(request(strategy=name.value), GROW, IDLE))
    assert plan.grown is grows
    shrink_plan = planned(plan_query(request(strategy=name.value), SHRINK, IDLE))
    if not grows:
        assert plan.query == shrink_plan.query  # ShrinkAndGrow plans them as Shrink does


@pytest.mark.parametrize("snapshot", [IDLE, load(40), BUSY, load(500), LoadSnapshot(0)])
def test_shrink_never_grows(snapshot: LoadSnapshot) -> None:
    plan = planned(plan_query(request(), SHRINK, snapshot))
    assert plan.query.branches <= plan.requested_branches and not plan.grown


@pytest.mark.parametrize("snapshot", [IDLE, load(40), BUSY, load(500), load(500, workers=1)])
@pytest.mark.parametrize(
    "options",
    [{}, {"branches": 16}, {"strategy": "adaptive-consistency", "deadline_ms": 1000}],
)
def test_static_never_shrinks_nor_grows_for_load(
    snapshot: LoadSnapshot, options: dict[str, Any]
) -> None:
    cold = planned(plan_query(request(**options), STATIC, LoadSnapshot(0)))
    plan = planned(plan_query(request(**options), STATIC, snapshot))
    assert plan.query == cold.query
    assert not plan.shrunk and not plan.grown


def test_static_still_keeps_the_budget() -> None:
    asked = request(max_tokens=128, branches=16, budget_tokens=1280)
    plan = planned(plan_query(asked, STATIC, load(500)))
    assert plan.query.branches == 10  # 1280 / 128
    assert plan.shrink_reason is not None and plan.shrink_reason.startswith("budget:")


def test_shrink_is_the_default() -> None:
    assert SloConfig().load_adaptation is LoadAdaptation.SHRINK
