"""The planner under any request: it plans within every limit, or refuses naming the field.

Hypothesis draws every `ponder` option and OpenAI sampling field from the whole of its type
(ints of any size and sign, floats with nan and infinities, any text for the strategy and the
early exit) mixed with values near the limits, over a few service configurations and load
snapshots. Derandomized and database-less: every run draws the same examples.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.api.service_config import (
    BeamConfig,
    BudgetConfig,
    EarlyExit,
    ServiceConfig,
    SloConfig,
    StrategyDefaults,
    VerifierConfig,
    VerifierKind,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import MAX_STOP_STRINGS, Endpoint
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.planner import Plan, PlanError, QueryRequest, plan_query
from ponder.scheduler.strategies import STRATEGIES
from ponder.scheduler.strategies.base import LaunchMode

CONFIGS = (
    ServiceConfig(
        name="math",
        model="tiny",
        max_model_len=256,
        strategy=StrategyDefaults(
            default=StrategyName.SELF_CONSISTENCY, branches=8, max_branches=32
        ),
        budget=BudgetConfig(default_tokens=4096, max_tokens=16384, max_tokens_per_branch=128),
        slo=SloConfig(target_latency_ms=5000, max_deadline_ms=60_000),
        slots_per_worker=8,
    ),
    # Few strategies allowed, a verifier, a tight budget, no model length, a long SLO target
    # (over maxDeadlineMs: the default deadline is still within it).
    ServiceConfig(
        name="narrow",
        model="tiny",
        strategy=StrategyDefaults(
            default=StrategyName.BEST_OF_N,
            allowed=[StrategyName.BEST_OF_N, StrategyName.BEAM_SEARCH, StrategyName.SINGLE],
            branches=2,
            max_branches=4,
            branches_per_job=2,
            verifier=VerifierConfig(kind=VerifierKind.HTTP, url="http://verifier:8080"),
            beam=BeamConfig(width=2, expansions=3, max_steps=2),
        ),
        budget=BudgetConfig(default_tokens=64, max_tokens=100, max_tokens_per_branch=48),
        slo=SloConfig(target_latency_ms=90_000, max_deadline_ms=3_000),
        slots_per_worker=1,
    ),
    ServiceConfig(name="defaults", model="tiny"),
)


def mostly(near: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`near` nine times in ten, else `wild`: with a dozen fields each wild as often as not,
    the first check would refuse nearly every example and the later ones would go untried."""
    return st.sampled_from(range(10)).flatmap(lambda i: wild if i == 5 else near)


WILD_INT = st.one_of(st.integers(), st.sampled_from([2**31, 2**63, 2**70, -(2**70)]))


def any_int(low: int, high: int) -> st.SearchStrategy[int | None]:
    """Absent, around the limits (`low`..`high` spans 0 and them), or any int at all."""
    return mostly(st.one_of(st.none(), st.integers(low, high)), WILD_INT)


ANY_FLOAT = mostly(
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
    st.floats(),  # nan, +-inf, subnormals, huge, negative
)
ANY_STRATEGY = mostly(
    st.one_of(st.none(), st.sampled_from([name.value for name in StrategyName])),
    st.text(max_size=20),
)
ANY_EARLY_EXIT = mostly(
    st.one_of(st.none(), st.sampled_from([mode.value for mode in EarlyExit])),
    st.text(max_size=20),
)
OPTIONS = st.builds(
    PonderOptions,
    strategy=ANY_STRATEGY,
    branches=any_int(-1, 40),
    max_branches=any_int(-1, 40),
    budget_tokens=any_int(-1, 20_000),
    deadline_ms=any_int(-1, 70_000),
    confidence=ANY_FLOAT,
    early_exit=ANY_EARLY_EXIT,
)
REQUESTS = st.builds(
    QueryRequest,
    query_id=st.just("q1"),
    endpoint=st.sampled_from(Endpoint),
    question=st.just("1+2"),
    prompt=st.just("Q:1+2 A:"),
    messages=st.none(),
    ponder=OPTIONS,
    max_tokens=any_int(-1, 1100),
    temperature=ANY_FLOAT,
    top_p=ANY_FLOAT,
    stop=mostly(
        st.lists(st.text(max_size=4), max_size=MAX_STOP_STRINGS),
        st.lists(st.text(max_size=4), max_size=MAX_STOP_STRINGS + 4),
    ).map(tuple),
    seed=st.one_of(st.none(), st.integers()),
    n=mostly(st.sampled_from([None, 1]), st.integers()),
)
# What a scheduler observes: counts, and speeds a clock can measure. Below 1e-9 s per token (a
# subnormal, which only a forged branch result could report) `fit_to_deadline` overflows.
LOADS = st.one_of(
    st.none(),
    st.builds(
        LoadSnapshot,
        branches_outstanding=st.integers(min_value=0, max_value=100_000),
        workers=st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
        seconds_per_token=st.one_of(st.none(), st.just(0.0), st.floats(1e-9, 60.0)),
        mean_completion_tokens=st.one_of(st.none(), st.floats(0.0, 1e6)),
    ),
)

FIELDS = {
    "ponder.strategy",
    "ponder.branches",
    "ponder.max_branches",
    "ponder.budget_tokens",
    "ponder.deadline_ms",
    "ponder.confidence",
    "ponder.early_exit",
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
}
"""Every request field the planner may refuse: each one a client sets."""

