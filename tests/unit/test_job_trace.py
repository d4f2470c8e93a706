"""What a worker's spans say about a job and its engine requests, and that nothing is sent to
vLLM or NATS for traces while tracing is off."""

from __future__ import annotations

from ponder.api import tracing
from ponder.api.wire import BranchJob, ChatMessage, Endpoint, SamplingParams
from ponder.workers.generation import ChoiceOutput, Generation
from ponder.workers.job_trace import (
    job_attributes,
    outcome_attributes,
    request_attributes,
    usage_attributes,
)
from ponder.workers.metrics import JobOutcome


def job(endpoint: Endpoint = Endpoint.COMPLETIONS) -> BranchJob:
    return BranchJob(
        query_id="q1",
        job_id="q1-j0",
        branch_ids=["q1-b0", "q1-b1"],
        reply_subject="ponder.default.math.results.s1",
        endpoint=endpoint,
        model="ponder-arith",
        prompt="Q:1+2 A:" if endpoint is Endpoint.COMPLETIONS else None,
        messages=None
        if endpoint is Endpoint.COMPLETIONS
        else [ChatMessage(role="user", content="1+2")],
        sampling=SamplingParams(max_tokens=32),
        deadline_at=2e9,
    )


def generation() -> Generation:
    done = ChoiceOutput(completion_tokens=12, finish_reason="stop")
    cut = ChoiceOutput(completion_tokens=32, finish_reason="length", probe_tokens=6)
    cut.early_exit = True
    return Generation(choices=[done, cut], prompt_tokens=7)


def test_a_job_span_names_its_message_and_query() -> None:
    assert job_attributes(job(), delivered=2) == {
        "messaging.system": "nats",
        "messaging.operation.name": "process",
        "messaging.message.id": "q1-j0",
        "messaging.message.delivery_count": 2,
        "gen_ai.request.model": "ponder-arith",
        "ponder.query_id": "q1",
        "ponder.job_id": "q1-j0",
        "ponder.branches": 2,
    }


def test_a_job_counts_every_token_it_generated_probes_included() -> None:
    assert outcome_attributes(JobOutcome.COMPLETED, generation()) == {
        "ponder.job.outcome": "completed",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 50,
        "ponder.early_exits": 1,
    }


def test_an_engine_request_says_what_it_asked_and_what_it_got() -> None:
    body = {"n": 2, "max_tokens": 32, "temperature": 0.8, "top_p": 1.0, "stream": True}
    assert request_attributes(job(Endpoint.CHAT), body) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "ponder-arith",
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.max_tokens": 32,
        "gen_ai.request.temperature": 0.8,
        "gen_ai.request.top_p": 1.0,
    }
    assert request_attributes(job(), {"max_tokens": 8})["gen_ai.operation.name"] == (
        "text_completion"
    )
    assert usage_attributes(generation()) == {
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 44,  # the request's own stream, not its probes
        "gen_ai.response.finish_reasons": ["length", "stop"],
    }


def test_while_tracing_is_off_no_trace_header_is_sent() -> None:
    headers: dict[str, str] = {}
    with tracing.tracer().start_as_current_span("query"):
        tracing.inject(headers)
    assert headers == {}
