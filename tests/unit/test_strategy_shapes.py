"""Strategies declare their shape; the registry refuses a wrong one, and the planner and the
branches-saved count follow the declaration, not a list of names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ponder.api.service_config import (
    BudgetConfig,
    ServiceConfig,
    SloConfig,
    StrategyDefaults,
    VerifierConfig,
    VerifierKind,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import Endpoint
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.outcome import QueryOutcome, branches_saved
from ponder.scheduler.planner import Plan, PlanError, QueryRequest, plan_query
from ponder.scheduler.strategies import STRATEGIES, registry
from ponder.scheduler.strategies.base import LaunchMode, Shrinkable, Strategy, shape_problems
from ponder.scheduler.strategies.self_consistency import SelfConsistency

CONFIG = ServiceConfig(
    name="math",
    model="tiny",
    strategy=StrategyDefaults(branches=8, max_branches=32, branches_per_job=4),
    budget=BudgetConfig(default_tokens=4096, max_tokens=16384, max_tokens_per_branch=128),
    slo=SloConfig(target_latency_ms=5000, max_deadline_ms=60_000),
    slots_per_worker=8,
)
BUSY = LoadSnapshot(56, workers=2, seconds_per_token=0.01, mean_completion_tokens=100)


def shaped(
    launch_mode: LaunchMode,
    may_shrink: frozenset[Shrinkable] = frozenset(),
    *,
    single_branch: bool = False,
    needs_verifier: bool = False,
    may_exit_early: bool = False,
    name: StrategyName = StrategyName.SELF_CONSISTENCY,
) -> type[Strategy]:
    """A strategy class with the given shape (self-consistency's behaviour, another's shape)."""
    return type(
        "Shaped",
        (SelfConsistency,),
        {
            "name": name,
            "launch_mode": launch_mode,
            "single_branch": single_branch,
            "needs_verifier": needs_verifier,
            "may_shrink": may_shrink,
            "may_exit_early": may_exit_early,
        },
    )


def request(strategy: StrategyName, **ponder: Any) -> QueryRequest:
    return QueryRequest(
        query_id="q1",
        endpoint=Endpoint.COMPLETIONS,
        question="1+2",
        prompt="Q:1+2 A:",
        messages=None,
        ponder=PonderOptions(strategy=strategy.value, **ponder),
    )


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_declares_a_consistent_shape(name: StrategyName) -> None:
    strategy = STRATEGIES[name]
    assert strategy.name == name
    assert shape_problems(strategy) == []
    assert isinstance(strategy.single_branch, bool) and isinstance(strategy.needs_verifier, bool)


@pytest.mark.parametrize(
    ("strategy", "problem"),
    [
        (
            shaped(LaunchMode.WAVES, single_branch=True),
            "Shaped is single-branch but launches waves",
        ),
        (
            shaped(LaunchMode.AT_ONCE, frozenset({Shrinkable.BRANCHES}), single_branch=True),
            "Shaped is single-branch: it has nothing to shrink",
        ),
        (
            shaped(LaunchMode.AT_ONCE, frozenset({Shrinkable.WAVES})),
            "Shaped may shrink waves but launches at-once",
        ),
        (
            shaped(LaunchMode.WAVES, frozenset({Shrinkable.STEPS})),
            "Shaped may shrink steps but launches waves",
        ),
        (
            shaped(LaunchMode.STEPS, frozenset({Shrinkable.BRANCHES, Shrinkable.STEPS})),
            "Shaped launches steps: it may not shrink branches",
        ),
        (
            shaped(LaunchMode.STEPS, may_exit_early=True),
            "Shaped launches steps: its branches may not exit early",
        ),
        (
            shaped(LaunchMode.SEQUENCE, may_exit_early=True),
            "Shaped launches sequence: its branches may not exit early",
        ),
        (
            type("Bare", (Strategy,), {"name": StrategyName.SINGLE}),
            "Bare declares no launch_mode, single_branch, needs_verifier, may_shrink, "
            "may_exit_early",
        ),
        (
            shaped("waves", frozenset()),  # type: ignore[arg-type]
            "Shaped.launch_mode='waves' is not a LaunchMode",
        ),
        (
            shaped(LaunchMode.WAVES, {"waves"}),  # type: ignore[arg-type]
            "Shaped.may_shrink={'waves'} is not a set of Shrinkable",
        ),
    ],
)
def test_inconsistent_shapes_are_named(strategy: type[Strategy], problem: str) -> None:
    assert problem in shape_problems(strategy)


def test_the_registry_refuses_a_wrong_shape_and_a_name_twice() -> None:
    with pytest.raises(ValueError, match="single-branch but launches waves"):
        registry(shaped(LaunchMode.WAVES, single_branch=True))
    with pytest.raises(ValueError, match="strategy self-consistency registered twice"):
        registry(SelfConsistency, shaped(LaunchMode.AT_ONCE))


def widths(plan: Plan | PlanError) -> tuple[int, int, int, int, str | None]:
    assert isinstance(plan, Plan), plan
    query = plan.query
    return (
        query.branches,
        query.max_branches,
        query.max_tokens_per_branch,
        plan.branches_per_job,
        plan.shrink_reason,
    )


@pytest.mark.parametrize("model", list(STRATEGIES))
@pytest.mark.parametrize(
    ("ponder", "load"),
    [
        ({}, None),
        ({"branches": 4, "budget_tokens": 300}, None),
        ({"branches": 16, "deadline_ms": 5000}, BUSY),
        ({"branches": 4, "deadline_ms": 2600}, LoadSnapshot(0, 1, 0.01, 100)),
    ],
)
def test_a_new_strategy_is_planned_from_its_declared_shape(
    model: StrategyName, ponder: dict[str, Any], load: LoadSnapshot | None
) -> None:
    """A strategy registered under another name, with the shape of `model`, gets the plan
    `model` gets: the planner reads the shape, not the name."""
    real = STRATEGIES[model]
    other = next(name for name in StrategyName if name != model)
    twin = shaped(
        real.launch_mode,
        real.may_shrink,
        single_branch=real.single_branch,
        needs_verifier=real.needs_verifier,
        name=other,
    )
    expected = plan_query(request(model, **ponder), CONFIG, load)
    got = plan_query(request(other, **ponder), CONFIG, load, strategies=registry(twin))
    assert widths(got) == widths(expected)
    assert isinstance(got, Plan) and got.query.strategy == other


def test_a_strategy_that_may_not_shrink_branches_keeps_them_under_load() -> None:
    fixed = registry(shaped(LaunchMode.AT_ONCE))
    plan = plan_query(request(StrategyName.SELF_CONSISTENCY, branches=16), CONFIG, BUSY, fixed)
    assert widths(plan)[:2] == (16, 16)
    shrunk = plan_query(request(StrategyName.SELF_CONSISTENCY, branches=16), CONFIG, BUSY)
    assert widths(shrunk)[0] == 8


def test_a_strategy_that_needs_a_verifier_is_refused_without_one() -> None:
    strict = registry(
        shaped(LaunchMode.AT_ONCE, frozenset({Shrinkable.BRANCHES}), needs_verifier=True)
    )
    refused = plan_query(request(StrategyName.SELF_CONSISTENCY), CONFIG, strategies=strict)
    assert refused == PlanError(
        "ponder.strategy",
        "ponder.strategy=self-consistency needs a verifier, and the service has "
        "spec.strategy.verifier.type=None",
        limit="spec.strategy.verifier.type=None",
        code="strategy_needs_verifier",
    )
    verified = CONFIG.model_copy(
        update={
            "strategy": CONFIG.strategy.model_copy(
                update={"verifier": VerifierConfig(kind=VerifierKind.LOGPROB)}
            )
        }
    )
    plan = plan_query(request(StrategyName.SELF_CONSISTENCY), verified, strategies=strict)
    assert isinstance(plan, Plan) and plan.query.has_verifier


def test_a_name_missing_from_the_registry_is_an_unknown_strategy() -> None:
    only_single = registry(STRATEGIES[StrategyName.SINGLE])
    refused = plan_query(request(StrategyName.REFINE), CONFIG, strategies=only_single)
    assert isinstance(refused, PlanError)
    assert refused.message == "unknown strategy 'refine'; use one of: single"
    assert refused.code == "unknown_strategy"


@pytest.mark.parametrize(
    ("launch_mode", "finished_by_strategy", "saved"),
    [
        (LaunchMode.WAVES, True, 24),  # stopped after 8 of 32
        (LaunchMode.WAVES, False, 0),  # ran out of time or branches: nothing saved
        (LaunchMode.STEPS, True, 0),
        (LaunchMode.AT_ONCE, True, 0),
        (LaunchMode.SEQUENCE, True, 0),
    ],
)
def test_branches_saved_counts_early_stops_of_strategies_that_launch_in_waves(
    launch_mode: LaunchMode, finished_by_strategy: bool, saved: int
) -> None:
    strategies = registry(shaped(launch_mode))
    plan = plan_query(
        request(StrategyName.SELF_CONSISTENCY, branches=8), CONFIG, strategies=strategies
    )
    assert isinstance(plan, Plan)
    # At once, the plan caps the query at its first wave; give every mode the same cap of 32.
    plan = replace(plan, query=replace(plan.query, max_branches=32))
    outcome = QueryOutcome(
        plan=plan, answer=None, launched=8, finished_by_strategy=finished_by_strategy
    )
    assert branches_saved(outcome, strategies) == saved
