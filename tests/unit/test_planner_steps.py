"""The planner's steps one by one: who shares the budget, what the budget and the load grant,
how many waves fit, and the cap on the total."""

from __future__ import annotations

import pytest

from ponder.api.service_config import BeamConfig, ServiceConfig, StrategyDefaults
from ponder.api.strategy import StrategyName
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.planner import (
    ValidRequest,
    Width,
    budget_sharers,
    cap_total,
    expected_branch_seconds,
    fit_to_budget,
    fit_to_load,
    waves_within_deadline,
)
from ponder.scheduler.strategies import STRATEGIES
from ponder.scheduler.strategies.base import Strategy

SC = STRATEGIES[StrategyName.SELF_CONSISTENCY]  # at once, may shrink branches
ADAPTIVE = STRATEGIES[StrategyName.ADAPTIVE_CONSISTENCY]  # waves, may shrink branches and waves
BEAM = STRATEGIES[StrategyName.BEAM_SEARCH]  # steps, may shrink steps
REFINE = STRATEGIES[StrategyName.REFINE]  # in sequence, may shrink branches
SINGLE = STRATEGIES[StrategyName.SINGLE]  # one branch, nothing to shrink

CONFIG = ServiceConfig(
    name="math",
    model="tiny",
    strategy=StrategyDefaults(max_branches=32, beam=BeamConfig(width=2, expansions=3, max_steps=4)),
    slots_per_worker=8,
)
IDLE = LoadSnapshot(0, workers=1, seconds_per_token=0.01, mean_completion_tokens=100)
BUSY = LoadSnapshot(56, workers=2, seconds_per_token=0.01, mean_completion_tokens=100)


def valid(
    strategy: type[Strategy],
    branches: int = 8,
    max_branches: int = 32,
    budget_tokens: int = 4096,
    max_tokens_per_branch: int = 128,
    deadline_ms: int = 5000,
) -> ValidRequest:
    return ValidRequest(
        strategy=strategy,
        branches=branches,
        max_branches=max_branches,
        budget_tokens=budget_tokens,
        max_tokens_per_branch=max_tokens_per_branch,
        deadline_ms=deadline_ms,
        temperature=0.7,
        top_p=1.0,
        confidence=0.9,
    )


@pytest.mark.parametrize(
    ("strategy", "branches", "max_branches", "sharers"),
    [
        (SC, 8, 32, 8),  # at once: the branches asked for
        (REFINE, 8, 32, 8),
        (ADAPTIVE, 8, 32, 32),  # waves: every branch it may launch
        (BEAM, 8, 32, 6),  # steps: one step of width x expansions
        (BEAM, 8, 4, 4),  # ... within the branch limit
    ],
)
def test_budget_sharers(
    strategy: type[Strategy], branches: int, max_branches: int, sharers: int
) -> None:
    assert budget_sharers(strategy, branches, max_branches, CONFIG) == sharers


@pytest.mark.parametrize(
    ("request_", "width"),
    [
        (valid(SC), Width(8, 32)),
        # 1000 // 128 = 7 full-length branches fit the budget.
        (
            valid(SC, budget_tokens=1000),
            Width(7, 7, "budget: 8 branches x 128 tokens exceed budget_tokens=1000, granted 7"),
        ),
        (
            valid(ADAPTIVE, budget_tokens=1000),
            Width(7, 7, "budget: 8 branches x 128 tokens exceed budget_tokens=1000, granted 7"),
        ),
        (valid(ADAPTIVE, branches=4, budget_tokens=1000), Width(4, 7)),
        # Steps: the step width, and no more than max_steps steps; the budget does not count.
        (valid(BEAM, budget_tokens=100), Width(6, 24)),
        (valid(BEAM, max_branches=10, budget_tokens=100), Width(6, 10)),
        (valid(SINGLE, branches=1, max_branches=1, budget_tokens=10), Width(1, 1)),
    ],
)
def test_fit_to_budget(request_: ValidRequest, width: Width) -> None:
    assert fit_to_budget(request_, CONFIG) == width


