"""The problem sets that measure the shipped model, and the training stream that never sees them.

Every figure about the arithmetic model — its validation (the training's stopping rule), its
evaluation (the model card), ``make demo``, the test-time-scaling benchmark and the SLO benchmark
— is computed on one of the sets below, each a seeded draw of at most ``size`` problems. Training
draws from ``training_stream``, which skips every problem of every set by its canonical form, so
no problem that is scored was ever trained on, whatever the sets' seeds and sizes. A set refuses
to hand out more than ``size`` problems: more would not be held out.

``tests/unit/test_heldout.py`` replays the shipped model's training stream as far as its
``training.json`` says it drew and finds none of these problems in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from models.arith.task import Problem, generate_problems, iter_problems


@dataclass(frozen=True)
class HeldOutSet:
    """``size`` problems drawn with ``seed``; a prefix of them is what a run of ``count`` uses."""

    name: str
    seed: int
    size: int

    def problems(self, count: int | None = None) -> list[Problem]:
        """The first ``count`` problems of the set (all of them when None)."""
        wanted = self.size if count is None else count
        if not 0 < wanted <= self.size:
            raise ValueError(
                f"the held-out {self.name} set has {self.size} problems; asked for {wanted}"
            )
        return generate_problems(self.seed, wanted)


VALIDATION = HeldOutSet("validation", seed=7, size=200)
EVALUATION = HeldOutSet("evaluation", seed=20_240_601, size=400)
DEMO = HeldOutSet("demo", seed=20_250_101, size=400)
TTS = HeldOutSet("test-time-scaling benchmark", seed=20_250_202, size=1000)
SLO = HeldOutSet("SLO benchmark", seed=20_250_303, size=1000)

HELD_OUT_SETS: tuple[HeldOutSet, ...] = (VALIDATION, EVALUATION, DEMO, TTS, SLO)


@cache
def held_out_questions() -> frozenset[str]:
    """The canonical question of every problem of every held-out set."""
    return frozenset(
        problem.question for held_out in HELD_OUT_SETS for problem in held_out.problems()
    )


def without_held_out(problems: Iterable[Problem]) -> Iterator[Problem]:
    """``problems`` less every one whose canonical question belongs to a held-out set."""
    excluded = held_out_questions()
    return (problem for problem in problems if problem.question not in excluded)


def training_stream(seed: int) -> Iterator[Problem]:
    """The endless seeded stream the model trains on: ``iter_problems(seed)`` less the held out."""
    return without_held_out(iter_problems(seed))
