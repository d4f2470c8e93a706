"""The planner: request + service config + load -> a `Plan`, or a `PlanError` naming the limit.

Pure: no I/O, no clock. The HTTP edge turns a `PlanError` into a 400 whose message says what
to change, e.g. "ponder.branches=64 exceeds spec.strategy.maxBranches=32".

Planning is a sequence of named steps: `validate_request` (strategy, branches, budget, deadline,
sampling and early exit, each within its limit; the first broken limit is the one reported), then
`fit_to_budget`, `fit_to_load`, `grow_to_idle` and `cap_total` size the query from the
strategy's declared shape (`Strategy.launch_mode`, `single_branch`, `needs_verifier`,
`may_shrink`), and `planned_query` assembles what the strategy sees. Which load steps run is the
service's `spec.slo.loadAdaptation` (`SloConfig.load_adaptation`): `Static` neither shrinks nor
grows for load (the budget and the branch limits still bound the query), `Shrink` (the default)
shrinks, `ShrinkAndGrow` shrinks and grows.

Load-aware shrinking (docs/architecture.md, "Request flow" and "Strategies"): branches of a
wave run in parallel on the pool's slots, behind the branches already outstanding. With `slots`
slots, `outstanding` branches ahead and an expected `branch_seconds` per branch, `B` new
branches finish after about `ceil((outstanding + B) / slots)` rounds of `branch_seconds`. When
that would not fit the deadline (with `DEADLINE_HEADROOM`), the planner grants fewer branches
(and smaller waves) instead of queueing them past the deadline or the SLO; the plan records that
it shrank. Without observations (cold start) it does not shrink: it cannot know better than the
request. Nor while the pool is cold (`LoadSnapshot.cold`: no worker takes jobs, the pool scaled
to zero): the query waits for a worker instead, up to `spec.autoscaling.scaleToZero.holdSeconds`
past its deadline (`Plan.hold_ms`), and is planned as the request asks.

Priority classes (`ponder.api.priority`; docs/architecture.md, "Priority classes"): the load
fit above is Standard's. A Sheddable query fits its branches into a smaller share of its deadline
(`LOAD_HEADROOM`), so it shrinks at a lower load, and `shed_load` refuses it (a 503 with
`Retry-After`, nothing queued) once the branches outstanding already fill every slot for that
share: none of its branches could even start in time. A Critical query is never shrunk or
refused for load: its jobs are taken before the others.

Load-adaptive growth (`ShrinkAndGrow`; docs/architecture.md, "Load-adaptive width"): the same
model read the other way. While the pool has idle slots (`slots - outstanding`) and one round of
`branch_seconds` fits the deadline's share, a query that left `ponder.branches` to the service
is granted more branches, up to half the idle slots (`GROW_SLOT_SHARE`), its `max_branches`
(the request's `ponder.max_branches`, else `spec.strategy.maxBranches`) and what its budget pays
for at its per-branch cap: the extra branches start at once and finish with the others, so
they buy accuracy with capacity that would otherwise idle. Only strategies that launch every
branch at once and may shrink branches grow (self-consistency, best-of-n, weighted-vote: more
samples, the same wait); waves, steps and turns already size themselves. Never an explicit
`ponder.branches` (the caller chose the width), a Sheddable query (it yields capacity, it does
not take more), a query shrunk for budget or load, a cold start or a cold pool. The plan records
it in `grow_reason`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from ponder.api.priority import Priority
from ponder.api.service_config import (
    AnswerProbe,
    DeepConfConfig,
    DeepConfMode,
    EarlyExit,
    LoadAdaptation,
    ServiceConfig,
    StoppingRule,
    VerifierKind,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import MAX_STOP_STRINGS, ChatMessage, Endpoint, EngineSampling
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.strategies import STRATEGIES, StrategyRegistry
from ponder.scheduler.strategies.base import LaunchMode, PlannedQuery, Shrinkable, Strategy

DEADLINE_HEADROOM = 0.8
"""Share of the deadline the expected completion may use; the rest absorbs estimate error."""

SHEDDABLE_HEADROOM = 0.4
"""A Sheddable query's share: it shrinks at half the load a Standard one does."""

