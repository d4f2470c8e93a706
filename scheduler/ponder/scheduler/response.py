"""A finished query -> OpenAI response bodies, SSE chunks and error bodies (pure).

Streaming (`stream: true`) renders through `sse.py`: the runner's events as they happen, then
`stream_closing` (the finishing and usage chunks, or the in-stream error of a query left
without an answer). A query that ends before anything streamed (refused by the queue, say)
answers as without streaming: a JSON error with its status, or `stream_events`.
"""

from __future__ import annotations

from collections.abc import Iterator

from ponder.api.service_config import EarlyExit
from ponder.api.strategy import StrategyName
from ponder.api.wire import BranchStatus, Endpoint
from ponder.scheduler.api_models import (
    BranchInfo,
    ChatChoice,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionResponse,
    ErrorBody,
    ErrorResponse,
    PlanInfo,
    PonderInfo,
    ResponseMessage,
    Usage,
)
from ponder.scheduler.outcome import NoAnswerReason, QueryOutcome
from ponder.scheduler.planner import PlanError
from ponder.scheduler.sse import ChunkRenderer
from ponder.scheduler.strategies.base import FinalAnswer
from ponder.scheduler.ttc import read_ttc

NO_ANSWER_STATUS = {
    NoAnswerReason.DEADLINE: 504,
    NoAnswerReason.FAILED: 502,
    NoAnswerReason.UNAVAILABLE: 503,
    NoAnswerReason.REJECTED: 400,
    NoAnswerReason.TOO_LARGE: 413,
}


def response_id(endpoint: Endpoint, query_id: str) -> str:
    return f"{'chatcmpl' if endpoint is Endpoint.CHAT else 'cmpl'}-{query_id}"


def usage_of(outcome: QueryOutcome) -> Usage:
    """Tokens of every branch result received, whatever its status."""
    prompt, completion = outcome.prompt_tokens, outcome.completion_tokens
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def ponder_info(outcome: QueryOutcome) -> PonderInfo:
    plan = outcome.plan
    query = plan.query
    answer = outcome.answer
    completed = outcome.count(BranchStatus.COMPLETED)
    failed = outcome.count(BranchStatus.FAILED)
    reading = read_ttc(outcome)
    return PonderInfo(
        query_id=query.query_id,
        strategy=query.strategy.value,
        answer=answer.answer if answer else None,
        branches_launched=outcome.launched,
        branches_completed=completed,
        branches_failed=failed,
        branches_cancelled=outcome.launched - completed - failed,
        waves=outcome.waves,
        votes=dict(answer.votes) if answer else {},
        scores=list(answer.scores) if answer else [],
        confidence=answer.confidence if answer else None,
        deadline_exceeded=outcome.deadline_exceeded,
        branches_unreported=outcome.unreported,
        stopped_early=reading.stopped_early if reading else False,
        gave_up=answer.gave_up if answer else False,
        tokens_saved=reading.tokens_saved if reading else 0,
        usage_complete=outcome.unreported == 0,
        latency_ms=round(outcome.latency_seconds * 1000.0, 3),
        plan=PlanInfo(
            requested_branches=plan.requested_branches,
            branches=query.branches,
            max_branches=query.max_branches,
            wave_size=query.wave_size,
            branches_per_job=plan.branches_per_job,
            budget_tokens=query.budget_tokens,
            max_tokens_per_branch=query.max_tokens_per_branch,
            deadline_ms=plan.deadline_ms,
            priority=plan.priority.value,
            cold_start_hold_ms=plan.hold_ms,
            shrunk=plan.shrunk,
            shrink_reason=plan.shrink_reason,
            grown=plan.grown,
            grow_reason=plan.grow_reason,
            early_exit=EarlyExit.ANSWER_PROBE.value if query.probe else EarlyExit.NONE.value,
            stopping_rule=(
                query.stopping_rule.value
                if query.stopping_rule is not None
                and query.strategy is StrategyName.ADAPTIVE_CONSISTENCY
                else None
            ),
        ),
        tokens_after_answer=sum(
            branch.result.tokens_after_answer or 0 for branch in outcome.branches
        ),
        early_exits=sum(1 for branch in outcome.branches if branch.result.early_exit),
        low_confidence_stops=sum(1 for branch in outcome.branches if branch.result.low_confidence),
        branches=[
            BranchInfo(
                id=branch.result.branch_id,
                status=branch.result.status.value,
                answer=branch.answer,
                score=branch.score,
                prompt_tokens=branch.result.prompt_tokens,
                completion_tokens=branch.result.completion_tokens,
                finish_reason=branch.result.finish_reason,
                worker_id=branch.result.worker_id,
                answer_tokens=branch.result.answer_tokens,
                tokens_after_answer=branch.result.tokens_after_answer,
                probes=branch.result.probes,
                probe_tokens=branch.result.probe_tokens,
                early_exit=branch.result.early_exit,
                confidence=branch.result.confidence,
                low_confidence=branch.result.low_confidence,
            )
            for branch in outcome.branches
        ],
    )


