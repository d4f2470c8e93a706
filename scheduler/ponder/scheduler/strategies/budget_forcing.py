"""`budget-forcing`: control how long one chain thinks (s1).

Muennighoff et al. 2025, "s1: Simple test-time scaling": when the model would stop thinking
before a minimum, suppress the stop and append "Wait" so it keeps reasoning (and often corrects
itself); when thinking reaches the cap, cut it off and force the answer by appending an answer
prompt ("Final Answer:") and letting the model write only a few more tokens.

Here one chain is one sequence of branches, each continuing the last
(`continuation` = the chain's text so far + wait_token). The thinking cap is
`max_tokens_per_branch` tokens over the whole chain, less what the forced answer needs when the
query's budget is tighter; the forced answer is kept in reserve, so it always fits the budget.
A chain that stops on its own at or past `min_thinking_tokens` (or out of waits) answers as it
is when its last branch wrote an answer, and is forced to answer otherwise. A forced answer that
writes nothing (a chat model may end its turn at once) falls back to the answer in the chain.

On the chat endpoint the continuation is the final assistant message, which the engine continues
in the same turn (no end of turn and new assistant header before the "Wait" or answer prompt).
"""

from __future__ import annotations

from ponder.api.answers import extract_answer, numeric_answer
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
    Shrinkable,
    Strategy,
    Wait,
)
from ponder.scheduler.strategies.ledger import BranchLedger

FORCED_ANSWER_TOKENS = 32
THINK, ANSWER = "think", "answer"


def append_text(text: str, addition: str) -> str:
    """`text` followed by `addition` on a new line (no blank line when text ends in one)."""
    if not text or text[-1].isspace():
        return text + addition
    return f"{text}\n{addition}"


class BudgetForcing(Strategy):
    """s1 budget forcing over a single chain."""

    name = StrategyName.BUDGET_FORCING
    launch_mode = LaunchMode.SEQUENCE
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.BRANCHES})
    may_exit_early = False

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.config = query.budget_forcing
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.answer_tokens = max(1, min(FORCED_ANSWER_TOKENS, query.budget_tokens // 2))
        self.thinking_cap = max(
            1, min(query.max_tokens_per_branch, query.budget_tokens - self.answer_tokens)
        )
        self.thinking_tokens = 0
        self.waits = 0
        self.chain: ScoredBranch | None = None  # the latest completed thinking branch
        self.forced: FinalAnswer | None = None

    def begin(self) -> list[BranchRequest]:
        request = self._think("")
        return [request] if request else []

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        phase = branch.request.tag.split("-")[0]
        if phase == THINK:
            self.thinking_tokens += branch.result.completion_tokens
        if branch.result.status == BranchStatus.FAILED:
            # An engine error: the same turn again while the budget lasts.
            if phase == THINK:
                retry = self._think(branch.request.continuation)
            else:
                retry = self.ledger.launch(branch.request)
            return Launch((retry,)) if retry else self._finish()
        if not branch.completed:
            return self._finish()  # cancelled or expired: out of time
        if phase == ANSWER:
            self.forced = self._forced_answer(branch)
            return self._finish()
        self.chain = branch
        return self._after_thinking(branch)

    def best_so_far(self) -> FinalAnswer | None:
        if self.forced is not None:
            return self.forced
        if self.chain is None:
            return None
        return FinalAnswer(
            text=self.chain.full_text,
            answer=self.chain.answer,
            votes={self.chain.answer: 1.0} if self.chain.answer is not None else {},
            finish_reason=self.chain.result.finish_reason or "stop",
        )

    def _after_thinking(self, branch: ScoredBranch) -> Decision:
        left = self.thinking_cap - self.thinking_tokens
        at_cap = branch.result.finish_reason == "length" or left < 1
        too_short = self.thinking_tokens < self.config.min_thinking_tokens
        if not at_cap and too_short and self.waits < self.config.max_waits:
            think = self._think(append_text(branch.full_text, self.config.wait_token))
            if think is not None:
                self.waits += 1
                return Launch((think,))
        # After a Wait, only an answer restated in the new thinking counts as the model's last
        # word; otherwise the answer is forced, as s1 does.
        if not at_cap and self._answer_in(branch.result.text) is not None:
            return self._finish()
        force = self._force(branch.full_text)
        return Launch((force,)) if force else self._finish()

    def _answer_in(self, text: str) -> str | None:
        return extract_answer(text, self.query.extractor, self.query.answer_pattern)

    def _think(self, continuation: str) -> BranchRequest | None:
        """A thinking branch within the cap, keeping the forced answer's tokens in reserve."""
        room = min(
            self.thinking_cap - self.thinking_tokens,
            self.ledger.available_tokens - self.answer_tokens,
        )
        if room < 1:
            return None
        return self.ledger.launch(
            BranchRequest(
                n=1, max_tokens=room, tag=f"{THINK}-{self.waits}", continuation=continuation
            )
        )

    def _force(self, text: str) -> BranchRequest | None:
        return self.ledger.launch(
            BranchRequest(
                n=1,
                max_tokens=self.answer_tokens,
                tag=f"{ANSWER}-{self.waits}",
                continuation=append_text(text, self.config.answer_prompt),
                streams_answer=True,  # a forced answer that completes is the query's answer
            )
        )

    def _forced_answer(self, branch: ScoredBranch) -> FinalAnswer:
        """The forced answer: extracted from answer prompt + the few tokens written after it,
        else the first line written when it is a number alone, else the answer the thinking
        gave: a well-formed answer or none, never whatever text followed the prompt."""
        written = self.config.answer_prompt + branch.result.text
        lines = [line for line in branch.result.text.splitlines() if line.strip()]
        answer = self._answer_in(written) or (numeric_answer(lines[0]) if lines else None)
        if not answer and self.chain is not None:
            # A chat model often ends its turn right after the answer prompt (measured on
            # SmolLM2-135M-Instruct: "...\nFinal Answer:" then end of turn in half the forced
            # answers); what the chain itself stated is then the best answer left.
            answer = self.chain.answer
        return FinalAnswer(
            text=branch.full_text,
            answer=answer or None,
            votes={answer: 1.0} if answer else {},
            finish_reason="stop",
        )

    def _finish(self) -> Decision:
        answer = self.best_so_far()
        return Finish(answer) if answer else Wait()
