"""What a query does while it runs, as events for a streamed response (pure, no I/O).

The runner emits them as they happen; `sse.py` renders them as chunks (README, "Streaming"):
- `WaveLaunched`: a launch's jobs were queued (the first, and each later wave or turn);
- `BranchFinished`: a branch's result arrived, whatever its status;
- `Leader`: the strategy's best answer so far, or its confidence, changed;
- `AnswerText`: more of the answer's text: live while the branch that answers generates, or
  all of it as soon as the strategy finishes (a vote stops);
- `AnswerReset`: the answer is not the text streamed so far (the streamed branch failed, and
  the strategy answered with other text): the whole answer, once.

`AnswerStream` decides which text goes out, so that what was sent is always a prefix of the
answer unless an `AnswerReset` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.scheduler.strategies.base import ScoredBranch


@dataclass(frozen=True)
class WaveLaunched:
    wave: int
    branches: int
    launched: int  # branches launched so far, this wave included


@dataclass(frozen=True)
class BranchFinished:
    branch_id: str
    status: str
    answer: str | None
    score: float | None
    completion_tokens: int
    finished: int  # branch results received so far, this one included
    launched: int


@dataclass(frozen=True)
class Leader:
    answer: str | None
    confidence: float | None
    votes: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerText:
    text: str


@dataclass(frozen=True)
class AnswerReset:
    text: str


ProgressEvent = WaveLaunched | BranchFinished | Leader | AnswerText | AnswerReset
ProgressSink = Callable[[ProgressEvent], None]


def branch_finished(branch: ScoredBranch, finished: int, launched: int) -> BranchFinished:
    """The event of `branch`'s result, the `finished`-th of `launched` so far."""
    result = branch.result
    return BranchFinished(
        branch_id=result.branch_id,
        status=result.status.value,
        answer=branch.answer,
        score=branch.score,
        completion_tokens=result.completion_tokens,
        finished=finished,
        launched=launched,
    )


def leader_changed(previous: Leader | None, current: Leader) -> bool:
    """Whether `current` is news: another answer or another confidence (votes alone that grow
    for the same leader are not)."""
    if previous is None:
        return current.answer is not None or current.confidence is not None
    return (previous.answer, previous.confidence) != (current.answer, current.confidence)


@dataclass
class AnswerStream:
    """The answer text sent so far, and the branch whose text is streaming live (if any)."""

    sent: str = ""
    live_branch: str | None = None
    diverged: bool = False  # a live text stopped being the answer's: nothing more goes live

    def start(self, branch_id: str, continuation: str) -> list[ProgressEvent]:
        """A branch whose `continuation + text` will be the answer starts: send its
        continuation now (past what was sent), its text as it comes."""
        if self.diverged or not continuation.startswith(self.sent):
            self.diverged = True
            self.live_branch = None
            return []
        self.live_branch = branch_id
        return self._send(continuation[len(self.sent) :])

    def on_text(self, branch_id: str, text: str) -> list[ProgressEvent]:
        """Text the live branch generated, in order."""
        if branch_id != self.live_branch or self.diverged:
            return []
        return self._send(text)

    def finish(self, answer_text: str) -> list[ProgressEvent]:
        """The answer is decided: its text past what was sent, or an `AnswerReset` when what
        was sent is not its beginning."""
        self.live_branch = None
        if answer_text.startswith(self.sent):
            return self._send(answer_text[len(self.sent) :])
        self.sent = answer_text
        return [AnswerReset(answer_text)]

    def _send(self, text: str) -> list[ProgressEvent]:
        if not text:
            return []
        self.sent += text
        return [AnswerText(text)]
