"""The one interface every test-time strategy implements (docs/architecture.md, "Strategies").

A strategy is pure: it never does I/O and never reads the clock. The query runner
(`ponder.scheduler.runner`) owns the I/O: it turns `BranchRequest`s into NATS jobs, collects
`BranchResult`s, extracts answers and asks the verifier for scores where a request wants them,
then hands each finished branch back to the strategy as a `ScoredBranch`.

Life of a query:
    strategy = make_strategy(plan)             # ponder.scheduler.strategies.make_strategy
    requests = strategy.begin()                # first wave
    for every finished branch:                 # completed, cancelled, expired or failed
        decision = strategy.on_branch(scored)  # Wait | Launch | Finish
    at the deadline, or when nothing is outstanding and the strategy still waits:
        answer = strategy.best_so_far()        # None -> the runner answers 504

A strategy also declares its shape as class attributes (`launch_mode`, `single_branch`,
`needs_verifier`, `may_shrink`, `may_exit_early`): the planner sizes a query from them, and the
serving code counts what early stopping saved from them, so neither keeps its own list of
strategies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from ponder.api.service_config import (
    AnswerProbe,
    BeamConfig,
    BudgetForcingConfig,
    DeepConfConfig,
    ExtractorKind,
    StoppingRule,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchResult, BranchStatus, ChatMessage, Endpoint, EngineSampling


class ScoreMode(StrEnum):
    """What the runner asks the verifier for before handing a branch to the strategy."""

    NONE = "none"
    FINAL = "final"  # score the extracted final answer with its steps
    STEP = "step"  # process reward: score the partial solution (prefix + this step)


class LaunchMode(StrEnum):
    """How a strategy launches its branches, which decides how the planner sizes the query."""

    AT_ONCE = "at-once"
    """Every branch in `begin()`, never more: `max_branches` is the first wave."""
    WAVES = "waves"
    """Waves of `wave_size` up to `max_branches`, and it may finish after any wave: the budget
    is split over every branch it may launch, and the deadline bounds how many waves fit."""
    STEPS = "steps"
    """Short branches up to a step delimiter, a step of `beam.width x beam.expansions` at a
    time, each step sized by what the budget has left: the budget does not bound the width,
    the number of steps and the deadline bound the total."""
    SEQUENCE = "sequence"
    """One turn after another, each after the last finished (draft, critique, revise; think,
    wait): sized like `AT_ONCE` but `max_branches` stays above the first turn."""


class Shrinkable(StrEnum):
    """What the planner may cut to fit a query to its budget, the load and the deadline."""

    BRANCHES = "branches"
    """Fewer branches at once than asked (the plan says why in `shrink_reason`)."""
    WAVES = "waves"
    """Fewer waves than `max_branches` allows, when later waves would miss the deadline."""
    STEPS = "steps"
    """Fewer steps than `beam.max_steps` allows, when later steps would miss the deadline."""


@dataclass(frozen=True)
class PlannedQuery:
    """A query as the planner resolved it: everything a strategy may decide on."""

    query_id: str
    strategy: StrategyName
    endpoint: Endpoint
    question: str  # the user's question as plain text (last user message, or the prompt)
    prompt: str | None  # completions endpoint
    messages: tuple[ChatMessage, ...] | None  # chat endpoint
    branches: int  # initial / total branch count the planner granted
    max_branches: int  # hard cap for adaptive strategies
    budget_tokens: int  # total completion tokens over all branches
    max_tokens_per_branch: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    confidence: float  # adaptive stopping threshold in (0, 1)
    extractor: ExtractorKind
    has_verifier: bool
    beam: BeamConfig
    budget_forcing: BudgetForcingConfig
    wave_size: int  # branches per wave for adaptive strategies
    answer_pattern: str | None = None  # the regex of extractor `regex`
    probe: AnswerProbe | None = None  # the answer-probe early exit of every branch, if granted
    engine: EngineSampling = field(default_factory=EngineSampling)  # to vLLM, every branch
    accept_score: float = 0.99  # a verifier score at or above this counts as verified
    deep_conf: DeepConfConfig = field(default_factory=DeepConfConfig)
    stopping_rule: StoppingRule | None = None  # adaptive-consistency's; None: by has_verifier
    give_up: float = 1.0  # an adaptive strategy unsettled at this share of cap or budget answers


@dataclass(frozen=True)
class BranchRequest:
    """Branches to launch that share one prompt (the runner groups them into jobs of k)."""

    n: int
    max_tokens: int
    tag: str = ""  # strategy-private label, echoed back in ScoredBranch.request
    continuation: str = ""  # text appended after the query's prompt (beam prefix, "Wait", ...)
    prompt_override: str | None = None  # a whole new prompt (refine's critique / revise turns)
    temperature: float | None = None  # None: the query's temperature
    stop: tuple[str, ...] | None = None  # None: the query's stop strings
    score: ScoreMode = ScoreMode.NONE
    logprobs: bool = False
    confidence: bool = False  # the worker measures each branch's confidence (`deep_conf`)
    confidence_stop_below: float | None = None  # ... and stops a branch below this
    streams_answer: bool = False
    """If this branch (n=1) completes, the query answers with its `full_text`: the runner
    streams that text live to a streaming client (the single branch, budget forcing's forced
    answer, refine's last revision)."""


@dataclass(frozen=True)
class ScoredBranch:
    """A finished branch as a strategy sees it."""

    request: BranchRequest
    result: BranchResult
    answer: str | None  # extracted from continuation + text; None when nothing matched
    score: float | None = None  # verifier score in [0, 1] (or mean logprob), when asked

    @property
    def completed(self) -> bool:
        return self.result.status == BranchStatus.COMPLETED

    @property
    def full_text(self) -> str:
        """The branch's whole answer text: the strategy's continuation plus what was generated."""
        return self.request.continuation + self.result.text


@dataclass(frozen=True)
class FinalAnswer:
    """What the query answers with, and the evidence behind it (goes into `ponder`)."""

    text: str
    answer: str | None
    confidence: float | None = None
    votes: dict[str, float] = field(default_factory=dict)  # answer -> votes or weight
    scores: list[float] = field(default_factory=list)
    finish_reason: str = "stop"
    gave_up: bool = False  # an adaptive strategy stopped unsettled: more would not help


@dataclass(frozen=True)
class Wait:
    """Nothing to do until more outstanding branches finish."""


@dataclass(frozen=True)
class Launch:
    """Launch these branches (and keep waiting for the outstanding ones)."""

    requests: tuple[BranchRequest, ...]


@dataclass(frozen=True)
class Finish:
    """Answer now; the runner cancels whatever is still outstanding."""

    answer: FinalAnswer


Decision = Wait | Launch | Finish


class Strategy(ABC):
    """Base class: one instance per query. A subclass names itself and declares its shape;
    `shape_problems` says what a declaration gets wrong."""

    name: ClassVar[StrategyName]
    launch_mode: ClassVar[LaunchMode]
    single_branch: ClassVar[bool]
    """One branch whatever the request asks (the planner grants 1 of 1)."""
    needs_verifier: ClassVar[bool]
    """Refused on a service without a verifier (`spec.strategy.verifier.type: None`); a
    strategy that only uses scores when they come (logprobs otherwise) does not need one."""
    may_shrink: ClassVar[frozenset[Shrinkable]]
    may_exit_early: ClassVar[bool]
    """Its branches may stop at an answer probe (`ponder.early_exit: answer-probe`): each is a
    whole answer of its own. Not so for steps and turns, which a later request continues."""

    def __init__(self, query: PlannedQuery) -> None:
        self.query = query

    @abstractmethod
    def begin(self) -> list[BranchRequest]:
        """The first wave of branches."""

    @abstractmethod
    def on_branch(self, branch: ScoredBranch) -> Decision:
        """Take one finished branch; decide what happens next."""

    @abstractmethod
    def best_so_far(self) -> FinalAnswer | None:
        """The best answer from what has finished (deadline, or nothing left to wait for)."""


SHAPE_ATTRIBUTES = (
    "name",
    "launch_mode",
    "single_branch",
    "needs_verifier",
    "may_shrink",
    "may_exit_early",
)
"""The class attributes every concrete strategy declares."""


def shape_problems(strategy: type[Strategy]) -> list[str]:
    """What is wrong with a strategy class's declared shape; empty when it is consistent."""
    missing = [name for name in SHAPE_ATTRIBUTES if not hasattr(strategy, name)]
    if missing:
        return [f"{strategy.__name__} declares no {', '.join(missing)}"]
    problems = []
    mode, shrinks = strategy.launch_mode, strategy.may_shrink
    if not isinstance(mode, LaunchMode):
        problems.append(f"{strategy.__name__}.launch_mode={mode!r} is not a LaunchMode")
    if not isinstance(shrinks, frozenset) or not all(isinstance(s, Shrinkable) for s in shrinks):
        problems.append(f"{strategy.__name__}.may_shrink={shrinks!r} is not a set of Shrinkable")
        return problems
    if strategy.single_branch and mode is not LaunchMode.AT_ONCE:
        problems.append(f"{strategy.__name__} is single-branch but launches {mode}")
    if strategy.single_branch and shrinks:
        problems.append(f"{strategy.__name__} is single-branch: it has nothing to shrink")
    if Shrinkable.WAVES in shrinks and mode is not LaunchMode.WAVES:
        problems.append(f"{strategy.__name__} may shrink waves but launches {mode}")
    if Shrinkable.STEPS in shrinks and mode is not LaunchMode.STEPS:
        problems.append(f"{strategy.__name__} may shrink steps but launches {mode}")
    if strategy.may_exit_early and mode in (LaunchMode.STEPS, LaunchMode.SEQUENCE):
        # A step or a turn is continued by the next request: cut short, it is no answer.
        problems.append(f"{strategy.__name__} launches {mode}: its branches may not exit early")
    if Shrinkable.BRANCHES in shrinks and mode is LaunchMode.STEPS:
        # A step is as wide as the beam; a narrower step would be another search.
        problems.append(f"{strategy.__name__} launches steps: it may not shrink branches")
    return problems