LOAD_HEADROOM: dict[Priority, float | None] = {
    Priority.CRITICAL: None,  # never shrunk for load
    Priority.STANDARD: DEADLINE_HEADROOM,
    Priority.SHEDDABLE: SHEDDABLE_HEADROOM,
}
"""Share of the deadline each class's branches must fit in, behind the load observed."""

GROW_SLOT_SHARE = 0.5
"""Of the slots idle when a query arrives, the share its grown branches may take: the rest is
left to the queries that arrive while it runs."""


@dataclass(frozen=True)
class QueryRequest:
    """A request as the HTTP edge parsed it: the prompt plus OpenAI's and Ponder's options."""

    query_id: str
    endpoint: Endpoint
    question: str
    prompt: str | None
    messages: tuple[ChatMessage, ...] | None
    ponder: PonderOptions = field(default_factory=PonderOptions)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int | None = None
    engine: EngineSampling = field(default_factory=EngineSampling)
    """Sampling options passed to vLLM for every branch as given (penalties, top_k, ...)."""
    priority: Priority = Priority.STANDARD
    """The query's class: its key's, or what `x-gateway-inference-objective` lowered it to."""


@dataclass(frozen=True)
class PlanError:
    """A request the service refuses: which field, why, and the limit it broke; HTTP 400,
    or 503 with `Retry-After` for a Sheddable query shed under load (`shed_load`)."""

    field: str
    message: str
    limit: str | None = None
    code: str = "invalid_value"
    status: int = 400
    retry_after_seconds: int | None = None


@dataclass(frozen=True)
class Plan:
    """A planned query: what the strategy sees, plus what only the runner and response need."""

    query: PlannedQuery
    deadline_ms: int
    branches_per_job: int
    requested_branches: int
    shrink_reason: str | None = None
    grow_reason: str | None = None
    """Why the planner granted more branches than asked (`ShrinkAndGrow` on an idle pool)."""
    priority: Priority = Priority.STANDARD
    """The query's class: its jobs go to that class's subject (`ServiceSubjects.jobs_of`)."""
    hold_ms: int = 0
    """The pool was cold (no worker taking jobs): how much longer than `deadline_ms` the query
    may wait for a worker to start (`spec.autoscaling.scaleToZero.holdSeconds`)."""

    @property
    def shrunk(self) -> bool:
        """Whether the planner granted fewer branches than asked."""
        return self.shrink_reason is not None

    @property
    def grown(self) -> bool:
        """Whether the planner granted more branches than asked."""
        return self.grow_reason is not None

    @property
    def wait_ms(self) -> int:
        """How long the query may run in all: its deadline, plus the cold-start hold."""
        return self.deadline_ms + self.hold_ms


@dataclass(frozen=True)
class ValidRequest:
    """A request within the service's limits, defaults filled in: what it asks for."""

    strategy: type[Strategy]
    branches: int
    max_branches: int
    budget_tokens: int
    max_tokens_per_branch: int
    deadline_ms: int
    temperature: float
    top_p: float
    confidence: float
    probe: AnswerProbe | None = None
    deep_conf: DeepConfConfig = field(default_factory=DeepConfConfig)
    stopping_rule: StoppingRule = StoppingRule.BETA
    priority: Priority = Priority.STANDARD
    explicit_branches: bool = False
    """The request named `ponder.branches`: the width is the caller's, never grown."""


@dataclass(frozen=True)
class Width:
    """Branches launched at once (`branches`) and in all (`max_branches`), and why fewer
    (or more) than asked, when they are."""

    branches: int
    max_branches: int
    shrink_reason: str | None = None
    grow_reason: str | None = None


def spec_name(section: str, name: str) -> str:
    """The ReasoningService spec path of a ServiceConfig field: `spec.strategy.maxBranches`."""
    head, *rest = name.split("_")
    camel = head + "".join(part.capitalize() for part in rest)
    return f"spec.{section}.{camel}" if section else f"spec.{camel}"


