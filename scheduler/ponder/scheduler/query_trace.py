"""The spans of one query on the scheduler: the query's own, and one per wave.

The query span (`{operation} {model}`, SERVER) continues the client's trace when its request
carried a `traceparent`. Each launch (a wave of an adaptive strategy, a step of beam search,
budget forcing's or refine's next pass) is a `ponder.wave` span under it, from the launch until
its last branch reported or the query ended; its context goes in the launch's job messages, so
each worker's job span is its child. Attributes are set as the query goes: what was asked at
the start, what was spent and how it ended at the finish. While tracing is off every span here
is the API's no-op span.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ponder.api.tracing import OPERATIONS, GenAi, span_name
from ponder.api.tracing import tracer as ponder_tracer
from ponder.scheduler.outcome import QueryOutcome, stopped_early
from ponder.scheduler.planner import Plan


class QueryTrace:
    """Spans of one query; `start` once, `finish` once (every open wave ends with it)."""

    def __init__(
        self,
        plan: Plan,
        model: str,
        parent: Context | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.plan = plan
        self.tracer = tracer or ponder_tracer()
        self.model = model
        self.parent = parent
        self._span: Span = trace.INVALID_SPAN
        self._waves: dict[int, tuple[Span, set[str]]] = {}  # wave -> (span, branches running)
        self._wave_of: dict[str, int] = {}
        self._cancelled = False

    def start(self) -> None:
        query = self.plan.query
        self._span = self.tracer.start_span(
            span_name(query.endpoint, self.model),
            context=self.parent,
            kind=SpanKind.SERVER,
            attributes={
                GenAi.OPERATION: OPERATIONS[query.endpoint],
                GenAi.REQUEST_MODEL: self.model,
                GenAi.REQUEST_MAX_TOKENS: query.max_tokens_per_branch,
                GenAi.REQUEST_TEMPERATURE: query.temperature,
                GenAi.REQUEST_TOP_P: query.top_p,
                "ponder.query_id": query.query_id,
                "ponder.strategy": query.strategy.value,
                "ponder.deadline_ms": self.plan.deadline_ms,
                "ponder.cold_start_hold_ms": self.plan.hold_ms,
                "ponder.branches.planned": query.branches,
                "ponder.branches.max": query.max_branches,
                "ponder.budget_tokens": query.budget_tokens,
                "ponder.plan.shrunk": self.plan.shrunk,
                "ponder.plan.grown": self.plan.grown,
            },
        )

    def wave(self, number: int, branch_ids: Iterable[str]) -> Context:
        """Open the span of launch `number` of `branch_ids`; the context its jobs carry."""
        ids = set(branch_ids)
        span = self.tracer.start_span(
            "ponder.wave",
            context=trace.set_span_in_context(self._span),
            attributes={"ponder.wave": number, "ponder.branches": len(ids)},
        )
        self._waves[number] = (span, ids)
        for each in ids:
            self._wave_of[each] = number
        return trace.set_span_in_context(span)

    def launch_failed(self, number: int, error: str) -> None:
        """The launch's jobs were not queued: its span ends as an error."""
        wave = self._waves.pop(number, None)
        if wave is not None:
            span, _ = wave
            span.set_status(Status(StatusCode.ERROR, error))
            span.end()

    def reported(self, branch_ids: Iterable[str]) -> None:
        """These branches reported; a wave whose branches all did ends."""
        for each in branch_ids:
            number = self._wave_of.pop(each, -1)
            wave = self._waves.get(number)
            if wave is None:
                continue
            span, running = wave
            running.discard(each)
            if not running:
                del self._waves[number]
                span.end()

    def cancelled(self) -> None:
        """The query was cancelled (its client went away) before it ended."""
        self._cancelled = True
        self._span.set_attribute("ponder.cancelled", True)

    def finish(self, outcome: QueryOutcome) -> None:
        """End every open wave (its branches were cancelled) and the query's span."""
        for span, running in self._waves.values():
            span.set_attribute("ponder.branches.cancelled", len(running))
            span.end()
        self._waves.clear()
        self._wave_of.clear()
        span = self._span
        reasons = sorted(
            {b.result.finish_reason for b in outcome.branches if b.result.finish_reason}
        )
        span.set_attributes(
            {
                GenAi.INPUT_TOKENS: outcome.prompt_tokens,
                GenAi.OUTPUT_TOKENS: outcome.completion_tokens,
                GenAi.RESPONSE_FINISH_REASONS: reasons,
                "ponder.branches.launched": outcome.launched,
                "ponder.branches.unreported": outcome.unreported,
                "ponder.waves": outcome.waves,
                "ponder.stopped_early": stopped_early(outcome),
                "ponder.deadline_exceeded": outcome.deadline_exceeded,
            }
        )
        if outcome.answer is not None:
            if outcome.answer.confidence is not None:
                span.set_attribute("ponder.answer.confidence", outcome.answer.confidence)
        else:
            why = outcome.no_answer_reason or ("cancelled" if self._cancelled else "no answer")
            span.set_status(Status(StatusCode.ERROR, why))
        span.end()
