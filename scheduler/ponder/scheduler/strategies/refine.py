"""`refine`: draft, critique, revise, until the verifier passes or the budget ends.

Madaan et al. 2023, "Self-Refine: Iterative Refinement with Self-Feedback" (NeurIPS): the same
model drafts a solution, critiques it, and revises it in the light of the critique. Drafts and
revisions are scored by the verifier (`ScoreMode.FINAL`); the loop stops when one scores at
least the service's `accept_score` (`verifier.accept_score`), or when the budget or the branch
cap cannot pay for another critique and revision, and answers with the best-scored attempt
(the latest among equals). Without a verifier there is no signal to iterate on, so it runs one
critique and one revision and answers with the revision.

Critique and revision turns are whole new prompts (`BranchRequest.prompt_override`) that restate
the question and the previous attempt, so they read the same on both endpoints: the runner sends
the override as the prompt on the completions endpoint and, on the chat endpoint, as one new
user message after the query's system messages (the earlier turns are restated in it, and two
user turns in a row would break chat templates that insist on alternation).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchStatus
from ponder.scheduler.strategies.base import (
    BranchRequest,
    Decision,
    FinalAnswer,
    Finish,
    Launch,
    LaunchMode,
    PlannedQuery,
    ScoredBranch,
    ScoreMode,
    Shrinkable,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger

CRITIQUE_PROMPT = (
    "{question}\n\n"
    "Proposed solution:\n{attempt}\n\n"
    "Check the proposed solution step by step and point out every mistake. "
    "If it is correct, say so.\n"
    "Review:"
)
REVISE_PROMPT = (
    "{question}\n\n"
    "Proposed solution:\n{attempt}\n\n"
    "Review:\n{critique}\n\n"
    "Write a corrected solution that ends with the final answer in the same format.\n"
    "Solution:"
)

DRAFT, CRITIQUE, REVISE = "draft", "critique", "revise"


def critique_prompt(question: str, attempt: str) -> str:
    """The prompt that asks the model to review `attempt`."""
    return CRITIQUE_PROMPT.format(question=question.strip(), attempt=attempt.strip())


def revise_prompt(question: str, attempt: str, critique: str) -> str:
    """The prompt that asks the model to rewrite `attempt` in the light of `critique`."""
    return REVISE_PROMPT.format(
        question=question.strip(), attempt=attempt.strip(), critique=critique.strip()
    )


@dataclass(frozen=True)
class Attempt:
    """A draft or revision and its verifier score."""

    branch: ScoredBranch
    round: int


class Refine(Strategy):
    """One branch at a time: draft -> critique -> revise -> critique -> ..."""

    name = StrategyName.REFINE
    launch_mode = LaunchMode.SEQUENCE
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES})
    may_exit_early = False

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.attempts: list[Attempt] = []
        self.rounds = 0  # revisions launched

    def begin(self) -> list[BranchRequest]:
        draft = self._launch(DRAFT, None, score=True)
        return [draft] if draft else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        phase = branch.request.tag.split("-")[0]
        if branch.result.status == BranchStatus.FAILED:
            # An engine error: try the same turn again while the budget lasts.
            retry = self.ledger.launch(branch.request)
            return Launch((retry,)) if retry else self._finish()
        if not branch.completed:
            return self._finish()  # cancelled or expired: the query is out of time
        if phase == CRITIQUE:
            attempt = self._latest().branch.full_text
            revise = self._launch(
                REVISE,
                revise_prompt(self.query.question, attempt, branch.full_text),
                score=True,
            )
            return Launch((revise,)) if revise else self._finish()
        self.attempts.append(Attempt(branch, self.rounds))
        if self._passed(branch) or (not self.query.has_verifier and self.rounds >= 1):
            return self._finish()
        critique = self._launch(
            CRITIQUE, critique_prompt(self.query.question, branch.full_text), score=False
        )
        return Launch((critique,)) if critique else self._finish()

    def best_so_far(self) -> FinalAnswer | None:
        if not self.attempts:
            return None
        if self.query.has_verifier:
            best = max(self.attempts, key=lambda a: (a.branch.score or 0.0, a.round))
        else:
            best = self.attempts[-1]
        return FinalAnswer(
            text=best.branch.full_text,
            answer=best.branch.answer,
            confidence=best.branch.score,
            votes={best.branch.answer: 1.0} if best.branch.answer is not None else {},
            scores=[a.branch.score for a in self.attempts if a.branch.score is not None],
            finish_reason=best.branch.result.finish_reason or "stop",
        )

    def _passed(self, branch: ScoredBranch) -> bool:
        return self.query.has_verifier and (branch.score or 0.0) >= self.query.accept_score

    def _latest(self) -> Attempt:
        return self.attempts[-1]

    def _finish(self) -> Decision:
        answer = self.best_so_far()
        return Finish(answer) if answer else Wait()

    def _launch(
        self, phase: str, prompt_override: str | None, *, score: bool
    ) -> BranchRequest | None:
        round_ = self.rounds + (phase == REVISE)
        request = self.ledger.launch(
            BranchRequest(
                n=1,
                max_tokens=self.query.max_tokens_per_branch,
                tag=f"{phase}-{round_}",
                prompt_override=prompt_override,
                score=ScoreMode.FINAL if score and self.query.has_verifier else ScoreMode.NONE,
                # Without a verifier the first revision is the answer; with one, any attempt
                # may score best, so none is known to be the answer while it generates.
                streams_answer=phase == REVISE and not self.query.has_verifier,
            )
        )
        if request is not None:
            self.rounds = round_
        return request