def plan_query(
    request: QueryRequest,
    config: ServiceConfig,
    load: LoadSnapshot | None = None,
    strategies: StrategyRegistry = STRATEGIES,
) -> Plan | PlanError:
    """Resolve strategy, branches, budget and deadline within the service's limits, then fit
    the branches to the budget, the load and the deadline as the strategy's shape allows."""
    valid = validate_request(request, config, strategies)
    if isinstance(valid, PlanError):
        return valid
    load = load or LoadSnapshot()
    shed = shed_load(valid, load, config)
    if shed is not None:
        return shed
    width = fit_to_budget(valid, config)
    adaptation = config.slo.load_adaptation
    if adaptation is not LoadAdaptation.STATIC:
        width = fit_to_load(valid, width, load, config)
    if adaptation is LoadAdaptation.SHRINK_AND_GROW:
        width = grow_to_idle(valid, width, load, config)
    width = cap_total(valid.strategy, width)
    return Plan(
        query=planned_query(request, config, valid, width),
        deadline_ms=valid.deadline_ms,
        branches_per_job=pick_branches_per_job(
            width.branches, config.strategy.branches_per_job, None if load.cold else load.workers
        ),
        requested_branches=valid.branches,
        shrink_reason=width.shrink_reason,
        grow_reason=width.grow_reason,
        priority=valid.priority,
        hold_ms=config.slo.cold_start_hold_ms if load.cold else 0,
    )


def validate_request(
    request: QueryRequest, config: ServiceConfig, strategies: StrategyRegistry = STRATEGIES
) -> ValidRequest | PlanError:
    """The request checked against the service's limits, in a fixed order (strategy, n,
    branches, tokens, deadline, sampling): the first limit it breaks is the one refused."""
    strategy = resolve_strategy(request.ponder, config, strategies)
    if isinstance(strategy, PlanError):
        return strategy
    if request.n not in (None, 1):
        return PlanError(
            "n",
            f"n={request.n} is not supported; ask for more samples with ponder.branches",
            code="unsupported",
        )
    counts = resolve_branches(request.ponder, config, strategy)
    if isinstance(counts, PlanError):
        return counts
    branches, max_branches = counts
    sharers = budget_sharers(strategy, branches, max_branches, config)
    tokens = resolve_tokens(request, config, sharers)
    if isinstance(tokens, PlanError):
        return tokens
    deadline_ms = resolve_deadline(request.ponder, config)
    if isinstance(deadline_ms, PlanError):
        return deadline_ms
    sampling = resolve_sampling(request, config)
    if isinstance(sampling, PlanError):
        return sampling
    probe = resolve_early_exit(request.ponder, config, strategy)
    if isinstance(probe, PlanError):
        return probe
    deep_conf = resolve_deep_conf(request.ponder, config, strategy)
    if isinstance(deep_conf, PlanError):
        return deep_conf
    stopping_rule = resolve_stopping_rule(request.ponder, config, strategy)
    if isinstance(stopping_rule, PlanError):
        return stopping_rule
    budget_tokens, max_tokens_per_branch = tokens
    temperature, top_p, confidence = sampling
    return ValidRequest(
        strategy=strategy,
        branches=branches,
        max_branches=max_branches,
        budget_tokens=budget_tokens,
        max_tokens_per_branch=max_tokens_per_branch,
        deadline_ms=deadline_ms,
        temperature=temperature,
        top_p=top_p,
        confidence=confidence,
        probe=probe,
        deep_conf=deep_conf,
        stopping_rule=stopping_rule,
        priority=request.priority,
        explicit_branches=request.ponder.branches is not None,
    )


def resolve_strategy(
    options: PonderOptions, config: ServiceConfig, strategies: StrategyRegistry = STRATEGIES
) -> type[Strategy] | PlanError:
    """The strategy class asked for (or the service's default), if registered, allowed by
    `spec.strategy.allowed`, and given a verifier when it needs one."""
    defaults = config.strategy
    try:
        name: StrategyName | None = StrategyName(options.strategy or defaults.default)
    except ValueError:
        name = None
    strategy = strategies.get(name) if name is not None else None
    if strategy is None:
        known = ", ".join(member.value for member in strategies)
        return PlanError(
            "ponder.strategy",
            f"unknown strategy {options.strategy!r}; use one of: {known}",
            code="unknown_strategy",
        )
    if strategy.name not in defaults.allowed:
        allowed = ",".join(member.value for member in defaults.allowed)
        limit = f"{spec_name('strategy', 'allowed')}=[{allowed}]"
        return PlanError(
            "ponder.strategy",
            f"ponder.strategy={strategy.name.value} is not allowed by {limit}",
            limit=limit,
            code="strategy_not_allowed",
        )
    if strategy.needs_verifier and defaults.verifier.kind == VerifierKind.NONE:
        limit = f"{spec_name('strategy', 'verifier')}.type=None"
        return PlanError(
            "ponder.strategy",
            f"ponder.strategy={strategy.name.value} needs a verifier, and the service has {limit}",
            limit=limit,
            code="strategy_needs_verifier",
        )
    return strategy