@pytest.mark.parametrize(
    ("request_", "load", "before", "after"),
    [
        # Cold start: nothing observed, nothing changes.
        (valid(SC, branches=16), LoadSnapshot(1000), Width(16, 32), Width(16, 32)),
        # 56 outstanding on 16 slots: int(5 * 0.8 / 1) = 4 rounds -> 64 - 56 = 8 branches.
        (
            valid(SC, branches=16),
            BUSY,
            Width(16, 32),
            Width(
                8,
                32,
                "load: 56 branches outstanding on 16 slots at ~1s per branch; 16 branches "
                "would miss deadline_ms=5000, granted 8",
            ),
        ),
        # Nothing to shrink: a single branch stays one.
        (valid(SINGLE, branches=1), BUSY, Width(1, 1), Width(1, 1)),
        # Waves of 4 on 8 slots take ~1 s; int(2.6 * 0.8 / 1) = 2 waves fit.
        (valid(ADAPTIVE, branches=4, deadline_ms=2600), IDLE, Width(4, 32), Width(4, 8)),
        # In sequence: no wave bound, only the width.
        (valid(REFINE, branches=4, deadline_ms=2600), IDLE, Width(4, 32), Width(4, 32)),
        # Steps keep their width; fewer steps fit: int(1.3 * 0.8 / 1) = 1.
        (valid(BEAM, deadline_ms=1300), IDLE, Width(6, 24), Width(6, 6)),
        # A budget's reason stays when the load grants as much.
        (valid(SC), IDLE, Width(7, 7, "budget: x"), Width(7, 7, "budget: x")),
    ],
)
def test_fit_to_load(
    request_: ValidRequest, load: LoadSnapshot, before: Width, after: Width
) -> None:
    assert fit_to_load(request_, before, load, CONFIG) == after


@pytest.mark.parametrize(
    ("strategy", "before", "after"),
    [
        (SC, Width(8, 32), Width(8, 8)),  # at once: the first wave is all
        (ADAPTIVE, Width(8, 32), Width(8, 32)),
        (REFINE, Width(8, 32), Width(8, 32)),
        (ADAPTIVE, Width(8, 4), Width(8, 8)),  # never below the first wave
        (BEAM, Width(6, 6, "why"), Width(6, 6, "why")),
    ],
)
def test_cap_total(strategy: type[Strategy], before: Width, after: Width) -> None:
    assert cap_total(strategy, before) == after


@pytest.mark.parametrize(
    ("wave_size", "slots", "branch_seconds", "deadline_seconds", "waves"),
    [
        (4, 8, 1.0, 2.6, 2),  # one round per wave: int(2.6 * 0.8) = 2
        (16, 8, 1.0, 2.6, 1),  # two rounds per wave: int(2.08 / 2) = 1
        (8, 8, 1.0, 10.0, 8),
        (8, 8, 5.0, 1.0, 1),  # not even one fits: the first wave still runs
    ],
)
def test_waves_within_deadline(
    wave_size: int, slots: int, branch_seconds: float, deadline_seconds: float, waves: int
) -> None:
    assert waves_within_deadline(wave_size, slots, branch_seconds, deadline_seconds) == waves


@pytest.mark.parametrize(
    ("load", "max_tokens_per_branch", "seconds"),
    [
        (LoadSnapshot(), 128, None),  # unobserved
        (LoadSnapshot(seconds_per_token=0.0), 128, None),  # an instant engine tells nothing
        (LoadSnapshot(seconds_per_token=0.01), 128, 1.28),  # the cap, without a mean length
        (LoadSnapshot(seconds_per_token=0.01, mean_completion_tokens=50), 128, 0.5),
        (LoadSnapshot(seconds_per_token=0.01, mean_completion_tokens=500), 128, 1.28),
        (LoadSnapshot(seconds_per_token=0.01, mean_completion_tokens=0.2), 128, 0.01),
    ],
)
def test_expected_branch_seconds(
    load: LoadSnapshot, max_tokens_per_branch: int, seconds: float | None
) -> None:
    expected = expected_branch_seconds(load, max_tokens_per_branch)
    assert expected == (None if seconds is None else pytest.approx(seconds))
