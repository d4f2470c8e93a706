"""`QueryTrace`: the query's span, one span per wave that ends with its last branch, and what
they say once the query ended (an in-memory exporter, no process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ponder.api.wire import BranchResult, BranchStatus
from ponder.scheduler.outcome import NoAnswerReason, QueryOutcome
from ponder.scheduler.planner import Plan
from ponder.scheduler.query_trace import QueryTrace
from ponder.scheduler.strategies.base import FinalAnswer, ScoredBranch
from tests.unit.recorded_branches import planned

PLAN = Plan(query=planned(), deadline_ms=20_000, branches_per_job=1, requested_branches=4)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def query_trace(exporter: InMemorySpanExporter, **kwargs: object) -> QueryTrace:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return QueryTrace(PLAN, "ponder-arith", tracer=provider.get_tracer("test"), **kwargs)  # type: ignore[arg-type]


def branch(branch_id: str, tokens: int, reason: str = "stop") -> ScoredBranch:
    result = BranchResult(
        query_id="q1",
        job_id=f"j-{branch_id}",
        branch_id=branch_id,
        status=BranchStatus.COMPLETED,
        text="#54",
        finish_reason=reason,
        prompt_tokens=5,
        completion_tokens=tokens,
    )
    return ScoredBranch(request=None, result=result, answer="54")  # type: ignore[arg-type]


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    spans: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        spans.setdefault(span.name, []).append(span)
    return spans


def test_a_wave_ends_with_its_last_branch_and_the_rest_with_the_query(
    exporter: InMemorySpanExporter,
) -> None:
    traced = query_trace(exporter)
    traced.start()
    first = traced.wave(1, ["b0", "b1"])
    second = traced.wave(2, ["b2", "b3"])
    traced.reported(["b0"])
    assert exporter.get_finished_spans() == ()
    traced.reported(["b1", "b2", "unknown"])
    (wave,) = exporter.get_finished_spans()
    assert wave.attributes == {"ponder.wave": 1, "ponder.branches": 2}
    assert wave.context.span_id == trace.get_current_span(first).get_span_context().span_id
    outcome = QueryOutcome(
        plan=PLAN,
        answer=FinalAnswer(text="#54", answer="54", confidence=0.75),
        branches=[branch("b0", 7), branch("b1", 9, "length"), branch("b2", 4)],
        launched=4,
        waves=2,
        finished_by_strategy=True,
    )
    traced.finish(outcome)
    spans = by_name(exporter)
    (query,) = spans["text_completion ponder-arith"]
    assert query.kind is SpanKind.SERVER
    (_, cut) = spans["ponder.wave"]
    assert cut.context.span_id == trace.get_current_span(second).get_span_context().span_id
    assert cut.attributes is not None and cut.attributes["ponder.branches.cancelled"] == 1
    for wave in spans["ponder.wave"]:
        assert wave.parent is not None and wave.parent.span_id == query.context.span_id
        assert wave.context.trace_id == query.context.trace_id
    attributes = dict(query.attributes or {})
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.request.model"] == "ponder-arith"
    assert attributes["gen_ai.usage.input_tokens"] == 15
    assert attributes["gen_ai.usage.output_tokens"] == 20
    assert attributes["gen_ai.response.finish_reasons"] == ("length", "stop")
    assert attributes["ponder.strategy"] == "self-consistency"
    assert attributes["ponder.waves"] == 2
    assert attributes["ponder.stopped_early"] is True
    assert attributes["ponder.answer.confidence"] == 0.75
    assert query.status.status_code is StatusCode.UNSET


def test_the_query_continues_the_clients_trace(exporter: InMemorySpanExporter) -> None:
    client = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    parent = TraceContextTextMapPropagator().extract({"traceparent": client})
    traced = query_trace(exporter, parent=parent)
    traced.start()
    traced.finish(QueryOutcome(plan=PLAN, answer=None, no_answer_reason=NoAnswerReason.DEADLINE))
    (query,) = exporter.get_finished_spans()
    assert f"{query.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert query.parent is not None and f"{query.parent.span_id:016x}" == "b7ad6b7169203331"
    assert query.status.status_code is StatusCode.ERROR
    assert query.status.description == NoAnswerReason.DEADLINE


def test_a_launch_that_failed_and_a_cancelled_query_end_as_such(
    exporter: InMemorySpanExporter,
) -> None:
    traced = query_trace(exporter)
    traced.start()
    traced.wave(1, ["b0"])
    traced.launch_failed(1, "the job queue refused the jobs")
    traced.cancelled()
    traced.finish(QueryOutcome(plan=PLAN, answer=None))
    wave, query = exporter.get_finished_spans()
    assert wave.status.status_code is StatusCode.ERROR
    assert wave.status.description == "the job queue refused the jobs"
    assert query.attributes is not None and query.attributes["ponder.cancelled"] is True
    assert query.status.description == "cancelled"
