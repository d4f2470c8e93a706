"""`single`: one branch, answered as it is."""

from __future__ import annotations

from ponder.api.strategy import StrategyName
from tests.unit.recorded_branches import FAILED, Reply, drive_query, in_order, planned


def test_single_launches_one_branch_and_answers_with_its_text() -> None:
    run = drive_query(planned(StrategyName.SINGLE, temperature=0.0), in_order("23+48=71 #71"))
    assert run.launch_sizes == [1]
    assert run.begun[0].temperature is None  # the query's temperature: greedy at 0
    assert run.finished and run.final is not None
    assert (run.final.text, run.final.answer) == ("23+48=71 #71", "71")


def test_single_answers_text_without_an_extractable_answer() -> None:
    run = drive_query(planned(StrategyName.SINGLE), in_order("Paris is the capital"))
    assert run.final is not None
    assert (run.final.text, run.final.answer) == ("Paris is the capital", None)


def test_single_failed_branch_leaves_nothing_to_answer() -> None:
    run = drive_query(planned(StrategyName.SINGLE), in_order(FAILED))
    assert not run.finished and run.final is None


def test_single_branch_fits_a_budget_below_the_per_branch_cap() -> None:
    run = drive_query(
        planned(StrategyName.SINGLE, budget_tokens=30, max_tokens_per_branch=100),
        in_order(Reply("1+1=2 #2", tokens=500)),
    )
    assert run.begun[0].max_tokens == 30
    assert run.spent_tokens == 30
    assert run.final is not None and run.final.finish_reason == "length"
