"""The planner: defaults, limits with their names, and shrinking under load or a near deadline."""

from __future__ import annotations

from typing import Any

import pytest

from ponder.api.service_config import (
    AnswerProbe,
    BeamConfig,
    BudgetConfig,
    DeepConfConfig,
    DeepConfMode,
    EarlyExit,
    EarlyExitConfig,
    ServiceConfig,
    SloConfig,
    StoppingRule,
    StrategyDefaults,
    VerifierConfig,
    VerifierKind,
)
from ponder.api.strategy import StrategyName
from ponder.api.wire import ChatMessage, Endpoint
from ponder.scheduler.api_models import PonderOptions
from ponder.scheduler.load import LoadSnapshot
from ponder.scheduler.planner import (
    Plan,
    PlanError,
    QueryRequest,
    fit_to_deadline,
    pick_branches_per_job,
    plan_query,
    spec_name,
)
from tests.unit.recorded_branches import Reply, drive_query

CONFIG = ServiceConfig(
    name="math",
    model="tiny",
    max_model_len=256,
    strategy=StrategyDefaults(
        default=StrategyName.SELF_CONSISTENCY,
        branches=8,
        max_branches=32,
        branches_per_job=4,
        temperature=0.7,
        confidence=0.9,
    ),
    budget=BudgetConfig(default_tokens=4096, max_tokens=16384, max_tokens_per_branch=128),
    slo=SloConfig(target_latency_ms=5000, max_deadline_ms=60_000),
    slots_per_worker=8,
)


def request(**fields: Any) -> QueryRequest:
    ponder = PonderOptions(**fields.pop("ponder", {}))
    return QueryRequest(
        query_id="q1",
        endpoint=Endpoint.COMPLETIONS,
        question="1+2",
        prompt="Q:1+2 A:",
        messages=None,
        ponder=ponder,
        **fields,
    )


def planned(result: Plan | PlanError) -> Plan:
    assert isinstance(result, Plan), result
    return result


def refused(result: Plan | PlanError) -> PlanError:
    assert isinstance(result, PlanError), result
    return result


def test_defaults_come_from_the_service() -> None:
    plan = planned(plan_query(request(), CONFIG))
    query = plan.query
    assert query.strategy == StrategyName.SELF_CONSISTENCY
    assert (query.branches, query.max_branches, query.wave_size) == (8, 8, 8)
    assert query.budget_tokens == 4096
    assert query.max_tokens_per_branch == 128
    assert (query.temperature, query.top_p, query.confidence) == (0.7, 1.0, 0.9)
    assert plan.deadline_ms == 5000
    assert plan.branches_per_job == 4
    assert not plan.shrunk


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"ponder": {"strategy": "tree-of-thought"}},
            "ponder.strategy",
            "unknown strategy 'tree-of-thought'",
        ),
        (
            {"ponder": {"branches": 64}},
            "ponder.branches",
            "ponder.branches=64 exceeds spec.strategy.maxBranches=32",
        ),
        (
            {"ponder": {"max_branches": 33}},
            "ponder.max_branches",
            "ponder.max_branches=33 exceeds spec.strategy.maxBranches=32",
        ),
        (
            {"ponder": {"branches": 12, "max_branches": 10}},
            "ponder.branches",
            "ponder.branches=12 exceeds ponder.max_branches=10",
        ),
        ({"ponder": {"branches": 0}}, "ponder.branches", "ponder.branches=0 must be at least 1"),
        (
            {"ponder": {"budget_tokens": -5}},
            "ponder.budget_tokens",
            "ponder.budget_tokens=-5 must be at least 1",
        ),
        (
            {"ponder": {"budget_tokens": 0}},
            "ponder.budget_tokens",
            "ponder.budget_tokens=0 must be at least 1",
        ),
        (
            {"ponder": {"budget_tokens": 20000}},
            "ponder.budget_tokens",
            "ponder.budget_tokens=20000 exceeds spec.budget.maxTokens=16384",
        ),
        (
            {"ponder": {"deadline_ms": 61_000}},
            "ponder.deadline_ms",
            "ponder.deadline_ms=61000 exceeds spec.slo.maxDeadlineMs=60000",
        ),
        (
            {"ponder": {"deadline_ms": 0}},
            "ponder.deadline_ms",
            "ponder.deadline_ms=0 must be at least 1",
        ),
        (
            {"ponder": {"confidence": 1.0}},
            "ponder.confidence",
            "ponder.confidence=1.0 must be between 0 and 1",
        ),
        (
            {"max_tokens": 500},
            "max_tokens",
            "max_tokens=500 exceeds spec.budget.maxTokensPerBranch=128",
        ),
        ({"max_tokens": 0}, "max_tokens", "max_tokens=0 must be at least 1"),
        ({"n": 4}, "n", "n=4 is not supported; ask for more samples with ponder.branches"),
        ({"temperature": 7.0}, "temperature", "temperature=7.0 must be within [0, 5]"),
        ({"top_p": 0.0}, "top_p", "top_p=0.0 must be within (0, 1]"),
        ({"stop": tuple("abcdefghi")}, "stop", "9 stop strings exceed the limit of 8"),
    ],
)
def test_refusals_name_the_field_and_the_limit(
    fields: dict[str, Any], field: str, message: str
) -> None:
    error = refused(plan_query(request(**fields), CONFIG))
    assert error.field == field
    assert message in error.message


