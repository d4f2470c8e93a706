"""What test-time compute did for one answered query, read from its outcome (pure).

These are the figures no serving stack exports, and what `ponder_*` histograms and counters
per strategy aggregate (docs/architecture.md, "Test-time-compute metrics"):

- branches to consensus: branches answered, in arrival order, until the final answer first led
  the count of answers (ties lead). 1 when the first branch already gave it; large when the
  vote was close. Unweighted, whatever weights the strategy used.
- tokens before the final answer: completion tokens of every branch result, in arrival order, up
  to and with the first branch that gave the final answer: what it cost to first see it.
- tokens saved: the plan's maximum (the budget, or every branch at its cap if that is less)
  less what the query spent, when its strategy stopped early; 0 otherwise.
- tokens after the answer: what branches generated after their answer had settled
  (overthinking), where the workers read it (the answer-probe early exit); None otherwise.
- confidence at stop: the strategy's own confidence in the answer it gave.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.scheduler.outcome import QueryOutcome, stopped_early


@dataclass(frozen=True)
class TtcReading:
    """The test-time-compute figures of one answered query."""

    stopped_early: bool
    tokens_saved: int
    branches_to_consensus: int | None
    tokens_before_final_answer: int | None
    tokens_after_answer: int | None
    confidence: float | None


def plan_maximum_tokens(outcome: QueryOutcome) -> int:
    """The most completion tokens the plan allowed the query to spend."""
    query = outcome.plan.query
    return min(query.budget_tokens, query.max_branches * query.max_tokens_per_branch)


def read_ttc(outcome: QueryOutcome) -> TtcReading | None:
    """The query's figures; None when it has no answer."""
    answer = outcome.answer
    if answer is None:
        return None
    early = stopped_early(outcome)
    saved = max(0, plan_maximum_tokens(outcome) - outcome.completion_tokens) if early else 0
    after = [b.result.tokens_after_answer for b in outcome.branches]
    known_after = [value for value in after if value is not None]
    return TtcReading(
        stopped_early=early,
        tokens_saved=saved,
        branches_to_consensus=_branches_to_lead(outcome, answer.answer),
        tokens_before_final_answer=_tokens_until_seen(outcome, answer.answer),
        tokens_after_answer=sum(known_after) if known_after else None,
        confidence=answer.confidence,
    )


def _branches_to_lead(outcome: QueryOutcome, final: str | None) -> int | None:
    if final is None:
        return None
    counts: dict[str, int] = {}
    answered = 0
    for branch in outcome.branches:
        if branch.answer is None:
            continue
        answered += 1
        counts[branch.answer] = counts.get(branch.answer, 0) + 1
        if counts.get(final, 0) == max(counts.values()):
            return answered
    return None


def _tokens_until_seen(outcome: QueryOutcome, final: str | None) -> int | None:
    if final is None:
        return None
    spent = 0
    for branch in outcome.branches:
        spent += branch.result.completion_tokens
        if branch.answer == final:
            return spent
    return None
