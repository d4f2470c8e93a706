"""`beam-search`: step-wise search guided by a process reward model (PRM).

Each step expands every kept beam with K continuations that stop at the step delimiter
(`BranchRequest.continuation` = the beam's text so far, `stop` = the delimiter), has the runner
score each partial solution (`ScoreMode.STEP`), and keeps the top B by that score. The first
step expands the empty root into B x K continuations, so every step launches at most B x K
branches (the per-step budget of Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally
can be More Effective than Scaling Model Parameters", whose PRM beam search this follows; the
beam is ranked by its last step's score, their "last" aggregation).

A candidate finishes its beam when an answer can be extracted from it, or when it added nothing
(the model ended right away: vLLM reports an EOS and a stop string alike as finish_reason "stop",
so an empty step is how a finished solution shows). The search stops when B beams have
finished with an answer, no beam is left, `max_steps` is reached, or the budget or the branch cap
cannot pay for another step; the answer is the best finished beam (else the best partial one).
Without a verifier the step score is exp(mean token logprob) of the step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.api.strategy import StrategyName
from ponder.api.wire import MAX_STOP_STRINGS
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
from ponder.scheduler.strategies.voting import branch_strength


@dataclass(frozen=True)
class Beam:
    """A partial (or finished) solution: its text and the score of its last step."""

    text: str
    score: float
    answer: str | None = None
    steps: int = 0
    finish_reason: str = "stop"
    prefix: str = ""  # what the next step continues: text + delimiter, or text if cut mid-step


class BeamSearch(Strategy):
    """PRM-guided beam search with width B (`beam.width`) and K expansions per beam."""

    name = StrategyName.BEAM_SEARCH
    launch_mode = LaunchMode.STEPS
    single_branch = False
    needs_verifier = False
    may_shrink = frozenset({Shrinkable.STEPS})
    may_exit_early = False

    def __init__(self, query: PlannedQuery) -> None:
        super().__init__(query)
        self.ledger = BranchLedger(query.budget_tokens, query.max_branches)
        self.delimiter = query.beam.step_delimiter
        self.active: list[Beam] = [Beam(text="", score=0.0)]
        self.finished: list[Beam] = []
        self.step = 0
        self.parents: dict[str, Beam] = {}  # request tag -> the beam it expands
        self.candidates: list[tuple[Beam, ScoredBranch]] = []

    def begin(self) -> list[BranchRequest]:
        return self._expand()

    def on_branch(self, branch: ScoredBranch) -> Decision:
        self.ledger.settle(branch)
        parent = self.parents.get(branch.request.tag)
        if parent is not None and branch.completed:
            self.candidates.append((parent, branch))
        if self.ledger.outstanding > 0:
            return Wait()  # prune only once the whole step is in
        self._prune()
        requests = [] if self._done() else self._expand()
        if requests:
            return Launch(tuple(requests))
        answer = self.best_so_far()
        return Finish(answer) if answer else Wait()

    def best_so_far(self) -> FinalAnswer | None:
        pool = [b for b in self.finished if b.answer is not None] or self.finished or self.active
        pool = [b for b in pool if b.steps > 0]
        if not pool:
            return None
        best = max(pool, key=lambda b: b.score)  # the first of equals: `max` keeps it
        answered = [b for b in self.finished if b.answer is not None]
        votes: dict[str, float] = {}
        for beam in answered:
            votes[beam.answer or ""] = votes.get(beam.answer or "", 0.0) + 1.0
        return FinalAnswer(
            text=best.text,
            answer=best.answer,
            confidence=best.score,
            votes=votes,
            scores=[b.score for b in answered],
            finish_reason=best.finish_reason,
        )

    def _done(self) -> bool:
        answered = sum(1 for b in self.finished if b.answer is not None)
        width = self.query.beam.width
        return answered >= width or not self.active or self.step >= self.query.beam.max_steps

    def _expand(self) -> list[BranchRequest]:
        """One step: K continuations of every kept beam (B x K of the root), all or nothing
        of the budget's share, best beams first when the branch cap runs short."""
        per_beam = self.query.beam.expansions
        if self.step == 0:
            per_beam *= self.query.beam.width
        wanted = min(per_beam * len(self.active), self.ledger.branches_left)
        if wanted < 1:
            return []
        max_tokens = min(self.query.max_tokens_per_branch, self.ledger.available_tokens // wanted)
        if max_tokens < 1:
            return []
        stop = (self.delimiter, *(s for s in self.query.stop if s != self.delimiter))
        requests: list[BranchRequest] = []
        self.parents.clear()
        for index, beam in enumerate(self.active):
            request = self.ledger.launch(
                BranchRequest(
                    n=per_beam,
                    max_tokens=max_tokens,
                    tag=f"step-{self.step}/beam-{index}",
                    continuation=beam.prefix,
                    stop=stop[:MAX_STOP_STRINGS],
                    score=ScoreMode.STEP,
                    logprobs=True,  # the step's score when no verifier is configured
                )
            )
            if request is None:
                break
            self.parents[request.tag] = beam
            requests.append(request)
        self.step += 1
        return requests

    def _prune(self) -> None:
        """Move finished candidates aside; keep the top B of the rest as the next beams."""
        if not self.candidates:
            return  # the whole step failed: the same beams try again while budget lasts
        growing: list[Beam] = []
        for parent, branch in self.candidates:
            added = bool(branch.result.text.strip())
            finish_reason = branch.result.finish_reason or "stop"
            # A step cut by max_tokens goes on mid-step; one that hit the delimiter starts anew.
            separator = "" if finish_reason == "length" else self.delimiter
            beam = Beam(
                text=branch.full_text if added else parent.text,
                score=branch_strength(branch),
                answer=branch.answer,
                steps=parent.steps + int(added),
                finish_reason=finish_reason,
                prefix=branch.full_text + separator,
            )
            if branch.answer is not None or not added:
                self.finished.append(beam)
            else:
                growing.append(beam)
        self.candidates.clear()
        ranked = sorted(enumerate(growing), key=lambda pair: (-pair[1].score, pair[0]))
        self.active = [beam for _, beam in ranked[: self.query.beam.width]]
