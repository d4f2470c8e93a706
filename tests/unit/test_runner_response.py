"""Finished queries -> OpenAI bodies and SSE chunks that the official client's types accept."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ponder.api.service_config import AnswerProbe, BeamConfig, BudgetForcingConfig, ExtractorKind
from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchResult, BranchStatus, ChatMessage, Endpoint
from ponder.scheduler.outcome import (
    NoAnswerReason,
    QueryOutcome,
    engine_rejection,
    stopped_early,
)
from ponder.scheduler.planner import Plan
from ponder.scheduler.response import (
    chat_response,
    completion_response,
    no_answer_error,
    ponder_info,
    stream_events,
)
from ponder.scheduler.sse import text_pieces
from ponder.scheduler.strategies.base import BranchRequest, FinalAnswer, PlannedQuery, ScoredBranch

QUERY = PlannedQuery(
    query_id="q1",
    strategy=StrategyName.SELF_CONSISTENCY,
    endpoint=Endpoint.COMPLETIONS,
    question="1+2",
    prompt="Q:1+2 A:",
    messages=None,
    branches=4,
    max_branches=4,
    budget_tokens=400,
    max_tokens_per_branch=100,
    temperature=0.7,
    top_p=1.0,
    stop=(),
    seed=None,
    confidence=0.9,
    extractor=ExtractorKind.AUTO,
    has_verifier=False,
    beam=BeamConfig(),
    budget_forcing=BudgetForcingConfig(),
    wave_size=4,
)
ANSWER_TEXT = "1+2=3 so the answer is #3 and that is that, plainly and simply"


def branch(index: int, status: BranchStatus, prompt: int, completion: int) -> ScoredBranch:
    result = BranchResult(
        query_id="q1",
        job_id="q1-j0",
        branch_id=f"q1-{index}",
        status=status,
        text="1+2=3 #3",
        prompt_tokens=prompt,
        completion_tokens=completion,
        worker_id="w1",
    )
    answer = "3" if status is BranchStatus.COMPLETED else None
    return ScoredBranch(request=BranchRequest(n=4, max_tokens=100), result=result, answer=answer)


def outcome(
    endpoint: Endpoint = Endpoint.COMPLETIONS, plan_probe: bool = False, **fields: Any
) -> QueryOutcome:
    query = replace(
        QUERY,
        probe=AnswerProbe() if plan_probe else None,
        endpoint=endpoint,
        prompt=None if endpoint is Endpoint.CHAT else QUERY.prompt,
        messages=(ChatMessage(role="user", content="1+2"),) if endpoint is Endpoint.CHAT else None,
    )
    plan = Plan(
        query=query,
        deadline_ms=1000,
        branches_per_job=4,
        requested_branches=8,
        shrink_reason="budget: 8 branches x 100 tokens exceed budget_tokens=400, granted 4",
    )
    defaults: dict[str, Any] = {
        "answer": FinalAnswer(
            text=ANSWER_TEXT, answer="3", confidence=0.75, votes={"3": 2.0}, finish_reason="stop"
        ),
        "branches": [
            branch(0, BranchStatus.COMPLETED, 9, 8),
            branch(1, BranchStatus.COMPLETED, 0, 8),
            branch(2, BranchStatus.CANCELLED, 0, 3),
        ],
        "launched": 4,
        "unreported": 1,
        "waves": 1,
        "deadline_exceeded": True,
        "latency_seconds": 1.0004,
    }
    return QueryOutcome(plan=plan, **{**defaults, **fields})


def test_ponder_object_accounts_for_every_launched_branch() -> None:
    info = ponder_info(outcome())
    assert (info.branches_launched, info.branches_completed) == (4, 2)
    # One cancelled result, one still running when the deadline answered.
    assert (info.branches_cancelled, info.branches_failed) == (2, 0)
    assert info.deadline_exceeded and info.answer == "3" and info.confidence == 0.75
    assert info.votes == {"3": 2.0}
    assert info.plan.shrunk and info.plan.requested_branches == 8
    # The one still running did not report within the usage settle time: usage misses it.
    assert info.branches_unreported == 1 and not info.usage_complete
    assert ponder_info(outcome(unreported=0)).usage_complete
    assert [b.id for b in info.branches] == ["q1-0", "q1-1", "q1-2"]


def test_usage_counts_every_result_received_whatever_its_status() -> None:
    body = completion_response(outcome(), "tiny", created=1).model_dump(mode="json")
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 19, "total_tokens": 28}
    parsed = Completion.model_validate(body)
    assert parsed.choices[0].text == ANSWER_TEXT
    assert (parsed.model_extra or {})["ponder"]["branches_launched"] == 4


def test_chat_response_is_an_openai_chat_completion() -> None:
    body = chat_response(outcome(Endpoint.CHAT), "tiny", created=1).model_dump(mode="json")
    parsed = ChatCompletion.model_validate(body)
    assert parsed.id == "chatcmpl-q1"
    assert parsed.choices[0].message.content == ANSWER_TEXT
    assert parsed.choices[0].finish_reason == "stop"


def events(endpoint: Endpoint, include_usage: bool) -> list[dict[str, Any]]:
    lines = list(stream_events(outcome(endpoint), "tiny", created=1, include_usage=include_usage))
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    assert lines[-1] == "data: [DONE]\n\n"
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_has_role_content_finish_and_usage_chunks(include_usage: bool) -> None:
    chunks = [ChatCompletionChunk.model_validate(e) for e in events(Endpoint.CHAT, include_usage)]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER_TEXT
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "stop"
    assert (finishing[0].model_extra or {})["ponder"]["deadline_exceeded"] is True
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == 28
    else:
        assert all(c.usage is None for c in chunks)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}


def test_completion_stream_chunks_are_text_completions() -> None:
    chunks = events(Endpoint.COMPLETIONS, True)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == ANSWER_TEXT
    assert {c["object"] for c in chunks} == {"text_completion"}
    # Chunks before the last carry finish_reason null, as vLLM's do (the client does not
    # validate streamed chunks); the finishing and usage chunks are complete Completions.
    finishing, usage = Completion.model_validate(chunks[-2]), Completion.model_validate(chunks[-1])
    assert finishing.choices[0].finish_reason == "stop"
    assert (finishing.model_extra or {})["ponder"]["query_id"] == "q1"
    assert usage.usage is not None and usage.usage.completion_tokens == 19


@pytest.mark.parametrize(
    "text", ["", "one", "  leading and trailing  ", "a b c d e f g h i j k l m n o p q", "x\ny\n"]
)
def test_text_pieces_reassemble_exactly(text: str) -> None:
    pieces = text_pieces(text, words_per_chunk=3)
    assert "".join(pieces) == text
    assert all(pieces)


@pytest.mark.parametrize(
    ("reason", "status", "code"),
    [
        (NoAnswerReason.DEADLINE, 504, "deadline_exceeded"),
        (NoAnswerReason.FAILED, 502, "no_answer"),
        (NoAnswerReason.UNAVAILABLE, 503, "queue_unavailable"),
    ],
)
def test_queries_without_an_answer_map_to_5xx_errors(reason: str, status: int, code: str) -> None:
    finished = outcome(answer=None, no_answer_reason=reason, no_answer_detail="why")
    got_status, body = no_answer_error(finished)
    assert (got_status, body.error.code, body.error.type) == (status, code, "server_error")
    assert body.error.message == "query q1: why"


CONTEXT_ERROR = "This model's maximum context length is 1024 tokens. However, you requested 2100"


def failed(index: int, *, rejected: bool, error: str = CONTEXT_ERROR) -> ScoredBranch:
    result = BranchResult(
        query_id="q1",
        job_id=f"q1-j{index}",
        branch_id=f"q1-{index}",
        status=BranchStatus.FAILED,
        error=error,
        rejected=rejected,
    )
    return ScoredBranch(request=BranchRequest(n=1, max_tokens=100), result=result, answer=None)


@pytest.mark.parametrize(
    ("branches", "rejection"),
    [
        ([failed(0, rejected=True), failed(1, rejected=True)], CONTEXT_ERROR),
        ([failed(0, rejected=True, error=""), failed(1, rejected=True)], CONTEXT_ERROR),
        ([failed(0, rejected=True), failed(1, rejected=False, error="EngineUnavailable")], None),
        ([failed(0, rejected=True), branch(1, BranchStatus.COMPLETED, 5, 5)], None),
        ([branch(0, BranchStatus.EXPIRED, 5, 0)], None),
        ([], None),  # nothing came back: a deadline or an unavailable queue, not a rejection
    ],
)
def test_only_a_query_whose_every_branch_the_engine_rejected_is_a_rejection(
    branches: list[ScoredBranch], rejection: str | None
) -> None:
    assert engine_rejection(outcome(answer=None, branches=branches)) == rejection


def test_a_rejected_query_is_a_400_with_the_engines_message() -> None:
    rejected = outcome(
        answer=None, no_answer_reason=NoAnswerReason.REJECTED, no_answer_detail=CONTEXT_ERROR
    )
    status, body = no_answer_error(rejected)
    assert status == 400
    assert body.model_dump() == {
        "error": {
            "message": CONTEXT_ERROR,
            "type": "invalid_request_error",
            "param": None,
            "code": "engine_rejected",
        }
    }


def test_the_ponder_object_counts_tokens_after_answers_and_early_exits() -> None:
    def settled(index: int, answer_tokens: int | None, probe_tokens: int, early: bool) -> Any:
        scored = branch(index, BranchStatus.COMPLETED, 0, 40)
        result = scored.result.model_copy(
            update={
                "answer_tokens": answer_tokens,
                "probes": 2 if probe_tokens else 0,
                "probe_tokens": probe_tokens,
                "early_exit": early,
            }
        )
        return replace(scored, result=result)

    branches = [settled(0, 10, 0, False), settled(1, 20, 8, True), settled(2, None, 0, False)]
    info = ponder_info(outcome(branches=branches, plan_probe=True))
    assert [b.tokens_after_answer for b in info.branches] == [30, 12, None]
    assert [b.answer_tokens for b in info.branches] == [10, 20, None]
    assert info.branches[1].probe_tokens == 8 and info.branches[1].early_exit
    assert info.tokens_after_answer == 42 and info.early_exits == 1
    assert info.plan.early_exit == "answer-probe"
    assert ponder_info(outcome()).plan.early_exit == "none"


def test_the_ponder_object_reports_confidence_and_low_confidence_stops() -> None:
    def measured(index: int, status: BranchStatus, confidence: float, low: bool) -> Any:
        scored = branch(index, status, 0, 12)
        update = {"confidence": confidence, "low_confidence": low}
        return replace(scored, result=scored.result.model_copy(update=update))

    branches = [
        measured(0, BranchStatus.COMPLETED, 0.9, False),
        measured(1, BranchStatus.CANCELLED, 0.2, True),
    ]
    info = ponder_info(outcome(branches=branches))
    assert [(b.confidence, b.low_confidence) for b in info.branches] == [(0.9, False), (0.2, True)]
    assert info.low_confidence_stops == 1


def test_the_ponder_object_says_when_the_strategy_gave_up() -> None:
    assert not ponder_info(outcome()).gave_up
    given_up = outcome()
    assert given_up.answer is not None
    given_up = replace(given_up, answer=replace(given_up.answer, gave_up=True))
    assert ponder_info(given_up).gave_up


@pytest.mark.parametrize(
    ("fields", "early"),
    [
        # Certain after 2 of its 4 branches: stopped early.
        ({"finished_by_strategy": True, "deadline_exceeded": False}, True),
        # Every branch it may run completed: no saving, whatever the strategy said.
        (
            {
                "finished_by_strategy": True,
                "deadline_exceeded": False,
                "branches": [branch(i, BranchStatus.COMPLETED, 0, 8) for i in range(4)],
            },
            False,
        ),
        ({"finished_by_strategy": False, "deadline_exceeded": False}, False),
        ({"finished_by_strategy": True, "deadline_exceeded": True}, False),  # cut, not certain
        ({"finished_by_strategy": True, "deadline_exceeded": False, "answer": None}, False),
    ],
)
def test_a_query_stopped_early_when_its_strategy_answered_before_its_cap(
    fields: dict[str, Any], early: bool
) -> None:
    ended = outcome(**fields)
    assert ended.plan.query.max_branches == 4
    assert stopped_early(ended) is early
