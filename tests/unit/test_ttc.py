"""What test-time compute did for one query (ponder.scheduler.ttc), table by table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchResult, BranchStatus
from ponder.scheduler.outcome import QueryOutcome
from ponder.scheduler.planner import Plan
from ponder.scheduler.strategies.base import BranchRequest, FinalAnswer, ScoredBranch
from ponder.scheduler.ttc import plan_maximum_tokens, read_ttc
from tests.unit.recorded_branches import planned


def branch(
    answer: str | None,
    tokens: int,
    status: BranchStatus = BranchStatus.COMPLETED,
    answer_tokens: int | None = None,
) -> ScoredBranch:
    result = BranchResult(
        query_id="q1",
        job_id="q1-j0",
        branch_id="q1-b",
        status=status,
        text=f"#{answer}" if answer else "",
        prompt_tokens=5,
        completion_tokens=tokens,
        worker_id="w1",
        answer_tokens=answer_tokens,
    )
    return ScoredBranch(request=BranchRequest(n=1, max_tokens=100), result=result, answer=answer)


def outcome(
    answers: list[str | None],
    final: str | None = "3",
    *,
    tokens: int = 10,
    finished_by_strategy: bool = True,
    deadline_exceeded: bool = False,
    max_branches: int = 8,
    budget_tokens: int = 4000,
    confidence: float | None = 0.8,
) -> QueryOutcome:
    query = planned(
        StrategyName.ADAPTIVE_CONSISTENCY,
        branches=2,
        max_branches=max_branches,
        budget_tokens=budget_tokens,
        wave_size=2,
    )
    return QueryOutcome(
        plan=Plan(query=query, deadline_ms=1000, branches_per_job=2, requested_branches=8),
        answer=FinalAnswer(text=f"#{final}", answer=final, confidence=confidence),
        branches=[branch(answer, tokens) for answer in answers],
        launched=len(answers),
        finished_by_strategy=finished_by_strategy,
        deadline_exceeded=deadline_exceeded,
    )


@pytest.mark.parametrize(
    ("answers", "final", "expected"),
    [
        (["3"], "3", 1),  # the first branch already gave it
        (["3", "3", "3"], "3", 1),
        (["4", "3"], "3", 2),  # a tie leads
        (["4", "4", "3", "3"], "3", 4),
        (["4", "4", "3", "3", "3"], "3", 4),
        ([None, "3"], "3", 1),  # branches without an answer do not count
        (["4", None, "4", "3", "3", "3"], "3", 4),  # the tie at the fourth answer
        (["4", "4"], "3", None),  # the final answer never led (a verifier chose it, say)
        (["4", "4", "3"], None, None),  # no final answer to find
        (["4", "4", "4", "3"], "3", None),  # seen, but never leading
    ],
)
def test_branches_to_consensus_counts_answered_branches_until_the_final_answer_first_leads(
    answers: list[str | None], final: str | None, expected: int | None
) -> None:
    reading = read_ttc(outcome(answers, final))
    assert reading is not None
    assert reading.branches_to_consensus == expected


@pytest.mark.parametrize(
    ("answers", "final", "expected"),
    [
        (["3"], "3", 10),
        (["4", "3", "3"], "3", 20),
        ([None, None, "4", "3"], "3", 40),  # every branch's tokens count, answered or not
        (["4", "4"], "3", None),
        (["3"], None, None),
    ],
)
def test_tokens_before_the_final_answer_count_every_branch_up_to_its_first_sight(
    answers: list[str | None], final: str | None, expected: int | None
) -> None:
    reading = read_ttc(outcome(answers, final))
    assert reading is not None
    assert reading.tokens_before_final_answer == expected


@pytest.mark.parametrize(
    ("fields", "early", "saved"),
    [
        # 3 of 8 branches at 10 tokens; the plan allowed 8 x 100 (under the 4000 budget).
        ({}, True, 800 - 30),
        ({"budget_tokens": 500}, True, 500 - 30),  # the budget is the lower ceiling
        ({"finished_by_strategy": False}, False, 0),  # ran to its cap, or was cut
        ({"deadline_exceeded": True}, False, 0),  # the deadline stopped it, not the strategy
        ({"max_branches": 3}, False, 0),  # every branch completed: nothing stopped early
        ({"tokens": 400, "budget_tokens": 1000}, True, 0),  # never negative
    ],
)
def test_tokens_saved_are_the_plans_maximum_less_what_was_spent_only_when_stopped_early(
    fields: dict[str, int | bool], early: bool, saved: int
) -> None:
    reading = read_ttc(outcome(["3", "3", "3"], "3", **fields))  # type: ignore[arg-type]
    assert reading is not None
    assert (reading.stopped_early, reading.tokens_saved) == (early, saved)


def test_plan_maximum_is_the_budget_or_every_branch_at_its_cap_whichever_is_less() -> None:
    assert plan_maximum_tokens(outcome([], max_branches=8, budget_tokens=4000)) == 800
    assert plan_maximum_tokens(outcome([], max_branches=8, budget_tokens=300)) == 300


def test_tokens_after_the_answer_sum_the_branches_that_read_it_and_none_when_none_did() -> None:
    read = outcome(["3", "3"], "3")
    read.branches[0] = branch("3", 50, answer_tokens=20)  # 30 after its answer settled
    read.branches[1] = branch("3", 40, answer_tokens=40)  # stopped at once
    unread = outcome(["3", "3"], "3")
    reading, unread_reading = read_ttc(read), read_ttc(unread)
    assert reading is not None and unread_reading is not None
    assert reading.tokens_after_answer == 30
    assert unread_reading.tokens_after_answer is None


def test_confidence_is_the_strategys_own_and_no_answer_reads_nothing() -> None:
    reading = read_ttc(outcome(["3"], "3", confidence=0.625))
    assert reading is not None and reading.confidence == 0.625
    unanswered = replace(outcome(["3"]), answer=None)
    assert read_ttc(unanswered) is None
