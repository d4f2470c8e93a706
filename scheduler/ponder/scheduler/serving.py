"""Serving one query over HTTP: plan it, run it (cancelled if the client goes away), record
its metrics, render the answer as JSON or server-sent events.

A streamed query's response starts with the runner's first event (its first launch queued),
and its events go out as they happen (`progress.py`, `sse.py`); until then it may still end in
a JSON error with its status, as without streaming. The events pass through a queue that the
query's own size bounds: its branches, its leader changes and its answer's text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import replace
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ponder.api import tracing
from ponder.api.priority import Priority
from ponder.api.strategy import StrategyName
from ponder.api.wire import Endpoint
from ponder.scheduler.access import ADMISSION, Admission
from ponder.scheduler.auth import OBJECTIVE_HEADER, query_priority
from ponder.scheduler.http_errors import error_response, json_response
from ponder.scheduler.metrics import QueryOutcome as OutcomeLabel
from ponder.scheduler.metrics import SchedulerMetrics
from ponder.scheduler.outcome import (
    NoAnswerReason,
    QueryOutcome,
    branches_saved,
    stopped_early,
)
from ponder.scheduler.planner import Plan, PlanError, QueryRequest, plan_query
from ponder.scheduler.progress import ProgressEvent
from ponder.scheduler.response import (
    chat_response,
    completion_response,
    no_answer_error,
    plan_error_body,
    stream_closing,
    stream_events,
    stream_renderer,
)
from ponder.scheduler.runner import QueryRunner
from ponder.scheduler.state import SchedulerState
from ponder.scheduler.strategies import make_strategy
from ponder.scheduler.ttc import TtcReading, read_ttc

T = TypeVar("T")


async def serve_query(
    state: SchedulerState,
    request: Request,
    query: QueryRequest,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
) -> Response:
    """The HTTP response to `query`: 400 when the planner refuses it (503 when it sheds a
    Sheddable query), the answer, or a 5xx."""
    metrics = state.metrics
    query = replace(query, priority=_priority_of(request))
    plan = plan_query(query, state.config, await state.load_snapshot())
    if isinstance(plan, PlanError):
        asked = query.ponder.strategy or state.config.strategy.default.value
        label = asked if asked in {name.value for name in StrategyName} else "unknown"
        metrics.queries.labels(strategy=label, outcome=OutcomeLabel.REJECTED).inc()
        refused = error_response(plan.status, plan_error_body(plan))
        if plan.retry_after_seconds is not None:
            metrics.requests_refused.labels(code=plan.code).inc()
            refused.headers["retry-after"] = str(plan.retry_after_seconds)
        return refused
    if plan.shrunk:
        metrics.plans_shrunk.inc()
    runner = QueryRunner(
        plan,
        make_strategy(plan.query),
        state.deps,
        ignore_eos=ignore_eos,
        trace_parent=tracing.extract(request.headers),  # the client's `traceparent`, if any
    )
    if stream:
        live = await _stream_live(state, request, runner, include_usage)
        if live is not None:
            return live
        outcome: QueryOutcome | None = runner.outcome  # over before its first event
    else:
        outcome = await _unless_abandoned(runner.run(), request)
    created = int(time.time())
    if outcome is None:
        _abandoned(state, plan)
        return Response(status_code=499)  # nobody is listening any more
    _finished(state, request, outcome)
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


async def _stream_live(
    state: SchedulerState, request: Request, runner: QueryRunner, include_usage: bool
) -> Response | None:
    """The event stream of `runner`'s query from its first event on; 499 when the client went
    away first; None when the query ended before any event (then answered as without
    streaming, from `runner.outcome`)."""
    events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
    runner.progress = events.put_nowait
    body = _live_events(state, request, runner, events, include_usage)
    first = await _unless_abandoned(anext(body, ""), request)
    if first is None:
        return Response(status_code=499)  # counted as abandoned by the stream's end
    if not first:
        await body.aclose()
        return None
    return StreamingResponse(
        _starting_with(first, body),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _unless_abandoned(work: Awaitable[T], request: Request) -> T | None:
    """What `work` returns, or None when the client disconnected first (`work` is then
    cancelled: a query's run cancels its branches)."""
    async with asyncio.TaskGroup() as tasks:
        run = tasks.create_task(_awaited(work))
        watch = tasks.create_task(_disconnected(request))
        await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            watch.cancel()
        else:
            run.cancel()
    return None if run.cancelled() else run.result()


async def _awaited(work: Awaitable[T]) -> T:
    return await work


async def _live_events(
    state: SchedulerState,
    request: Request,
    runner: QueryRunner,
    events: asyncio.Queue[ProgressEvent | None],
    include_usage: bool,
) -> AsyncGenerator[str, None]:
    """The SSE events of a streamed query as they happen. Yields nothing when the query ended
    before its first event (its outcome is then the runner's, to answer without streaming).
    A client that goes away cancels the query: the stream is closed or cancelled at a wait.

    The run is this generator's task, cancelled and awaited on its way out. Not a task group:
    the first event is awaited by the handler and the rest by the response, which may be two
    tasks, and a task group belongs to the task that entered it."""

    async def run() -> QueryOutcome:
        try:
            return await runner.run()
        finally:
            events.put_nowait(None)  # the end, whatever ended it

    task = asyncio.create_task(run())
    finished = False
    try:
        item = await events.get()
        if item is None:
            await task
            finished = True
            return
        renderer = stream_renderer(runner.outcome, state.config.model, int(time.time()))
        for chunk in renderer.opening():
            yield chunk
        while item is not None:
            for chunk in renderer.render(item):
                yield chunk
            item = await events.get()
        outcome = await task
        finished = True
        _finished(state, request, outcome)
        for chunk in stream_closing(renderer, outcome, include_usage):
            yield chunk
    finally:
        if not task.done():
            task.cancel()  # the client went away: the run cancels the query's branches
            await asyncio.wait([task])
        if not finished:
            _abandoned(state, runner.plan)


async def _starting_with(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for chunk in rest:
        yield chunk


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (ASGI `http.disconnect` after the body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _priority_of(request: Request) -> Priority:
    """The query's class: its key's, lowered by `x-gateway-inference-objective` if asked."""
    admission = getattr(request.state, ADMISSION, None)
    grant = admission.grant if isinstance(admission, Admission) else None
    return query_priority(grant, request.headers.get(OBJECTIVE_HEADER))


def _abandoned(state: SchedulerState, plan: Plan) -> None:
    strategy = plan.query.strategy.value
    state.metrics.queries.labels(strategy=strategy, outcome=OutcomeLabel.ABANDONED).inc()


def _finished(state: SchedulerState, request: Request, outcome: QueryOutcome) -> None:
    """Record a query that ran to its end, and charge its tokens to its API key."""
    _record(state, outcome)
    admission = getattr(request.state, ADMISSION, None)
    if isinstance(admission, Admission):
        admission.charge(outcome.completion_tokens)  # what its key's tokensPerMinute counts


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
