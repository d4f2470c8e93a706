"""The engine that generates a job's branches: vLLM over its OpenAI-compatible HTTP API.

`Engine` is the seam: the worker talks to nothing else, so a benchmark can plug an instant
engine (bench/overhead.py) while everything around it stays real.

A job runs as one `n=k` request, its branches sharing the prompt. A job with an answer probe,
or with a confidence threshold (`ConfidenceWatch.stop_below`), runs one request per branch
instead (vLLM's prefix cache still shares the prompt), plus its probes, so that each branch can
stop on its own: once its probes agree, or once its confidence falls below the threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ponder.api import tracing
from ponder.api.wire import BranchJob, Endpoint
from ponder.workers.engine_errors import EngineRejected, EngineUnavailable, engine_error_message
from ponder.workers.generation import (
    ChoiceOutput,
    Generation,
    StreamError,
    apply_chunk,
    branch_request_body,
    parse_sse_line,
    probe_request_body,
    request_body,
    request_path,
    runs_per_branch,
)
from ponder.workers.job_trace import request_attributes, usage_attributes
from ponder.workers.probing import ProbeSchedule, probed_answer
from ponder.workers.settling import reader_of

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
HEALTH_TIMEOUT_SECONDS = 2.0
DEADLINE_SLACK_SECONDS = 5.0
"""The HTTP call's own timeout is the job's deadline plus this; the worker stops it at the
deadline itself, so this only guards against a worker that forgot to."""


class Engine(Protocol):
    """Generates every branch of a job as one request."""

    async def generate(self, job: BranchJob, generation: Generation) -> None:
        """Fill `generation` as output arrives; return when every branch finished.

        Cancelling the calling task must stop the work in the engine. Raises EngineUnavailable
        or EngineRejected.
        """
        ...

    async def health(self) -> EngineHealth:
        """Whether the engine can serve, and if not why, and whether it just did not answer."""
        ...


@dataclass(frozen=True)
class EngineHealth:
    """One health check: `problem` None when the engine can serve. `silent`: it neither
    answered nor refused within the check's timeout (wedged, or only busy)."""

    problem: str | None = None
    silent: bool = False


