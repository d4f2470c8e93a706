"""`make_strategy`, and what every strategy guarantees whatever the branches return."""

from __future__ import annotations

import random

import pytest

from ponder.api.service_config import BeamConfig, BudgetForcingConfig
from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchStatus
from ponder.scheduler.strategies import STRATEGIES, make_strategy
from ponder.scheduler.strategies.base import BranchRequest, Strategy
from tests.unit.recorded_branches import FAILED, Reply, Respond, drive_query, in_order, planned


@pytest.mark.parametrize("name", list(StrategyName))
def test_every_strategy_name_has_a_strategy(name: StrategyName) -> None:
    strategy = make_strategy(planned(name))
    assert isinstance(strategy, Strategy)
    assert strategy.name == name
    assert set(STRATEGIES) == set(StrategyName)


def chaos(seed: int) -> Respond:
    """Seeded replies of every kind: failures, cancellations, long and empty texts, scores."""
    rng = random.Random(seed)
    statuses = [BranchStatus.COMPLETED] * 6 + [
        BranchStatus.FAILED,
        BranchStatus.CANCELLED,
        BranchStatus.EXPIRED,
    ]
    texts = ["#1", "#2", "a=1", "", "Final Answer: 3", r"\boxed{2}", "x=1\ny=2"]

    def respond(_request: BranchRequest, _index: int) -> Reply:
        return Reply(
            text=rng.choice(texts),
            tokens=rng.randint(0, 300),
            status=rng.choice(statuses),
            finish_reason=rng.choice(["stop", "stop", "length"]),
            score=rng.choice([None, rng.random(), 0.995]),
            mean_logprob=rng.choice([None, -rng.random() * 3]),
        )

    return respond


@pytest.mark.parametrize("name", list(StrategyName))
@pytest.mark.parametrize("seed", range(12))
def test_budget_and_branch_cap_hold_whatever_the_branches_return(
    name: StrategyName, seed: int
) -> None:
    rng = random.Random(seed)
    query = planned(
        name,
        branches=rng.randint(1, 6),
        max_branches=rng.randint(6, 24),
        budget_tokens=rng.randint(50, 3000),
        max_tokens_per_branch=rng.randint(10, 400),
        temperature=rng.choice([0.0, 0.7]),
        wave_size=rng.randint(1, 5),
        has_verifier=rng.random() < 0.5,
        beam=BeamConfig(width=rng.randint(1, 3), expansions=rng.randint(1, 3), max_steps=4),
        budget_forcing=BudgetForcingConfig(min_thinking_tokens=rng.randint(0, 300), max_waits=2),
    )
    run = drive_query(query, chaos(seed))  # the driver asserts the budget and the cap
    assert run.spent_tokens <= query.budget_tokens
    assert run.launched <= query.max_branches
    if run.final is not None:
        assert isinstance(run.final.text, str)
        assert run.final.answer is None or run.final.answer == run.final.answer.strip()


@pytest.mark.parametrize("name", list(StrategyName))
def test_only_failed_branches_leave_no_answer(name: StrategyName) -> None:
    run = drive_query(planned(name, max_branches=8), in_order(*[FAILED] * 64))
    assert run.final is None


@pytest.mark.parametrize("name", list(StrategyName))
def test_best_so_far_is_none_before_anything_finished(name: StrategyName) -> None:
    strategy = make_strategy(planned(name))
    assert strategy.begin()
    assert strategy.best_so_far() is None