def test_strategy_outside_the_allowed_list_is_refused_with_the_list() -> None:
    config = CONFIG.model_copy(
        update={
            "strategy": CONFIG.strategy.model_copy(
                update={"allowed": [StrategyName.SINGLE, StrategyName.SELF_CONSISTENCY]}
            )
        }
    )
    error = refused(plan_query(request(ponder={"strategy": "beam-search"}), config))
    assert error.message == (
        "ponder.strategy=beam-search is not allowed by "
        "spec.strategy.allowed=[single,self-consistency]"
    )
    assert error.limit == "spec.strategy.allowed=[single,self-consistency]"


def test_max_tokens_must_leave_room_in_the_model_context() -> None:
    config = CONFIG.model_copy(update={"max_model_len": 64})
    error = refused(plan_query(request(max_tokens=100), config))
    assert error.message == "max_tokens=100 exceeds spec.maxModelLen=64"


@pytest.mark.parametrize(
    ("fields", "branches", "max_branches", "per_branch"),
    [
        # Explicit values win over defaults.
        ({"ponder": {"branches": 16}, "max_tokens": 64}, 16, 16, 64),
        # single is one branch whatever the request says.
        ({"ponder": {"strategy": "single", "branches": 8}}, 1, 1, 128),
        # Adaptive strategies keep their cap above the first wave.
        ({"ponder": {"strategy": "adaptive-consistency", "branches": 4}}, 4, 32, 128),
        (
            {"ponder": {"strategy": "adaptive-consistency", "branches": 4, "max_branches": 12}},
            4,
            12,
            128,
        ),
        # Without max_tokens, the budget is split over the branches.
        ({"ponder": {"branches": 16, "budget_tokens": 512}}, 16, 16, 32),
        # An adaptive search splits the budget over all the branches it may launch ...
        (
            {"ponder": {"strategy": "adaptive-consistency", "budget_tokens": 1024}},
            8,
            32,
            32,
        ),
        # ... and with an explicit cap, the budget caps how many it may launch.
        (
            {
                "ponder": {"strategy": "adaptive-consistency", "budget_tokens": 1024},
                "max_tokens": 128,
            },
            8,
            8,
            128,
        ),
    ],
)
def test_branch_counts_and_token_caps(
    fields: dict[str, Any], branches: int, max_branches: int, per_branch: int
) -> None:
    query = planned(plan_query(request(**fields), CONFIG)).query
    assert (query.branches, query.max_branches, query.max_tokens_per_branch) == (
        branches,
        max_branches,
        per_branch,
    )


def test_explicit_max_tokens_over_the_budget_shrinks_the_branches_and_says_so() -> None:
    plan = planned(
        plan_query(request(max_tokens=100, ponder={"branches": 8, "budget_tokens": 450}), CONFIG)
    )
    assert plan.query.branches == 4
    assert plan.requested_branches == 8
    assert plan.shrink_reason is not None and plan.shrink_reason.startswith("budget:")