class VllmEngine:
    """vLLM's OpenAI API at `base_url`, with one shared connection pool.

    Use as an async context manager: the aiohttp session lives exactly as long as the block.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VllmEngine:
        # No pool limit: the worker's slots bound the concurrent requests.
        connector = aiohttp.TCPConnector(limit=0)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("VllmEngine used outside its `async with` block")
        return self._session

    async def generate(self, job: BranchJob, generation: Generation) -> None:
        if not runs_per_branch(job):
            await self._stream(job, request_body(job), generation)
            return
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(len(job.branch_ids)):
                    group.create_task(self._branch(job, generation, index))
        except* (EngineUnavailable, EngineRejected) as failures:
            # One branch's failure stopped them all, as one failed `n=k` request would.
            raise _first_failure(failures) from None

    async def _branch(self, job: BranchJob, generation: Generation, index: int) -> None:
        """Branch `index` alone. With an answer probe, probed every `probe.every_tokens` tokens
        and stopped once `probe.window` probes in a row agree; with a confidence threshold,
        stopped at the chunk where a full window falls below it (`ChoiceOutput.low_confidence`).
        A probe still running when the branch ends is stopped, its tokens so far counted."""
        choice = generation.choices[index]
        schedule = ProbeSchedule(job.probe) if job.probe is not None else None
        probes: list[asyncio.Task[None]] = []

        async def run_probe(schedule: ProbeSchedule, prefix: str) -> None:
            assert job.answer is not None  # BranchJob: a probe needs an answer reading
            probe, read = schedule.probe, reader_of(job.answer)
            scratch = ChoiceOutput()
            try:
                await self._stream(job, probe_request_body(job, prefix), Generation([scratch]))
            except (EngineUnavailable, EngineRejected) as error:
                log.debug("probe of branch %s failed: %s", job.branch_ids[index], error)
                scratch.text_parts.clear()  # read as no answer: it breaks the agreement
            finally:
                choice.probes += 1
                choice.probe_tokens += scratch.completion_tokens
            answer = probed_answer(probe, scratch.text, read)
            if schedule.finish(answer) and not choice.ended:
                choice.exit_with(len(prefix), probe.cue + scratch.text)
                # Closes the branch's connection, so vLLM aborts it; a task group takes a
                # cancelled child for a finished one.
                stream.cancel()

        def on_chunk() -> bool:
            if index == 0:
                generation.prompt_tokens = own.prompt_tokens  # counted once per job
            if choice.low_confidence:
                return True  # ends the stream at this very chunk
            if schedule is not None and not choice.ended and schedule.due(choice.completion_tokens):
                schedule.start(choice.completion_tokens)
                probes.append(group.create_task(run_probe(schedule, choice.text)))
            return False

        async def run_branch() -> None:
            try:
                await self._stream(job, branch_request_body(job, index), own, on_chunk)
            finally:
                for task in probes:
                    task.cancel()  # the branch is over: what a probe would say is moot

        own = Generation(choices=[choice])
        async with asyncio.TaskGroup() as group:
            stream = group.create_task(run_branch())

    async def _stream(
        self,
        job: BranchJob,
        body: dict[str, Any],
        generation: Generation,
        on_chunk: Callable[[], bool] | None = None,
    ) -> None:
        """POST one streaming request of `job` and add its chunks to `generation`, calling
        `on_chunk` after each: when it returns True, the stream ends there, its connection
        closed so that vLLM aborts the sequence. Engine errors become EngineUnavailable or
        EngineRejected. The request is a CLIENT span under the job's, its context in the
        `traceparent` header."""
        span = tracing.tracer().start_span(
            tracing.span_name(job.endpoint, job.model),
            kind=SpanKind.CLIENT,
            attributes=request_attributes(job, body),
        )
        headers: dict[str, str] = {}
        tracing.inject(headers, trace.set_span_in_context(span))
        try:
            await self._post(job, body, generation, on_chunk, headers)
        except asyncio.CancelledError:
            span.set_attribute("ponder.aborted", True)  # a cancel, the deadline, an exit
            raise
        except (EngineUnavailable, EngineRejected) as error:
            span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
            raise
        finally:
            span.set_attributes(usage_attributes(generation))
            span.end()

    async def _post(
        self,
        job: BranchJob,
        body: dict[str, Any],
        generation: Generation,
        on_chunk: Callable[[], bool] | None,
        headers: dict[str, str],
    ) -> None:
        remaining = max(0.0, job.deadline_at - time.time())
        timeout = aiohttp.ClientTimeout(
            total=remaining + DEADLINE_SLACK_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS
        )
        endpoint: Endpoint = job.endpoint
        url = self.base_url + request_path(endpoint)
        try:
            async with self.session.post(
                url, json=body, timeout=timeout, headers=headers
            ) as response:
                if response.status != 200:
                    raise _http_error(response.status, await response.text())
                try:
                    async for line in response.content:
                        chunk = parse_sse_line(line)
                        if chunk is None:
                            continue
                        apply_chunk(generation, chunk, endpoint)
                        if on_chunk is not None and on_chunk():
                            # Stopped here, not at the next read: lines already buffered
                            # would add tokens past the stop.
                            response.close()
                            return
                except BaseException:
                    # Cancelled (a cancel message, the deadline, a drain, an early exit) or
                    # failed: close the connection itself rather than returning it to the
                    # pool, so vLLM sees the client go away and aborts the sequences at once.
                    response.close()
                    raise
        except StreamError as error:
            if error.status >= 500:
                raise EngineUnavailable(f"vLLM stream error {error.status}: {error}") from error
            raise EngineRejected(
                f"vLLM stream error {error.status}: {error}", status=error.status, reason=str(error)
            ) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise EngineUnavailable(
                f"vLLM at {self.base_url} unavailable: {_describe(error)}"
            ) from error

    async def exposition(self) -> bytes:
        """vLLM's own Prometheus metrics (`vllm:*`), for the worker's /metrics to serve beside
        its own: the engine listens on the pod's loopback only, so nothing else can scrape it."""
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
        try:
            async with self.session.get(self.base_url + "/metrics", timeout=timeout) as response:
                if response.status == 200:
                    return await response.read()
                return f"# vLLM /metrics answered {response.status}\n".encode()
        except (aiohttp.ClientError, TimeoutError) as error:
            return f"# vLLM /metrics unreachable: {_describe(error)}\n".encode()

    async def health(self) -> EngineHealth:
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_SECONDS)
        try:
            async with self.session.get(self.base_url + "/health", timeout=timeout) as response:
                if response.status == 200:
                    return EngineHealth()
                return EngineHealth(f"vLLM /health answered {response.status}")
        except TimeoutError:
            return EngineHealth(
                f"vLLM at {self.base_url} did not answer /health within "
                f"{HEALTH_TIMEOUT_SECONDS:g} s",
                silent=True,
            )
        except aiohttp.ClientError as error:
            return EngineHealth(f"vLLM at {self.base_url} unreachable: {_describe(error)}")


def _http_error(status: int, body: str) -> Exception:
    message = f"vLLM answered {status}: {body[:500]}"
    # 408 and 429 are the engine being busy, not the job being wrong.
    if status >= 500 or status in (408, 429):
        return EngineUnavailable(message)
    return EngineRejected(message, status=status, reason=engine_error_message(body)[:2000])


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first engine error in a (possibly nested) exception group of failed branches."""
    first = group.exceptions[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