def resolve_branches(
    options: PonderOptions, config: ServiceConfig, strategy: type[Strategy]
) -> tuple[int, int] | PlanError:
    """(branches, max_branches) as asked, within `spec.strategy.maxBranches`; (1, 1) for a
    single-branch strategy."""
    limit_value = config.strategy.max_branches

    def limit() -> str:
        return f"{spec_name('strategy', 'max_branches')}={limit_value}"

    if options.max_branches is not None:
        if options.max_branches < 1:
            return _not_positive("ponder.max_branches", options.max_branches)
        if options.max_branches > limit_value:
            return _exceeds("ponder.max_branches", options.max_branches, limit())
    max_branches = options.max_branches or limit_value
    if options.branches is None:
        branches = min(config.strategy.branches, max_branches)
    elif options.branches < 1:
        return _not_positive("ponder.branches", options.branches)
    elif options.branches > limit_value:
        return _exceeds("ponder.branches", options.branches, limit())
    elif options.branches > max_branches:
        return _exceeds("ponder.branches", options.branches, f"ponder.max_branches={max_branches}")
    else:
        branches = options.branches
    if strategy.single_branch:
        return 1, 1
    return branches, max_branches


def budget_sharers(
    strategy: type[Strategy], branches: int, max_branches: int, config: ServiceConfig
) -> int:
    """How many branches split the token budget when the request sets no `max_tokens`."""
    if strategy.launch_mode is LaunchMode.WAVES:
        return max_branches  # it may go up to max_branches: the budget is split over all
    if strategy.launch_mode is LaunchMode.STEPS:
        # The branches of one step share the budget (as beam search does).
        return beam_step_width(config, max_branches)
    return branches