@pytest.mark.parametrize(
    ("load", "deadline_ms", "branches", "shrunk"),
    [
        # Cold start: nothing observed, nothing shrunk.
        (LoadSnapshot(branches_outstanding=1000), 5000, 16, False),
        # An idle pool of 2 workers x 8 slots runs 16 branches in one round of 1 s.
        (
            LoadSnapshot(0, workers=2, seconds_per_token=0.01, mean_completion_tokens=100),
            5000,
            16,
            False,
        ),
        # 56 outstanding on 16 slots: rounds fit = int(5 * 0.8 / 1) = 4 -> 64 - 56 = 8 branches.
        (
            LoadSnapshot(56, workers=2, seconds_per_token=0.01, mean_completion_tokens=100),
            5000,
            8,
            True,
        ),
        # Saturated beyond the deadline: one branch still runs (the deadline answers).
        (
            LoadSnapshot(500, workers=2, seconds_per_token=0.01, mean_completion_tokens=100),
            5000,
            1,
            True,
        ),
        # Near the deadline (branch of 1 s, deadline 0.5 s): only what starts at once.
        (
            LoadSnapshot(10, workers=2, seconds_per_token=0.01, mean_completion_tokens=100),
            500,
            6,
            True,
        ),
    ],
)
def test_load_and_deadline_shrink_the_branches(
    load: LoadSnapshot, deadline_ms: int, branches: int, shrunk: bool
) -> None:
    plan = planned(
        plan_query(
            request(
                max_tokens=128,
                ponder={"branches": 16, "deadline_ms": deadline_ms, "budget_tokens": 4096},
            ),
            CONFIG,
            load,
        )
    )
    assert plan.query.branches == branches
    assert plan.query.wave_size == branches
    assert plan.shrunk is shrunk
    if shrunk:
        assert plan.shrink_reason is not None and plan.shrink_reason.startswith("load:")


def test_adaptive_search_gets_no_more_waves_than_fit_the_deadline() -> None:
    load = LoadSnapshot(0, workers=1, seconds_per_token=0.01, mean_completion_tokens=100)
    plan = planned(
        plan_query(
            request(
                ponder={"strategy": "adaptive-consistency", "branches": 4, "deadline_ms": 2600}
            ),
            CONFIG,
            load,
        )
    )
    # A wave of 4 on 8 slots takes ~1 s; int(2.6 * 0.8 / 1) = 2 waves fit.
    assert plan.query.wave_size == 4
    assert plan.query.max_branches == 8


# The service defaults (budget 4096, 1024 tokens per branch, 32 branches) with beams of 4 x 4.
BEAM_CONFIG = ServiceConfig(
    name="beams",
    model="tiny",
    strategy=StrategyDefaults(beam=BeamConfig(width=4, expansions=4, max_steps=16)),
)


@pytest.mark.parametrize(
    ("config", "fields", "branches", "max_branches", "per_branch"),
    [
        # A step of 4 x 4 branches splits the budget: 4096 / 16 = 256 tokens per step branch,
        # and the search may take the branch limit over all its steps.
        (BEAM_CONFIG, {}, 16, 32, 256),
        # 1024 tokens per branch: counted as full-length branches, the budget paid for 4 (not
        # even one step); beam steps are sized by what the budget has left, so the limit holds.
        (BEAM_CONFIG, {"max_tokens": 1024}, 16, 32, 1024),
        # A tiny budget still gets its steps; each step's branches get their share of it.
        (BEAM_CONFIG, {"ponder": {"budget_tokens": 64}}, 16, 32, 4),
        # A branch limit below the beam narrows the step.
        (BEAM_CONFIG, {"ponder": {"max_branches": 8}}, 8, 8, 512),
        # No more branches than max_steps steps can use.
        (
            BEAM_CONFIG.model_copy(
                update={
                    "strategy": StrategyDefaults(
                        max_branches=256, beam=BeamConfig(width=2, expansions=3, max_steps=5)
                    )
                }
            ),
            {},
            6,
            30,
            682,
        ),
    ],
)
def test_beam_search_cap_counts_short_steps_not_full_length_branches(
    config: ServiceConfig, fields: dict[str, Any], branches: int, max_branches: int, per_branch: int
) -> None:
    fields = {**fields, "ponder": {"strategy": "beam-search", **fields.get("ponder", {})}}
    query = planned(plan_query(request(**fields), config)).query
    assert (query.branches, query.max_branches, query.max_tokens_per_branch) == (
        branches,
        max_branches,
        per_branch,
    )
    assert query.wave_size == branches


def test_planned_beam_search_runs_more_than_one_step_on_the_default_budget() -> None:
    query = planned(
        plan_query(request(max_tokens=1024, ponder={"strategy": "beam-search"}), BEAM_CONFIG)
    ).query
    # Every step adds a line and never an answer: the search goes on while it may.
    run = drive_query(query, lambda _request, _index: Reply("12+3=15", tokens=6, score=0.5))
    assert run.launch_sizes == [16, 16]  # two full steps within the 32-branch limit
    assert run.spent_tokens <= query.budget_tokens


def test_beam_search_gets_no_more_steps_than_fit_the_deadline() -> None:
    load = LoadSnapshot(0, workers=2, seconds_per_token=0.01, mean_completion_tokens=100)
    plan = planned(
        plan_query(
            request(ponder={"strategy": "beam-search", "deadline_ms": 1300}), BEAM_CONFIG, load
        )
    )
    # A step of 16 on 2 x 32 slots takes ~1 s; int(1.3 * 0.8 / 1) = 1 step fits.
    assert plan.query.branches == 16
    assert plan.query.max_branches == 16
    assert not plan.shrunk