def chat_response(outcome: QueryOutcome, model: str, created: int) -> ChatCompletionResponse:
    answer = _answer(outcome)
    return ChatCompletionResponse(
        id=response_id(Endpoint.CHAT, outcome.plan.query.query_id),
        created=created,
        model=model,
        choices=[
            ChatChoice(
                message=ResponseMessage(content=answer.text), finish_reason=answer.finish_reason
            )
        ],
        usage=usage_of(outcome),
        ponder=ponder_info(outcome),
    )


def completion_response(outcome: QueryOutcome, model: str, created: int) -> CompletionResponse:
    answer = _answer(outcome)
    return CompletionResponse(
        id=response_id(Endpoint.COMPLETIONS, outcome.plan.query.query_id),
        created=created,
        model=model,
        choices=[CompletionChoice(text=answer.text, finish_reason=answer.finish_reason)],
        usage=usage_of(outcome),
        ponder=ponder_info(outcome),
    )


def stream_renderer(outcome: QueryOutcome, model: str, created: int) -> ChunkRenderer:
    """The chunk renderer of `outcome`'s streamed response."""
    endpoint = outcome.plan.query.endpoint
    return ChunkRenderer(
        endpoint, response_id(endpoint, outcome.plan.query.query_id), model, created
    )


def stream_closing(
    renderer: ChunkRenderer, outcome: QueryOutcome, include_usage: bool
) -> list[str]:
    """How the stream of `outcome` ends: its finishing (and usage) chunks, or the in-stream
    error of a query without an answer; `[DONE]` last."""
    if outcome.answer is None:
        return renderer.error(no_answer_error(outcome)[1])
    usage = usage_of(outcome) if include_usage else None
    return renderer.closing(outcome.answer.finish_reason, ponder_info(outcome), usage)


def stream_events(
    outcome: QueryOutcome, model: str, created: int, include_usage: bool
) -> Iterator[str]:
    """The SSE events (`data: ...\\n\\n`) of an answered query with nothing streamed live,
    `[DONE]` last."""
    answer = _answer(outcome)
    renderer = stream_renderer(outcome, model, created)
    yield from renderer.opening()
    yield from renderer.text(answer.text)
    yield from stream_closing(renderer, outcome, include_usage)


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> ErrorResponse:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))


def plan_error_body(error: PlanError) -> ErrorResponse:
    """The planner's refusal in OpenAI's error shape: the client's error (400), or the load
    shedding a Sheddable query (503, `server_error`, no parameter)."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    return error_body(error.message, kind, param=error.field or None, code=error.code)


def no_answer_error(outcome: QueryOutcome) -> tuple[int, ErrorResponse]:
    """(HTTP status, body) of a query that ended without an answer.

    An engine's rejection is the client's error, in OpenAI's shape with the engine's own
    message (vLLM's "maximum context length is N tokens ..."), as vLLM itself would answer.
    """
    reason = outcome.no_answer_reason or NoAnswerReason.FAILED
    if reason == NoAnswerReason.REJECTED:
        return NO_ANSWER_STATUS[reason], error_body(
            outcome.no_answer_detail, "invalid_request_error", code="engine_rejected"
        )
    if reason == NoAnswerReason.TOO_LARGE:
        return NO_ANSWER_STATUS[reason], error_body(
            outcome.no_answer_detail, "invalid_request_error", code="request_too_large"
        )
    return NO_ANSWER_STATUS.get(reason, 502), error_body(
        f"query {outcome.plan.query.query_id}: {outcome.no_answer_detail}",
        "server_error",
        code={
            NoAnswerReason.DEADLINE: "deadline_exceeded",
            NoAnswerReason.UNAVAILABLE: "queue_unavailable",
        }.get(reason, "no_answer"),
    )


def _answer(outcome: QueryOutcome) -> FinalAnswer:
    if outcome.answer is None:
        raise ValueError("the query has no answer; render no_answer_error instead")
    return outcome.answer
