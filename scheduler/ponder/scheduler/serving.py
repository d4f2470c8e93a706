"""Serving one query over HTTP: plan it, run it (cancelled if the client goes away), record
its metrics, render the answer as JSON or server-sent events."""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ponder.api.strategy import StrategyName
from ponder.api.wire import Endpoint
from ponder.scheduler.access import ADMISSION, Admission
from ponder.scheduler.http_errors import error_response, json_response
from ponder.scheduler.metrics import QueryOutcome as OutcomeLabel
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.scheduler.outcome import (
    NoAnswerReason,
    QueryOutcome,
    branches_saved,
    stopped_early,
)
from ponder.scheduler.planner import PlanError, QueryRequest, plan_query
from ponder.scheduler.response import (
    chat_response,
    completion_response,
    no_answer_error,
    plan_error_body,
    stream_events,
)
from ponder.scheduler.runner import QueryRunner
from ponder.scheduler.state import SchedulerState
from ponder.scheduler.strategies import make_strategy
from ponder.scheduler.ttc import TtcReading, read_ttc


async def serve_query(
    state: SchedulerState,
    request: Request,
    query: QueryRequest,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
) -> Response:
    """The HTTP response to `query`: 400 when the planner refuses it, the answer, or a 5xx."""
    metrics = state.metrics
    plan = plan_query(query, state.config, state.load.snapshot(time.monotonic()))
    if isinstance(plan, PlanError):
        asked = query.ponder.strategy or state.config.strategy.default.value
        label = asked if asked in {name.value for name in StrategyName} else "unknown"
        metrics.queries.labels(strategy=label, outcome=OutcomeLabel.REJECTED).inc()
        return error_response(400, plan_error_body(plan))
    if plan.shrunk:
        metrics.plans_shrunk.inc()
    runner = QueryRunner(plan, make_strategy(plan.query), state.deps, ignore_eos=ignore_eos)
    outcome = await _run_unless_abandoned(runner, request)
    created = int(time.time())
    if outcome is None:
        strategy = plan.query.strategy.value
        metrics.queries.labels(strategy=strategy, outcome=OutcomeLabel.ABANDONED).inc()
        return Response(status_code=499)  # nobody is listening any more
    _record(state, outcome)
    admission = getattr(request.state, ADMISSION, None)
    if isinstance(admission, Admission):
        admission.charge(outcome.completion_tokens)  # what its key's tokensPerMinute counts
    if outcome.answer is None:
        status, body = no_answer_error(outcome)
        return error_response(status, body)
    if stream:
        return StreamingResponse(
            stream_events(outcome, state.config.model, created, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    if query.endpoint is Endpoint.CHAT:
        return json_response(
            chat_response(outcome, state.config.model, created).model_dump(mode="json")
        )
    return json_response(
        completion_response(outcome, state.config.model, created).model_dump(mode="json")
    )


async def _run_unless_abandoned(runner: QueryRunner, request: Request) -> QueryOutcome | None:
    """The runner's outcome, or None when the client disconnected first (the query is then
    cancelled, which cancels its branches)."""
    async with asyncio.TaskGroup() as tasks:
        run = tasks.create_task(runner.run())
        watch = tasks.create_task(_disconnected(request))
        await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            watch.cancel()
        else:
            run.cancel()
    return None if run.cancelled() else run.result()


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (ASGI `http.disconnect` after the body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _record(state: SchedulerState, outcome: QueryOutcome) -> None:
    metrics = state.metrics
    query = outcome.plan.query
    strategy = query.strategy.value
    if outcome.no_answer_reason in (NoAnswerReason.REJECTED, NoAnswerReason.TOO_LARGE):
        label = OutcomeLabel.REJECTED
    elif outcome.answer is None:
        label = OutcomeLabel.NO_ANSWER
    elif outcome.deadline_exceeded:
        label = OutcomeLabel.DEADLINE
    else:
        label = OutcomeLabel.ANSWERED
    metrics.queries.labels(strategy=strategy, outcome=label.value).inc()
    metrics.query_latency.labels(strategy=strategy).observe(outcome.latency_seconds)
    metrics.query_tokens.labels(strategy=strategy).observe(
        outcome.prompt_tokens + outcome.completion_tokens
    )
    metrics.branches_saved.inc(branches_saved(outcome))
    reading = read_ttc(outcome)
    if reading is not None:
        _observe_ttc(metrics, strategy, reading)
    state.window.record(
        outcome.latency_seconds,
        time.monotonic(),
        tokens=outcome.prompt_tokens + outcome.completion_tokens,
        stopped_early=stopped_early(outcome),
    )


def _observe_ttc(metrics: SchedulerMetrics, strategy: str, reading: TtcReading) -> None:
    """Record what test-time compute did for one answered query."""
    if reading.stopped_early:
        metrics.early_stops.labels(strategy=strategy).inc()
        metrics.tokens_saved.labels(strategy=strategy).inc(reading.tokens_saved)
    observed = [
        (metrics.branches_to_consensus, reading.branches_to_consensus),
        (metrics.tokens_before_final, reading.tokens_before_final_answer),
        (metrics.tokens_after_answer, reading.tokens_after_answer),
        (metrics.confidence_at_stop, reading.confidence),
    ]
    for histogram, value in observed:
        if value is not None:
            histogram.labels(strategy=strategy).observe(value)
