"""The order in which one query's progress events reach its client (pure: no clock, no I/O).

Nothing goes out before the query's first launch is queued, so a query the queue refuses still
answers with its error status; the events of every later launch wait for its PubAcks (a fast
worker's first text may beat them), and go out, the launch first, once they came. The feed
numbers finished branches, emits the leading answer only when it changed, and passes the
answer's live text through `AnswerStream` (`progress.py`, which says what each event is).
"""

from __future__ import annotations

from collections.abc import Iterable

from ponder.scheduler.progress import (
    AnswerStream,
    Leader,
    ProgressEvent,
    ProgressSink,
    WaveLaunched,
    branch_finished,
    leader_changed,
)
from ponder.scheduler.strategies.base import FinalAnswer, ScoredBranch


class ProgressFeed:
    """One query's events to `sink` (None: a query nobody streams; every call is then moot)."""

    def __init__(self, sink: ProgressSink | None = None) -> None:
        self.sink = sink
        self.emitting = False  # from the first queued launch on
        self._launching = False  # a launch waits for its PubAcks
        self._held: list[ProgressEvent] = []
        self._answer = AnswerStream()
        self._leader: Leader | None = None
        self._finished = 0  # branch results reported

    @property
    def live(self) -> bool:
        """Whether anyone reads the events (worth asking workers for partial text)."""
        return self.sink is not None

    def emit(self, *events: ProgressEvent) -> None:
        """Send `events`, or hold them (with what is held) until the launch under way is
        queued."""
        if self.sink is None:
            return
        self._held.extend(events)
        if self.emitting and not self._launching:
            held, self._held = self._held, []
            for event in held:
                self.sink(event)

    def launching(self, streamed: Iterable[tuple[str, str]]) -> None:
        """A launch is being queued; `streamed`: (branch id, continuation) of its branches
        whose text is the answer's, live."""
        self._launching = True
        for branch, continuation in streamed:
            self.emit(*self._answer.start(branch, continuation))

    def launched(self, event: WaveLaunched) -> None:
        """The launch was queued: it goes out first, then what waited for it."""
        self._launching = False
        self.emitting = True
        self._held.insert(0, event)
        self.emit()

    def launch_failed(self) -> None:
        """The launch was not queued: what an earlier launch started goes on."""
        self._launching = False
        self.emit()

    def text(self, branch: str, text: str) -> None:
        """A piece of text branch `branch` generated."""
        self.emit(*self._answer.on_text(branch, text))

    def reported(self, branches: list[ScoredBranch], launched: int) -> list[ScoredBranch]:
        """`branches`, each emitted as finished (of `launched`)."""
        for branch in branches:
            self._finished += 1
            self.emit(branch_finished(branch, self._finished, launched))
        return branches

    def lead(self, best: FinalAnswer | None) -> None:
        """The strategy's leading answer, emitted when it changed."""
        if not self.emitting or best is None:
            return
        leader = Leader(best.answer, best.confidence, dict(best.votes))
        if leader_changed(self._leader, leader):
            self._leader = leader
            self.emit(leader)

    def answered(self, text: str) -> None:
        """The query's answer: out now (a launch the deadline cut holds nothing back)."""
        self._launching = False
        self.emit(*self._answer.finish(text))
