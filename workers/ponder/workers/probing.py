"""When to probe a branch for its answer, and when its probes say to stop (pure).

The answer-probe early exit (Dynasor's certaindex, arXiv 2412.20993; settings in
`ponder.api.service_config.AnswerProbe`): every `every_tokens` tokens the worker asks the
engine for the answer the branch would give now (its text so far, then the cue, continued
greedily), and stops the branch once `window` probes in a row gave the same answer. One probe
of a branch is in flight at a time; a probe that comes due while another runs waits for the
next multiple of `every_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.api.service_config import AnswerProbe
from ponder.workers.settling import Reader


@dataclass
class ProbeSchedule:
    """One branch's probes: when the next is due, and what the finished ones read."""

    probe: AnswerProbe
    next_at: int = 0
    in_flight: bool = False
    answers: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.next_at == 0:
            self.next_at = self.probe.every_tokens

    def due(self, tokens: int) -> bool:
        """Whether a probe should start now that the branch has generated `tokens`."""
        return not self.in_flight and tokens >= self.next_at

    def start(self, tokens: int) -> None:
        """A probe starts at `tokens`; the next is due at the following multiple."""
        every = self.probe.every_tokens
        self.in_flight = True
        self.next_at = (tokens // every + 1) * every

    def finish(self, answer: str | None) -> bool:
        """Record a finished probe's answer (None: it read none, or it failed); True when the
        branch is now certain and should stop."""
        self.in_flight = False
        self.answers.append(answer)
        return self.certain

    @property
    def certain(self) -> bool:
        """The last `window` probes read one and the same answer."""
        window = self.answers[-self.probe.window :]
        return (
            len(window) == self.probe.window
            and window[0] is not None
            and all(answer == window[0] for answer in window)
        )


def probed_answer(probe: AnswerProbe, continuation: str, read: Reader) -> str | None:
    """The answer a probe gave: the service's reading of the cue followed by the probe's
    continuation (a cue such as "The answer is" makes extractor AnswerIs read " 42.")."""
    return read(probe.cue + continuation)
