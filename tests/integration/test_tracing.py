"""OpenTelemetry traces across real processes: a query sent with the client's `traceparent` is
one trace from the scheduler's query span, through its waves and the workers' job spans, to
each request to vLLM and vLLM's own `llm_request` span (vLLM with `--otlp-traces-endpoint`).
Every process exports over OTLP/HTTP to a receiver in the test, configured by the standard
OTEL_* variables only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer
from tests.integration.otlp_sink import OtlpSink, ReceivedSpan, otlp_sink

pytestmark = pytest.mark.vllm

MODEL = "ponder-arith"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT, CONSUMER = 2, 3, 5  # opentelemetry.proto.trace.v1.Span.SpanKind
SPANS_TIMEOUT_SECONDS = 120.0


@pytest_asyncio.fixture(scope="module")
async def sink() -> AsyncIterator[OtlpSink]:
    async with otlp_sink() as started:
        yield started


@pytest_asyncio.fixture(scope="module")
async def traced_plane(
    sink: OtlpSink, nats: NatsServer, arith_model_dir: Path, stack_log_dir: Path
) -> AsyncIterator[Dataplane]:
    """Scheduler, two workers and vLLM exporting spans, as the local stack sets them up from
    the variables (vLLM gets its `--otlp-traces-endpoint` and the others' protocol); the
    variables only while they start (each reads them once), so no other test's process
    traces."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink.url)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # ms: spans leave within the test
        async with local_dataplane(
            arith_model_dir,
            name="traced",
            served_name=MODEL,
            nats_url=nats.url,
            workers=2,
            config_overrides={"strategy": {"branches_per_job": 1}},
            log_dir=stack_log_dir,
        ) as plane:
            env.undo()
            yield plane


def chain_complete(spans: list[ReceivedSpan]) -> bool:
    """The query's span is in, a job span for each branch launched, and vLLM's span under
    each engine request that ran to its end (vLLM's warm-up request is a trace of its own)."""
    ours = [s for s in spans if s.trace_id == CLIENT_TRACE]
    queries = [s for s in ours if s.service == "ponder-scheduler" and s.kind == SERVER]
    if not queries:
        return False
    launched = queries[0].attributes["ponder.branches.launched"]
    jobs = [s for s in ours if s.kind == CONSUMER]
    finished = {
        s.span_id for s in ours if s.kind == CLIENT and not s.attributes.get("ponder.aborted")
    }
    served = {s.parent_span_id for s in ours if s.name == "llm_request"}
    return len(jobs) == launched and bool(finished) and finished <= served


async def test_a_query_is_one_trace_from_the_scheduler_to_vllm(
    traced_plane: Dataplane, sink: OtlpSink
) -> None:
    body = {
        "model": MODEL,
        "prompt": "Q:23+48-17 A:",
        "max_tokens": 24,
        "ponder": {"strategy": "self-consistency", "branches": 4},
    }
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{traced_plane.base_url}/v1/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status == 200, await response.text()
        answer = await response.json()
    spans = await sink.wait_until(chain_complete, SPANS_TIMEOUT_SECONDS)
    ours = [s for s in spans if s.trace_id == CLIENT_TRACE]
    by_id = {s.span_id: s for s in ours}

    (query,) = [s for s in ours if s.service == "ponder-scheduler" and s.kind == SERVER]
    assert query.name == f"text_completion {MODEL}"
    assert query.parent_span_id == CLIENT_SPAN
    assert query.attributes["gen_ai.request.model"] == MODEL
    assert query.attributes["ponder.strategy"] == "self-consistency"
    assert query.attributes["gen_ai.usage.output_tokens"] == answer["usage"]["completion_tokens"]
    assert query.attributes["gen_ai.usage.input_tokens"] == answer["usage"]["prompt_tokens"]

    waves = [s for s in ours if s.name == "ponder.wave"]
    assert len(waves) == query.attributes["ponder.waves"] >= 1
    assert all(wave.parent_span_id == query.span_id for wave in waves)

    jobs = [s for s in ours if s.kind == CONSUMER]
    assert len(jobs) == query.attributes["ponder.branches.launched"] == 4
    for job in jobs:
        assert job.service == "ponder-worker"
        assert by_id[job.parent_span_id].name == "ponder.wave"
        assert job.attributes["messaging.system"] == "nats"
        assert job.attributes["ponder.query_id"] == answer["id"].removeprefix("cmpl-")

    requests = [s for s in ours if s.kind == CLIENT]
    assert {by_id[r.parent_span_id].kind for r in requests} == {CONSUMER}
    for job in jobs:  # a job's tokens are its engine requests' tokens
        own = [r for r in requests if r.parent_span_id == job.span_id]
        assert own, f"job {job.attributes['ponder.job_id']} has no engine request span"
        generated = sum(r.attributes["gen_ai.usage.output_tokens"] for r in own)
        assert job.attributes["gen_ai.usage.output_tokens"] == generated

    engine = [s for s in ours if s.name == "llm_request"]
    for request in requests:
        served = [e for e in engine if e.parent_span_id == request.span_id]
        if request.attributes.get("ponder.aborted"):
            continue  # cancelled once the vote stopped: vLLM traces only finished requests
        assert served, "a finished engine request without vLLM's span"
        assert request.attributes["gen_ai.operation.name"] == "text_completion"
        assert request.attributes["gen_ai.provider.name"] == "vllm"
        generated = sum(e.attributes["gen_ai.usage.completion_tokens"] for e in served)
        assert generated == request.attributes["gen_ai.usage.output_tokens"] > 0