def resolve_tokens(
    request: QueryRequest, config: ServiceConfig, branches: int
) -> tuple[int, int] | PlanError:
    """(budget_tokens, max_tokens_per_branch) within `spec.budget`."""
    budget = config.budget
    budget_tokens = request.ponder.budget_tokens
    if budget_tokens is None:
        budget_tokens = budget.default_tokens
    elif budget_tokens < 1:
        return _not_positive("ponder.budget_tokens", budget_tokens)
    elif budget_tokens > budget.max_tokens:
        limit = f"{spec_name('budget', 'max_tokens')}={budget.max_tokens}"
        return _exceeds("ponder.budget_tokens", budget_tokens, limit)
    model_cap = config.max_model_len - 1 if config.max_model_len is not None else None
    if request.max_tokens is None:
        # Without an explicit cap, split the budget over the branches rather than starve some.
        per_branch = max(1, min(budget.max_tokens_per_branch, budget_tokens // branches))
        if model_cap is not None:
            per_branch = min(per_branch, model_cap)
        return budget_tokens, per_branch
    if request.max_tokens < 1:
        return _not_positive("max_tokens", request.max_tokens)
    if request.max_tokens > budget.max_tokens_per_branch:
        limit = f"{spec_name('budget', 'max_tokens_per_branch')}={budget.max_tokens_per_branch}"
        return _exceeds("max_tokens", request.max_tokens, limit)
    if model_cap is not None and request.max_tokens > model_cap:
        limit = f"{spec_name('', 'max_model_len')}={config.max_model_len}"
        return _exceeds("max_tokens", request.max_tokens, limit)
    return budget_tokens, min(request.max_tokens, budget_tokens)


def resolve_deadline(options: PonderOptions, config: ServiceConfig) -> int | PlanError:
    """deadline_ms as asked, or the SLO's target latency; within `spec.slo.maxDeadlineMs`."""
    slo = config.slo
    if options.deadline_ms is None:
        return min(slo.target_latency_ms, slo.max_deadline_ms)
    if options.deadline_ms < 1:
        return _not_positive("ponder.deadline_ms", options.deadline_ms)
    if options.deadline_ms > slo.max_deadline_ms:
        limit = f"{spec_name('slo', 'max_deadline_ms')}={slo.max_deadline_ms}"
        return _exceeds("ponder.deadline_ms", options.deadline_ms, limit)
    return options.deadline_ms


def resolve_sampling(
    request: QueryRequest, config: ServiceConfig
) -> tuple[float, float, float] | PlanError:
    """(temperature, top_p, confidence) within the wire's bounds."""
    defaults = config.strategy
    options = request.ponder
    confidence = options.confidence if options.confidence is not None else defaults.confidence
    if not 0.0 < confidence < 1.0:
        return PlanError(
            "ponder.confidence", f"ponder.confidence={confidence} must be between 0 and 1"
        )
    temperature = request.temperature if request.temperature is not None else defaults.temperature
    if not 0.0 <= temperature <= 5.0:
        return PlanError("temperature", f"temperature={temperature} must be within [0, 5]")
    top_p = request.top_p if request.top_p is not None else 1.0
    if not 0.0 < top_p <= 1.0:
        return PlanError("top_p", f"top_p={top_p} must be within (0, 1]")
    if len(request.stop) > MAX_STOP_STRINGS:
        return PlanError(
            "stop", f"{len(request.stop)} stop strings exceed the limit of {MAX_STOP_STRINGS}"
        )
    return temperature, top_p, confidence


def resolve_early_exit(
    options: PonderOptions, config: ServiceConfig, strategy: type[Strategy]
) -> AnswerProbe | PlanError | None:
    """The answer probe every branch gets, or None: as asked, else the service's default
    (`spec.strategy.earlyExit.default`), which a strategy whose branches may not exit early
    (steps, turns) does without; asking for it with such a strategy is refused."""
    settings = config.strategy.early_exit
    if options.early_exit is None:
        wanted = settings.default
        if not strategy.may_exit_early:
            return None
    else:
        try:
            wanted = EarlyExit(options.early_exit)
        except ValueError:
            known = ", ".join(member.value for member in EarlyExit)
            return PlanError(
                "ponder.early_exit",
                f"unknown early exit {options.early_exit!r}; use one of: {known}",
            )
        if wanted is not EarlyExit.NONE and not strategy.may_exit_early:
            return PlanError(
                "ponder.early_exit",
                f"ponder.early_exit={wanted.value} does not apply to ponder.strategy="
                f"{strategy.name.value}: its branches are steps or turns that later requests "
                "continue",
                code="early_exit_unsupported",
            )
    return settings.probe if wanted is EarlyExit.ANSWER_PROBE else None


OptionValue = TypeVar("OptionValue", bound=StrEnum)


def strategy_option(
    option: str,
    value: str,
    kind: type[OptionValue],
    what: str,
    strategy: type[Strategy],
    only: StrategyName,
) -> OptionValue | PlanError:
    """`value` of the request option `ponder.<option>` as a member of `kind`; a PlanError when
    the strategy is not `only` or no member is spelt `value`."""
    field_name = f"ponder.{option}"
    if strategy.name is not only:
        return PlanError(
            field_name,
            f"{field_name} applies to ponder.strategy={only.value} only, not {strategy.name.value}",
        )
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        return PlanError(field_name, f"unknown {what} {value!r}; use one of: {known}")


def resolve_deep_conf(
    options: PonderOptions, config: ServiceConfig, strategy: type[Strategy]
) -> DeepConfConfig | PlanError:
    """The service's deep-conf settings, in the mode the request names (deep-conf only)."""
    settings = config.strategy.deep_conf
    if options.deep_conf_mode is None:
        return settings
    mode = strategy_option(
        "deep_conf_mode",
        options.deep_conf_mode,
        DeepConfMode,
        "deep-conf mode",
        strategy,
        StrategyName.DEEP_CONF,
    )
    return mode if isinstance(mode, PlanError) else settings.model_copy(update={"mode": mode})


def resolve_stopping_rule(
    options: PonderOptions, config: ServiceConfig, strategy: type[Strategy]
) -> StoppingRule | PlanError:
    """adaptive-consistency's stopping rule: the request's, else the service's, else verifier
    when the service has one and beta when not. Verifier needs a verifier."""
    has_verifier = config.strategy.verifier.kind is not VerifierKind.NONE
    if options.stopping_rule is None:
        default = StoppingRule.VERIFIER if has_verifier else StoppingRule.BETA
        return config.strategy.stopping_rule or default
    rule = strategy_option(
        "stopping_rule",
        options.stopping_rule,
        StoppingRule,
        "stopping rule",
        strategy,
        StrategyName.ADAPTIVE_CONSISTENCY,
    )
    if rule is StoppingRule.VERIFIER and not has_verifier:
        return PlanError(
            "ponder.stopping_rule",
            "ponder.stopping_rule=verifier needs a verifier, and this service has none "
            "(spec.strategy.verifier)",
        )
    return rule


def fit_to_budget(valid: ValidRequest, config: ServiceConfig) -> Width:
    """The branches the token budget pays for, full length each; a strategy that launches in
    steps is sized by its step width and `beam.maxSteps` instead."""
    if valid.strategy.launch_mode is LaunchMode.STEPS:
        # A step's branches stop at the step delimiter, and each asks for its share of what
        # the budget has left: the ledger keeps the search within budget_tokens step by step.
        # So the budget does not bound how many branches all the steps may take (counted as
        # full-length branches, 4096 tokens at 1024 per branch would not pay for one step of
        # 4 x 4); the branch limit and the number of steps do.
        step_width = beam_step_width(config, valid.max_branches)
        steps_cap = config.strategy.beam.max_steps * step_width
        return Width(step_width, min(valid.max_branches, steps_cap))
    affordable = max(1, valid.budget_tokens // valid.max_tokens_per_branch)
    max_branches = min(valid.max_branches, affordable)
    if valid.branches <= affordable or Shrinkable.BRANCHES not in valid.strategy.may_shrink:
        return Width(valid.branches, max_branches)
    return Width(
        affordable,
        max_branches,
        shrink_reason=(
            f"budget: {valid.branches} branches x {valid.max_tokens_per_branch} tokens exceed "
            f"budget_tokens={valid.budget_tokens}, granted {affordable}"
        ),
    )


def fit_to_load(
    valid: ValidRequest, width: Width, load: LoadSnapshot, config: ServiceConfig
) -> Width:
    """Fewer branches, and fewer waves or steps, when the observed load would have them miss
    the deadline, as far as the strategy's `may_shrink` allows; unchanged on a cold start and
    while the pool is cold (the workers that will start are not the ones observed before).
    The deadline's share the branches must fit in is their class's (`LOAD_HEADROOM`); a
    Critical query is never shrunk for load."""
    headroom = LOAD_HEADROOM[valid.priority]
    if load.cold or headroom is None:
        return width
    slots = load.workers * config.slots_per_worker if load.workers else None
    branch_seconds = expected_branch_seconds(load, valid.max_tokens_per_branch)
    if slots is None or branch_seconds is None:
        return width  # nothing observed: it cannot know better than the request
    deadline_seconds = valid.deadline_ms / 1000.0
    shrinks = valid.strategy.may_shrink
    branches, max_branches, reason = width.branches, width.max_branches, width.shrink_reason
    if Shrinkable.BRANCHES in shrinks:
        fitted = fit_to_deadline(
            branches, slots, load.branches_outstanding, branch_seconds, deadline_seconds, headroom
        )
        if fitted < branches:
            share = (
                ""
                if headroom == DEADLINE_HEADROOM
                else f" ({valid.priority.value}: {headroom:g} of it)"
            )
            reason = (
                f"load: {load.branches_outstanding} branches outstanding on {slots} slots at "
                f"~{branch_seconds:.3g}s per branch; {branches} branches would miss "
                f"deadline_ms={valid.deadline_ms}{share}, granted {fitted}"
            )
            branches = fitted
    if Shrinkable.WAVES in shrinks or Shrinkable.STEPS in shrinks:
        # Every further wave (step) waits for the previous one: no more than fit.
        waves = waves_within_deadline(branches, slots, branch_seconds, deadline_seconds, headroom)
        max_branches = min(max_branches, waves * branches)
    return Width(branches, max_branches, reason)


def may_grow(strategy: type[Strategy]) -> bool:
    """Whether more branches than asked may be granted: a strategy that launches every branch
    at once and may shrink them (more samples, the same wait). Waves, steps and turns size
    themselves, and their extra rounds would wait on each other."""
    return strategy.launch_mode is LaunchMode.AT_ONCE and Shrinkable.BRANCHES in strategy.may_shrink


def grow_to_idle(
    valid: ValidRequest, width: Width, load: LoadSnapshot, config: ServiceConfig
) -> Width:
    """More branches, up to `GROW_SLOT_SHARE` of the idle slots, the query's `max_branches`
    and what the budget pays for (`width.max_branches`), while the pool has idle slots and one
    round of branches fits the deadline's share (the load model of `fit_to_load`). Unchanged
    for an explicit `ponder.branches`, a Sheddable query, a strategy that may not grow
    (`may_grow`), a query already shrunk, a cold start or a cold pool."""
    if (
        valid.explicit_branches
        or valid.priority is Priority.SHEDDABLE
        or not may_grow(valid.strategy)
        or width.shrink_reason is not None
        or load.cold
    ):
        return width
    slots = load.workers * config.slots_per_worker if load.workers else None
    branch_seconds = expected_branch_seconds(load, valid.max_tokens_per_branch)
    if slots is None or branch_seconds is None:
        return width  # nothing observed: it cannot know the pool is idle
    headroom = LOAD_HEADROOM[valid.priority] or DEADLINE_HEADROOM
    deadline_seconds = valid.deadline_ms / 1000.0
    if branch_seconds > deadline_seconds * headroom:
        return width  # not even one round fits: no slack to spend
    idle = max(0, slots - load.branches_outstanding)
    idle_share = int(idle * GROW_SLOT_SHARE)
    grown = min(width.max_branches, idle_share)
    if grown <= width.branches:
        return width
    if grown == idle_share:
        bound = f"{GROW_SLOT_SHARE:g} of the idle slots"
    elif width.max_branches < valid.max_branches:
        bound = f"what budget_tokens={valid.budget_tokens} pays for"
    else:
        bound = f"max_branches={valid.max_branches}"
    reason = (
        f"idle: {idle} of {slots} slots idle at ~{branch_seconds:.3g}s per branch, one round "
        f"within deadline_ms={valid.deadline_ms}; granted {grown} instead of {width.branches} "
        f"(at most {bound})"
    )
    return replace(width, branches=grown, grow_reason=reason)


def cap_total(strategy: type[Strategy], width: Width) -> Width:
    """A strategy that launches at once never launches more than its first wave; no
    strategy's total is below its first wave."""
    total = width.branches if strategy.launch_mode is LaunchMode.AT_ONCE else width.max_branches
    return replace(width, max_branches=max(width.branches, total))


def planned_query(
    request: QueryRequest, config: ServiceConfig, valid: ValidRequest, width: Width
) -> PlannedQuery:
    """What the strategy sees: the request's prompt and options as the planner granted them."""
    defaults = config.strategy
    return PlannedQuery(
        query_id=request.query_id,
        strategy=valid.strategy.name,
        endpoint=request.endpoint,
        question=request.question,
        prompt=request.prompt,
        messages=request.messages,
        branches=width.branches,
        max_branches=width.max_branches,
        budget_tokens=valid.budget_tokens,
        max_tokens_per_branch=valid.max_tokens_per_branch,
        temperature=valid.temperature,
        top_p=valid.top_p,
        stop=request.stop,
        seed=request.seed,
        confidence=valid.confidence,
        extractor=defaults.extractor,
        answer_pattern=defaults.answer_pattern,
        has_verifier=defaults.verifier.kind != VerifierKind.NONE,
        accept_score=defaults.verifier.accept_score,
        beam=defaults.beam,
        budget_forcing=defaults.budget_forcing,
        deep_conf=valid.deep_conf,
        stopping_rule=valid.stopping_rule,
        give_up=defaults.give_up,
        wave_size=width.branches,
        probe=valid.probe,
        engine=request.engine,
    )


def beam_step_width(config: ServiceConfig, max_branches: int) -> int:
    """Branches of one beam-search step: every kept beam's expansions, B x K (the first step
    expands the root into as many), within the query's branch limit."""
    beam = config.strategy.beam
    return max(1, min(beam.width * beam.expansions, max_branches))


def expected_branch_seconds(load: LoadSnapshot, max_tokens_per_branch: int) -> float | None:
    """Expected duration of one branch from observed speed and length, or None if unobserved.

    A speed of 0 (workers reporting no generation time, e.g. an instant engine) tells nothing
    about how many branches fit a deadline, so it counts as unobserved.
    """
    if load.seconds_per_token is None or load.seconds_per_token <= 0:
        return None
    tokens = float(max_tokens_per_branch)
    if load.mean_completion_tokens is not None:
        tokens = min(tokens, load.mean_completion_tokens)
    return max(tokens, 1.0) * load.seconds_per_token


def fit_to_deadline(
    wanted: int,
    slots: int,
    outstanding: int,
    branch_seconds: float,
    deadline_seconds: float,
    headroom: float = DEADLINE_HEADROOM,
) -> int:
    """The most branches (1..wanted) expected to finish within the deadline's headroom.

    `outstanding + B` branches need `ceil((outstanding + B) / slots)` rounds of
    `branch_seconds`. If not even one round fits, only what can start at once is granted: a
    queued branch could not finish in time anyway.
    """
    slots = max(1, slots)
    capacity = pool_capacity(slots, branch_seconds, deadline_seconds, headroom) - outstanding
    return max(1, min(wanted, capacity))


def pool_capacity(
    slots: int, branch_seconds: float, deadline_seconds: float, headroom: float
) -> int:
    """Branches the pool's slots finish within `headroom` of the deadline (one round at
    least: what can start at once)."""
    rounds_fit = int(deadline_seconds * headroom / branch_seconds)
    return max(1, rounds_fit) * max(1, slots)


def shed_load(valid: ValidRequest, load: LoadSnapshot, config: ServiceConfig) -> PlanError | None:
    """A Sheddable query's 503 when the pool is overloaded for it: the branches outstanding
    fill every slot for as many rounds as fit in its share of the deadline
    (`SHEDDABLE_HEADROOM`), so none of its branches would even start in time. `Retry-After`
    is how long those rounds take to drain to below that. Never on a cold start or a cold
    pool, never for another class."""
    if valid.priority is not Priority.SHEDDABLE or load.cold:
        return None
    slots = load.workers * config.slots_per_worker if load.workers else None
    branch_seconds = expected_branch_seconds(load, valid.max_tokens_per_branch)
    if slots is None or branch_seconds is None:
        return None
    deadline_seconds = valid.deadline_ms / 1000.0
    capacity = pool_capacity(slots, branch_seconds, deadline_seconds, SHEDDABLE_HEADROOM)
    outstanding = load.branches_outstanding
    if outstanding < capacity:
        return None
    excess_rounds = (outstanding - capacity) // slots + 1
    retry_after = max(1, math.ceil(excess_rounds * branch_seconds))
    return PlanError(
        "",  # no parameter of the request: the load
        f"the service is overloaded for Sheddable queries: {outstanding} branches outstanding "
        f"on {slots} slots at ~{branch_seconds:.3g}s per branch would not let one start within "
        f"{SHEDDABLE_HEADROOM:g} of deadline_ms={valid.deadline_ms}; retry after {retry_after}s, "
        "or use a key of a higher priority class",
        code="overloaded",
        status=503,
        retry_after_seconds=retry_after,
    )


def waves_within_deadline(
    wave_size: int,
    slots: int,
    branch_seconds: float,
    deadline_seconds: float,
    headroom: float = DEADLINE_HEADROOM,
) -> int:
    """How many waves of `wave_size` branches, each after the last, fit the deadline's
    headroom (at least 1: the first wave runs whatever the estimate says)."""
    wave_seconds = math.ceil(wave_size / slots) * branch_seconds
    return max(1, int(deadline_seconds * headroom / wave_seconds))


def pick_branches_per_job(wave_size: int, max_per_job: int, workers: int | None) -> int:
    """k, the branches one job carries (docs/architecture.md, "Request flow": branch locality).

    As large as the service allows, so that branches share the prompt's KV cache in one vLLM
    request, but no larger than a fair share of the wave per known worker, so that a wide
    query spreads over the pool instead of waiting on one worker.
    """
    k = min(max(1, wave_size), max_per_job)
    if workers and workers > 1:
        k = min(k, math.ceil(wave_size / workers))
    return max(1, k)


def _exceeds(name: str, value: int, limit: str) -> PlanError:
    return PlanError(name, f"{name}={value} exceeds {limit}", limit=limit, code="limit_exceeded")


def _not_positive(name: str, value: int) -> PlanError:
    return PlanError(name, f"{name}={value} must be at least 1")