@pytest.mark.parametrize(
    ("wanted", "slots", "outstanding", "branch_seconds", "deadline_seconds", "granted"),
    [
        (8, 16, 0, 1.0, 10.0, 8),
        (8, 16, 120, 1.0, 10.0, 8),  # rounds fit = 8 -> capacity 128 - 120 = 8
        (8, 16, 125, 1.0, 10.0, 3),
        (8, 16, 200, 1.0, 10.0, 1),
        (8, 16, 12, 5.0, 2.0, 4),  # no round fits: only free slots
    ],
)
def test_fit_to_deadline(
    wanted: int,
    slots: int,
    outstanding: int,
    branch_seconds: float,
    deadline_seconds: float,
    granted: int,
) -> None:
    assert fit_to_deadline(wanted, slots, outstanding, branch_seconds, deadline_seconds) == granted


@pytest.mark.parametrize(
    ("wave", "max_per_job", "workers", "k"),
    [
        (8, 4, None, 4),  # unknown pool: as large as allowed
        (2, 4, None, 2),  # never more than the wave
        (8, 4, 2, 4),  # two workers get a job each
        (8, 8, 4, 2),  # a wide pool spreads the wave
        (32, 8, 2, 8),  # a wide wave keeps the cap (prefix sharing)
        (1, 4, 8, 1),
    ],
)
def test_branches_per_job_shares_prefixes_and_spreads_wide_waves(
    wave: int, max_per_job: int, workers: int | None, k: int
) -> None:
    assert pick_branches_per_job(wave, max_per_job, workers) == k


def test_chat_requests_keep_their_messages() -> None:
    messages = (ChatMessage(role="user", content="1+2"),)
    query = planned(
        plan_query(
            QueryRequest(
                query_id="q2",
                endpoint=Endpoint.CHAT,
                question="1+2",
                prompt=None,
                messages=messages,
                seed=7,
                stop=("\n",),
            ),
            CONFIG,
        )
    ).query
    assert query.messages == messages
    assert (query.seed, query.stop, query.endpoint) == (7, ("\n",), Endpoint.CHAT)


@pytest.mark.parametrize(
    ("section", "name", "path"),
    [
        ("strategy", "max_branches", "spec.strategy.maxBranches"),
        ("budget", "max_tokens_per_branch", "spec.budget.maxTokensPerBranch"),
        ("", "max_model_len", "spec.maxModelLen"),
    ],
)
def test_spec_names_are_the_crd_spelling(section: str, name: str, path: str) -> None:
    assert spec_name(section, name) == path


PROBING = CONFIG.model_copy(
    update={
        "strategy": CONFIG.strategy.model_copy(
            update={
                "early_exit": EarlyExitConfig(
                    default=EarlyExit.ANSWER_PROBE, probe=AnswerProbe(every_tokens=24)
                )
            }
        )
    }
)


@pytest.mark.parametrize(
    ("config", "ponder", "probe"),
    [
        (CONFIG, {}, None),  # the service's default: none
        (CONFIG, {"early_exit": "answer-probe"}, AnswerProbe()),
        (PROBING, {}, AnswerProbe(every_tokens=24)),
        (PROBING, {"early_exit": "none"}, None),
        # A default the strategy cannot use is done without, not refused.
        (PROBING, {"strategy": "beam-search"}, None),
        (PROBING, {"strategy": "budget-forcing"}, None),
        (PROBING, {"strategy": "single"}, AnswerProbe(every_tokens=24)),
    ],
)
def test_early_exit_as_asked_else_the_service_default(
    config: ServiceConfig, ponder: dict[str, Any], probe: AnswerProbe | None
) -> None:
    assert planned(plan_query(request(ponder=ponder), config)).query.probe == probe


@pytest.mark.parametrize(
    ("ponder", "code", "message"),
    [
        (
            {"early_exit": "soon"},
            "invalid_value",
            "unknown early exit 'soon'; use one of: none, answer-probe",
        ),
        (
            {"early_exit": "answer-probe", "strategy": "refine"},
            "early_exit_unsupported",
            "ponder.early_exit=answer-probe does not apply to ponder.strategy=refine",
        ),
    ],
)
def test_an_early_exit_that_cannot_apply_is_refused(
    ponder: dict[str, Any], code: str, message: str
) -> None:
    error = refused(plan_query(request(ponder=ponder), HAS_VERIFIER))
    assert error.field == "ponder.early_exit" and error.code == code
    assert message in error.message


