"""The scheduler's OpenAPI document, fuzzed by schemathesis against real parts: a scheduler, a
worker, NATS and vLLM (the arithmetic model), with deadlines of a few seconds and limits small
enough that fuzzed requests reach them.

Every operation of `/openapi.json` gets schemathesis's positive cases (bodies the document
allows, most of them naming the served model so that they reach the planner, the queue and
vLLM) and negative ones (bodies it does not allow: wrong types, missing fields, bytes that are
not JSON). Hypothesis draws them derandomized, so every run sends the same requests.

What counts as a server error: any 5xx except a 503 `queue_unavailable` or a 504
`deadline_exceeded` in OpenAI's error shape (`server_error`): those answer a client that asked
for a deadline the service cannot meet, or a queue that refused its jobs, and are documented.
A 500 (an unhandled exception) or a 502 (no branch produced anything, on a healthy pool) is a
defect. No error message may carry a NATS subject, the stream's name or an exception's name.
No request may hang: each has `REQUEST_TIMEOUT_SECONDS`, which only a hang exceeds. Afterwards
the scheduler is alive, healthy and ready, and still answers a valid query.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer
from ponder.local.vllm import VllmServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL = "ponder-arith"
TARGET_LATENCY_MS = 3_000
"""The deadline of a query that sets none: what most fuzzed queries that reach vLLM get."""
MAX_DEADLINE_MS = 20_000
"""The service's `slo.maxDeadlineMs`: no fuzzed query runs longer, and the valid query sent
after the fuzzing has all of it (16 tokens take a fraction of a second here, when idle)."""
REQUEST_TIMEOUT_SECONDS = 90.0
"""Per request: far beyond the longest deadline, so only a hang exceeds it here."""
EXAMPLES = {GenerationMode.POSITIVE: 400, GenerationMode.NEGATIVE: 400}
"""Examples per operation and mode; an operation without parameters or body has one case."""
DOCUMENTED_5XX = {503: "queue_unavailable", 504: "deadline_exceeded"}
"""The only server-side statuses a client may get, each with its error code."""
OVERRIDES: dict[str, Any] = {
    "slots_per_worker": 4,
    "strategy": {"branches": 2, "max_branches": 4, "branches_per_job": 2},
    "budget": {"default_tokens": 32, "max_tokens": 64, "max_tokens_per_branch": 16},
    "slo": {"target_latency_ms": TARGET_LATENCY_MS, "max_deadline_ms": MAX_DEADLINE_MS},
    "api": {
        "max_body_bytes": 16 * 1024,
        "max_header_bytes": 8 * 1024,
        "max_headers": 32,
        "max_messages": 4,
        "max_stop_sequences": 2,
        "max_stop_chars": 8,
        "request_timeout_seconds": 10.0,
    },
}
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Timeout)\b")
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
"""schemathesis's checks of a response against the document; a negative case must be a 4xx.
Its `not_a_server_error` is replaced by `server_error` (503 and 504 are documented)."""
SCHEMATHESIS_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 1,
        # A request refused by a limit (413 body, 431 headers, 408 too slow) is refused too.
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 431]
            }
        },
    }
)
"""Explicit, so that no `schemathesis.toml` a run happens to find changes what is checked."""


@pytest_asyncio.fixture(scope="module")
async def plane(
    nats: NatsServer, vllm: VllmServer, stack_log_dir: Path
) -> AsyncIterator[Dataplane]:
    async with local_dataplane(
        name="sched-fuzz",
        nats_url=nats.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=1,
        log_dir=stack_log_dir,
        config_overrides=OVERRIDES,
    ) as started:
        yield started


@dataclass
class Findings:
    """What the fuzzer found, one line per distinct problem, and how many requests it sent."""

    problems: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, kind: str, case: Case, detail: str) -> None:
        self.problems.setdefault(f"{case.operation.label}: {kind}", f"{detail}\n{curl(case)}")

    def count(self, case: Case, status: int, code: str | None) -> None:
        counts = self.statuses.setdefault(case.operation.label, {})
        key = f"{status} {code}" if code else str(status)
        counts[key] = counts.get(key, 0) + 1


def curl(case: Case) -> str:
    """A reproducer of `case`, shortened to what a report line holds."""
    command = case.as_curl_command()
    return command if len(command) < 600 else command[:600] + " ..."


def server_error(status: int, body: Any) -> str | None:
    """Why a response is a server error (module docstring), or None when it is not one."""
    if status < 500:
        return None
    if status not in DOCUMENTED_5XX:
        return f"HTTP {status}: {body!r:.300}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("type") != "server_error":
        return f"HTTP {status} not in OpenAI's error shape: {body!r:.300}"
    if error.get("code") != DOCUMENTED_5XX[status]:
        return f"HTTP {status} with code {error.get('code')!r}: {body!r:.300}"
    return None


@pytest.mark.parametrize(
    ("status", "body", "counts"),
    [
        (200, {"choices": []}, False),
        (400, {"error": {"type": "invalid_request_error", "code": "invalid_value"}}, False),
        (503, {"error": {"type": "server_error", "code": "queue_unavailable"}}, False),
        (504, {"error": {"type": "server_error", "code": "deadline_exceeded"}}, False),
        (500, {"error": {"type": "server_error", "code": "internal_error"}}, True),
        (502, {"error": {"type": "server_error", "code": "no_answer"}}, True),
        (503, {"error": {"type": "server_error", "code": "deadline_exceeded"}}, True),
        (504, {"detail": "Gateway Timeout"}, True),
        (504, None, True),  # not JSON: a proxy's page, not the scheduler's answer
    ],
)
def test_what_counts_as_a_server_error(status: int, body: Any, counts: bool) -> None:
    assert (server_error(status, body) is not None) is counts


def leaked_internals(body: Any, plane: Dataplane) -> str | None:
    """What an error message gives away that it must not (a subject, the stream, an
    exception's name), or None."""
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    for secret in (plane.subjects.prefix, plane.subjects.stream):
        if secret in message:
            return f"names {secret!r}: {message!r:.300}"
    match = EXCEPTION_NAME.search(message)
    if match:
        return f"names {match.group()!r}: {message!r:.300}"
    return None


def json_body(response: schemathesis.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_code(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) else None


def exchange(case: Case, plane: Dataplane, session: requests.Session, findings: Findings) -> None:
    """Send `case`, record what is wrong with its response; raise only on a hang."""
    try:
        response = case.call(
            base_url=plane.base_url, session=session, timeout=REQUEST_TIMEOUT_SECONDS
        )
    except requests.Timeout as error:
        raise AssertionError(
            f"no response within {REQUEST_TIMEOUT_SECONDS}s: {curl(case)}"
        ) from error
    body = json_body(response)
    findings.count(case, response.status_code, error_code(body))
    problem = server_error(response.status_code, body)
    if problem:
        findings.add(f"HTTP {response.status_code}", case, problem)
    if response.status_code >= 400:
        leak = leaked_internals(body, plane)
        if leak:
            findings.add(f"HTTP {response.status_code} leaks", case, leak)
    try:
        case.validate_response(response, checks=CHECKS)
    except (AssertionError, BaseExceptionGroup) as failed:  # one failure, or a group of them
        for failure in getattr(failed, "exceptions", (failed,)):
            title = (str(failure).strip().splitlines() or ["check"])[0]
            findings.add(title, case, f"HTTP {response.status_code}: {str(failure)[:500]}")


def with_served_model(case: Case, served: bool) -> Case:
    """The positive case naming the served model when `served`: otherwise nearly every body
    would name a model the service does not serve, a 404 before anything else is tried."""
    if served and isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = MODEL
    return case


def cases(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Case]:
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        return st.builds(with_served_model, strategy, st.sampled_from([True, True, True, False]))
    return strategy


def takes_input(operation: Any) -> bool:
    """Whether the operation has a body or parameters a negative case could break."""
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def fuzz(plane: Dataplane, findings: Findings) -> None:
    """Every operation of the live document, in every mode, `EXAMPLES` cases each."""
    schema = schemathesis.openapi.from_url(
        f"{plane.base_url}/openapi.json", config=SCHEMATHESIS_CONFIG
    )
    operations = [
        schema[path][method] for path, item in schema.raw_schema["paths"].items() for method in item
    ]
    assert {op.label for op in operations} >= {
        "POST /v1/chat/completions",
        "POST /v1/completions",
    }
    with requests.Session() as session:
        for operation in operations:
            for mode, examples in EXAMPLES.items():
                if mode is GenerationMode.NEGATIVE and not takes_input(operation):
                    continue

                @settings(
                    max_examples=examples,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: nothing raises
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=cases(operation, mode))
                def run(case: Case) -> None:
                    exchange(case, plane, session, findings)

                run()


def scheduler_log(plane: Dataplane, stack_log_dir: Path) -> str:
    scheduler = plane.scheduler
    path = stack_log_dir / f"scheduler-{scheduler.scheduler_id}-{scheduler.port}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def test_fuzzed_requests_get_no_server_error_and_leave_the_scheduler_healthy(
    plane: Dataplane, stack_log_dir: Path
) -> None:
    findings = Findings()
    started = time.monotonic()
    # schemathesis sends with requests: off the event loop, in a thread.
    await asyncio.to_thread(fuzz, plane, findings)
    seconds = time.monotonic() - started
    report = "\n".join(f"- {title}\n  {detail}" for title, detail in findings.problems.items())
    counts = json.dumps(findings.statuses, sort_keys=True)
    print(f"fuzzed for {seconds:.0f}s; statuses per operation: {counts}")  # shown with -s
    assert not findings.problems, f"after {seconds:.0f}s ({counts}):\n{report}"
    # The fuzzer did reach the runner: some queries were answered, not all refused.
    answered = [key for statuses in findings.statuses.values() for key in statuses]
    assert "200" in answered, counts
    assert any(key.startswith("400 ") for key in answered), counts

    assert plane.scheduler.process.poll() is None, "the scheduler exited"
    log = scheduler_log(plane, stack_log_dir)
    for sign in ("unhandled error", "Exception in ASGI application"):
        assert sign not in log, f"the scheduler logged {sign!r}"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(f"{plane.base_url}{path}") as response:
                assert response.status == 200, (path, await response.text())
        query = {
            "model": MODEL,
            "prompt": "Q:12+34-5 A:",
            "max_tokens": 16,
            "ponder": {"deadline_ms": MAX_DEADLINE_MS},
        }
        async with http.post(f"{plane.base_url}/v1/completions", json=query) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
    assert body["choices"][0]["text"], body


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_each_streamed_event_is_what_the_document_describes(
    plane: Dataplane, path: str
) -> None:
    # Regression: the document called the stream a string, which before OpenAPI 3.2 describes
    # each event, and every streamed answer failed schemathesis's schema check.
    schema = schemathesis.openapi.from_url(
        f"{plane.base_url}/openapi.json", config=SCHEMATHESIS_CONFIG
    )
    prompt: dict[str, Any] = (
        {"prompt": "Q:12+34-5 A:"}
        if path == "/v1/completions"
        else {"messages": [{"role": "user", "content": "12+34-5"}]}
    )
    body = {"model": MODEL, "stream": True, "max_tokens": 8, **prompt}
    body["ponder"] = {"deadline_ms": MAX_DEADLINE_MS}
    case = schema[path]["POST"].Case(body=body, media_type="application/json")

    def call() -> schemathesis.Response:
        response = case.call(base_url=plane.base_url, timeout=REQUEST_TIMEOUT_SECONDS)
        case.validate_response(response, checks=[response_schema_conformance])
        return response

    response = await asyncio.to_thread(call)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"][0].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")