PROPERTY_SETTINGS = settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def request_value(request: QueryRequest, field: str) -> Any:
    """The value the request gives `field` (`ponder.x` or a top-level sampling field)."""
    if field.startswith("ponder."):
        return getattr(request.ponder, field.removeprefix("ponder."))
    return getattr(request, field)


def without(request: QueryRequest, field: str) -> QueryRequest:
    """The request with `field` left out, as a client that does not set it sends it."""
    if field.startswith("ponder."):
        name = field.removeprefix("ponder.")
        return replace(request, ponder=request.ponder.model_copy(update={name: None}))
    cleared: dict[str, Any] = {field: () if field == "stop" else None}
    return replace(request, **cleared)


def assert_within_limits(plan: Plan, request: QueryRequest, config: ServiceConfig) -> None:
    query, options = plan.query, request.ponder
    strategy = STRATEGIES[query.strategy]
    limits, budget, slo = config.strategy, config.budget, config.slo
    assert query.strategy in limits.allowed
    assert not strategy.needs_verifier or query.has_verifier
    assert 1 <= query.branches <= query.max_branches <= limits.max_branches
    assert query.wave_size == query.branches
    assert 1 <= plan.requested_branches <= limits.max_branches
    if options.max_branches is not None:
        assert query.max_branches <= options.max_branches
    if strategy.single_branch:
        assert query.branches == query.max_branches == 1
    assert 1 <= query.budget_tokens <= budget.max_tokens
    if options.budget_tokens is not None:
        assert query.budget_tokens == options.budget_tokens
    assert (
        1 <= query.max_tokens_per_branch <= min(budget.max_tokens_per_branch, query.budget_tokens)
    )
    if request.max_tokens is not None:
        assert query.max_tokens_per_branch <= request.max_tokens
    if config.max_model_len is not None:
        assert query.max_tokens_per_branch < config.max_model_len
    if strategy.launch_mode is not LaunchMode.STEPS:
        # Every branch it may launch, at full length, is paid for by the budget (a step-wise
        # search asks for what the budget has left at each step instead).
        assert query.max_branches * query.max_tokens_per_branch <= query.budget_tokens
    assert 1 <= plan.deadline_ms <= slo.max_deadline_ms
    if options.deadline_ms is not None:
        assert plan.deadline_ms == options.deadline_ms
    assert 1 <= plan.branches_per_job <= min(limits.branches_per_job, query.branches)
    assert 0.0 < query.confidence < 1.0
    assert 0.0 <= query.temperature <= 5.0
    assert 0.0 < query.top_p <= 1.0
    assert len(query.stop) <= MAX_STOP_STRINGS
    assert request.n in (None, 1)
    assert query.probe is None or strategy.may_exit_early


def assert_names_its_field(
    error: PlanError, request: QueryRequest, config: ServiceConfig, load: LoadSnapshot | None
) -> None:
    assert error.field in FIELDS, error
    assert error.message, error
    # The client set that field (nothing it left out is blamed) ...
    assert request_value(request, error.field) not in (None, ()), error
    if error.code == "limit_exceeded":
        assert error.limit and error.limit in error.message, error
    # ... and it is what is wrong: without it, that refusal is gone.
    again = plan_query(without(request, error.field), config, load)
    assert not (isinstance(again, PlanError) and again.field == error.field), (error, again)


@PROPERTY_SETTINGS
@given(request=REQUESTS, config=st.sampled_from(CONFIGS), load=LOADS)
def test_any_request_plans_within_every_limit_or_names_the_field_it_breaks(
    request: QueryRequest, config: ServiceConfig, load: LoadSnapshot | None
) -> None:
    result = plan_query(request, config, load)
    if isinstance(result, PlanError):
        assert_names_its_field(result, request, config, load)
    else:
        assert_within_limits(result, request, config)


@PROPERTY_SETTINGS
@given(
    options=st.builds(
        PonderOptions,
        strategy=st.sampled_from([name.value for name in StrategyName]),
        branches=st.one_of(st.none(), st.integers(1, 4)),
        max_branches=st.one_of(st.none(), st.integers(4, 32)),
        budget_tokens=st.one_of(st.none(), st.integers(1, 100)),
        deadline_ms=st.one_of(st.none(), st.integers(1, 3_000)),
        confidence=st.one_of(st.none(), st.floats(0.01, 0.99)),
    ),
    load=LOADS,
)
def test_a_request_within_the_limits_is_planned(
    options: PonderOptions, load: LoadSnapshot | None
) -> None:
    # The generator above reaches plans too: this one makes sure most examples are plans, so
    # the limits of a Plan are checked on many (every config here allows what it draws).
    config = ServiceConfig(
        name="wide",
        model="tiny",
        strategy=StrategyDefaults(max_branches=32, beam=BeamConfig(width=2, expansions=2)),
        budget=BudgetConfig(default_tokens=64, max_tokens=100, max_tokens_per_branch=16),
        slo=SloConfig(target_latency_ms=1_000, max_deadline_ms=3_000),
    )
    request = QueryRequest(
        query_id="q1",
        endpoint=Endpoint.COMPLETIONS,
        question="1+2",
        prompt="Q:1+2 A:",
        messages=None,
        ponder=options,
    )
    result = plan_query(request, config, load)
    assert isinstance(result, Plan), result
    assert_within_limits(result, request, config)