@pytest.mark.parametrize(
    ("ponder", "mode"),
    [
        ({"strategy": "deep-conf"}, DeepConfMode.ONLINE),  # the service's default
        ({"strategy": "deep-conf", "deep_conf_mode": "offline"}, DeepConfMode.OFFLINE),
        ({"strategy": "deep-conf", "deep_conf_mode": "online"}, DeepConfMode.ONLINE),
    ],
)
def test_deep_conf_runs_in_the_mode_asked_else_the_services(
    ponder: dict[str, Any], mode: DeepConfMode
) -> None:
    query = planned(plan_query(request(ponder=ponder), CONFIG)).query
    assert query.deep_conf == DeepConfConfig(mode=mode)


@pytest.mark.parametrize(
    ("ponder", "message"),
    [
        (
            {"strategy": "deep-conf", "deep_conf_mode": "later"},
            "unknown deep-conf mode 'later'; use one of: offline, online",
        ),
        (
            {"strategy": "self-consistency", "deep_conf_mode": "offline"},
            "ponder.deep_conf_mode applies to ponder.strategy=deep-conf only",
        ),
    ],
)
def test_a_deep_conf_mode_that_cannot_apply_is_refused(
    ponder: dict[str, Any], message: str
) -> None:
    error = refused(plan_query(request(ponder=ponder), CONFIG))
    assert error.field == "ponder.deep_conf_mode" and message in error.message


def test_the_planned_query_carries_the_verifiers_accept_score() -> None:
    verifier = VerifierConfig(kind=VerifierKind.HTTP, url="http://v", accept_score=0.7)
    config = CONFIG.model_copy(
        update={"strategy": CONFIG.strategy.model_copy(update={"verifier": verifier})}
    )
    assert planned(plan_query(request(), config)).query.accept_score == 0.7
    assert planned(plan_query(request(), CONFIG)).query.accept_score == 0.99


def test_the_planned_query_carries_the_services_give_up_share() -> None:
    config = CONFIG.model_copy(
        update={"strategy": CONFIG.strategy.model_copy(update={"give_up": 0.3})}
    )
    assert planned(plan_query(request(), config)).query.give_up == 0.3


HAS_VERIFIER = CONFIG.model_copy(
    update={
        "strategy": CONFIG.strategy.model_copy(
            update={"verifier": VerifierConfig(kind=VerifierKind.HTTP, url="http://v")}
        )
    }
)


@pytest.mark.parametrize(
    ("ponder", "config", "rule"),
    [
        ({"strategy": "adaptive-consistency"}, CONFIG, StoppingRule.BETA),  # no verifier
        ({"strategy": "adaptive-consistency"}, HAS_VERIFIER, StoppingRule.VERIFIER),
        (
            {"strategy": "adaptive-consistency", "stopping_rule": "window"},
            HAS_VERIFIER,
            StoppingRule.WINDOW,
        ),
        (
            {"strategy": "adaptive-consistency", "stopping_rule": "confidence"},
            CONFIG,
            StoppingRule.CONFIDENCE,
        ),
        (
            {"strategy": "adaptive-consistency"},
            CONFIG.model_copy(
                update={
                    "strategy": CONFIG.strategy.model_copy(
                        update={"stopping_rule": StoppingRule.WINDOW}
                    )
                }
            ),
            StoppingRule.WINDOW,
        ),
    ],
)
def test_adaptive_consistency_stops_by_the_rule_asked_else_the_services(
    ponder: dict[str, Any], config: ServiceConfig, rule: StoppingRule
) -> None:
    query = planned(plan_query(request(ponder=ponder), config)).query
    assert query.stopping_rule is rule


@pytest.mark.parametrize(
    ("ponder", "message"),
    [
        (
            {"strategy": "adaptive-consistency", "stopping_rule": "soon"},
            "unknown stopping rule 'soon'; use one of: beta, window, confidence, verifier",
        ),
        (
            {"strategy": "self-consistency", "stopping_rule": "window"},
            "ponder.stopping_rule applies to ponder.strategy=adaptive-consistency only",
        ),
        (
            {"strategy": "adaptive-consistency", "stopping_rule": "verifier"},
            "ponder.stopping_rule=verifier needs a verifier, and this service has none",
        ),
    ],
)
def test_a_stopping_rule_that_cannot_apply_is_refused(ponder: dict[str, Any], message: str) -> None:
    error = refused(plan_query(request(ponder=ponder), CONFIG))
    assert error.field == "ponder.stopping_rule" and message in error.message
