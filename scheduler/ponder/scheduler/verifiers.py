"""Verifiers: the I/O side of scoring a branch (strategies only read the score).

Contract. A verifier scores a solution to a question in [0, 1] (1: surely right):

    async with make_verifier(config) as verifier:        # when config.kind is not NONE
        score = await verifier.score(question, answer, steps, mean_logprob=...)
        scores = await verifier.score_many([VerifierInput(...), ...])

The runner builds a branch's input with `verifier_input(query, request, result, answer)`; the
same call serves both score modes, only the text differs in what it holds:
- `ScoreMode.FINAL`: the whole solution; `answer` is the extracted final answer (or None).
- `ScoreMode.STEP` (beam search's process reward): the partial solution, i.e. the beam prefix
  (`request.continuation`) plus the step just generated, split into steps at
  `query.beam.step_delimiter`; `answer` is whatever could be extracted so far (usually None).
`LogprobVerifier` reads only `mean_logprob` (the branch's mean token logprob, `BranchResult.
mean_logprob`); its `needs_logprobs` is True, so the runner must ask the worker for logprobs on
every branch it will score (`SamplingParams.logprobs=True`), whatever the request said.

Errors (unreachable peer, timeout, a status other than 200, a malformed reply) raise
`VerifierError` with a message that names the peer and what to fix.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp

from ponder.api.answers import split_steps
from ponder.api.service_config import VerifierConfig, VerifierKind
from ponder.api.wire import BranchResult
from ponder.scheduler.strategies.base import BranchRequest, PlannedQuery

T = TypeVar("T")


class VerifierError(RuntimeError):
    """A verifier could not produce a score."""


@dataclass(frozen=True)
class VerifierInput:
    """What a verifier sees of one branch."""

    question: str
    answer: str | None
    steps: tuple[str, ...]
    mean_logprob: float | None = None


class Verifier(Protocol):
    """Scores solutions in [0, 1]; an async context manager that owns its connections."""

    needs_logprobs: bool

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def score(
        self,
        question: str,
        answer: str | None,
        steps: Sequence[str],
        *,
        mean_logprob: float | None = None,
    ) -> float:
        """The score of one solution."""
        ...

    async def score_many(self, inputs: Sequence[VerifierInput]) -> list[float]:
        """Scores of several solutions, in order (batched where the peer allows)."""
        ...


def verifier_input(
    query: PlannedQuery, request: BranchRequest, result: BranchResult, answer: str | None
) -> VerifierInput:
    """The verifier's view of a finished branch: the question, the extracted answer, the
    steps of `continuation + text` split at the query's step delimiter, the mean logprob."""
    return VerifierInput(
        question=query.question,
        answer=answer,
        steps=tuple(split_steps(request.continuation + result.text, query.beam.step_delimiter)),
        mean_logprob=result.mean_logprob,
    )


def solution_text(answer: str | None, steps: Sequence[str]) -> str:
    """A solution as one text: its steps on separate lines, or the bare answer without steps."""
    return "\n".join(steps) if steps else (answer or "")


class LogprobVerifier:
    """Token-logprob confidence: exp(mean token logprob), the geometric mean of the branch's
    token probabilities. A branch without logprobs scores 0 (no evidence)."""

    needs_logprobs = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    async def score(
        self,
        question: str,
        answer: str | None,
        steps: Sequence[str],
        *,
        mean_logprob: float | None = None,
    ) -> float:
        if mean_logprob is None or math.isnan(mean_logprob):
            return 0.0
        return min(1.0, math.exp(mean_logprob))

    async def score_many(self, inputs: Sequence[VerifierInput]) -> list[float]:
        return [
            await self.score(i.question, i.answer, i.steps, mean_logprob=i.mean_logprob)
            for i in inputs
        ]


class _JsonPeer:
    """An aiohttp session, opened on enter and closed on exit, that POSTs JSON."""

    needs_logprobs = False
    kind = "verifier"

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
        )
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

    async def _post(self, url: str, body: dict[str, Any]) -> Any:
        if self._session is None:
            raise VerifierError(f"{self.kind} used outside `async with`; open it first")
        try:
            async with self._session.post(url, json=body) as response:
                text = await response.text()
                if response.status != 200:
                    raise VerifierError(
                        f"{self.kind} {url} answered HTTP {response.status}: {text[:300]}"
                    )
        except TimeoutError as error:
            raise VerifierError(
                f"{self.kind} {url} did not answer within {self.timeout_seconds}s "
                "(raise timeout_seconds or speed up the verifier)"
            ) from error
        except aiohttp.ClientError as error:
            raise VerifierError(f"{self.kind} {url} is unreachable: {error}") from error
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise VerifierError(
                f"{self.kind} {url} answered with invalid JSON: {text[:300]}"
            ) from error

    def _checked(self, url: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise VerifierError(f"{self.kind} {url} answered score={value!r}; expected a number")
        if not 0.0 <= value <= 1.0:
            raise VerifierError(
                f"{self.kind} {url} answered score={value}; expected a probability in [0, 1]"
            )
        return float(value)


class HttpVerifier(_JsonPeer):
    """An external verifier: POST `{"question", "answer", "steps"}` to `url`, read
    `{"score": float in [0, 1]}`."""

    kind = "HTTP verifier"

    def __init__(self, url: str, timeout_seconds: float = 5.0) -> None:
        super().__init__(timeout_seconds)
        self.url = url

    async def score(
        self,
        question: str,
        answer: str | None,
        steps: Sequence[str],
        *,
        mean_logprob: float | None = None,
    ) -> float:
        reply = await self._post(
            self.url, {"question": question, "answer": answer, "steps": list(steps)}
        )
        if not isinstance(reply, dict) or "score" not in reply:
            raise VerifierError(
                f'{self.kind} {self.url} answered {str(reply)[:300]}; expected {{"score": float}}'
            )
        return self._checked(self.url, reply["score"])

    async def score_many(self, inputs: Sequence[VerifierInput]) -> list[float]:
        return await _each(self, inputs)


class _VllmModel(_JsonPeer):
    """A model on a vLLM server: `url` is its base (`.../v1` or not) or the route itself."""

    route = "/"

    def __init__(self, url: str, model: str | None = None, timeout_seconds: float = 5.0) -> None:
        super().__init__(timeout_seconds)
        base = url.rstrip("/")
        self.url = base if base.endswith(self.route) else f"{base}{self.route}"
        self.model = model

    async def _ask(self, body: dict[str, Any]) -> Any:
        """POST `body` to the route, naming the served model when one is configured."""
        return await self._post(self.url, {**body, "model": self.model} if self.model else body)


class RewardModelVerifier(_VllmModel):
    """An outcome reward model served by vLLM, through its score API.

    POST `{url}/score` with `{"model", "text_1": question, "text_2": [solution, ...]}`; vLLM
    answers `{"data": [{"index": i, "score": s}, ...]}` (one entry per text_2, scores in [0, 1]
    with the model's activation on, vLLM's default). Solutions to one question go in one request.
    """

    kind = "reward model"
    route = "/score"

    async def score(
        self,
        question: str,
        answer: str | None,
        steps: Sequence[str],
        *,
        mean_logprob: float | None = None,
    ) -> float:
        (score,) = await self._score_texts(question, [solution_text(answer, steps)])
        return score

    async def score_many(self, inputs: Sequence[VerifierInput]) -> list[float]:
        by_question: dict[str, list[int]] = {}
        for index, item in enumerate(inputs):
            by_question.setdefault(item.question, []).append(index)
        batches = await _all(
            [
                self._score_texts(
                    question, [solution_text(inputs[i].answer, inputs[i].steps) for i in indices]
                )
                for question, indices in by_question.items()
            ]
        )
        scores = [0.0] * len(inputs)
        for indices, batch in zip(by_question.values(), batches, strict=True):
            for index, score in zip(indices, batch, strict=True):
                scores[index] = score
        return scores

    async def _score_texts(self, question: str, solutions: list[str]) -> list[float]:
        reply = await self._ask({"text_1": question, "text_2": solutions})
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or len(data) != len(solutions):
            raise VerifierError(
                f"{self.kind} {self.url} answered {str(reply)[:300]}; expected data[] with "
                f"{len(solutions)} scores"
            )
        scores: dict[int, float] = {}
        for position, entry in enumerate(data):
            if not isinstance(entry, dict) or "score" not in entry:
                raise VerifierError(f"{self.kind} {self.url} answered data entry {entry!r}")
            index = entry.get("index", position)
            if not isinstance(index, int) or not 0 <= index < len(solutions) or index in scores:
                raise VerifierError(f"{self.kind} {self.url} answered a bad index {index!r}")
            scores[index] = self._checked(self.url, entry["score"])
        return [scores[i] for i in range(len(solutions))]


class ProcessRewardModelVerifier(_VllmModel):
    """A process reward model served by vLLM, through its pooling API.

    POST `{url}/pooling` with `{"model", "task": "token_classify", "messages": [{"role":
    "user", "content": question}, {"role": "assistant", "content": solution}]}` (the solution's
    steps on separate lines, `solution_text`), one request per solution. The server's chat
    template renders the conversation as the model was trained to read it and its step pooling
    (`--pooler-config '{"tok_pooling_type": "STEP", "step_tag_id": ...}'`) returns one
    probability per step: `{"data": [{"data": [[p], [p], ...]}]}`. A solution scores its lowest
    step (it is only as right as its weakest step); one without steps scores 0.
    """

    kind = "process reward model"
    route = "/pooling"

    async def score(
        self,
        question: str,
        answer: str | None,
        steps: Sequence[str],
        *,
        mean_logprob: float | None = None,
    ) -> float:
        solution = solution_text(answer, steps)
        if not solution.strip():
            return 0.0  # nothing to score (and no step for the server to pool)
        return min(await self.step_scores(question, solution), default=0.0)

    async def score_many(self, inputs: Sequence[VerifierInput]) -> list[float]:
        return await _each(self, inputs)

    async def step_scores(self, question: str, solution: str) -> list[float]:
        """The model's probability that the solution is still right after each of its steps."""
        reply = await self._ask(
            {
                "task": "token_classify",
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": solution},
                ],
            }
        )
        data = reply.get("data") if isinstance(reply, dict) else None
        entry = data[0] if isinstance(data, list) and len(data) == 1 else None
        steps = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(steps, list):
            raise VerifierError(
                f"{self.kind} {self.url} answered {str(reply)[:300]}; expected data[0].data with "
                "one score per step (is the server's --pooler-config step pooling on?)"
            )
        scores = []
        for step in steps:
            value = step[-1] if isinstance(step, list) and step else step
            scores.append(self._checked(self.url, value))
        return scores


def make_verifier(config: VerifierConfig) -> Verifier | None:
    """The verifier `config` describes, not yet entered; None for `kind: none`."""
    if config.kind == VerifierKind.NONE:
        return None
    if config.kind == VerifierKind.LOGPROB:
        return LogprobVerifier()
    if not config.url:  # VerifierConfig already refuses this; kept for the type checker
        raise ValueError(f"verifier kind {config.kind.value} needs a url")
    if config.kind == VerifierKind.HTTP:
        return HttpVerifier(config.url, config.timeout_seconds)
    if config.kind == VerifierKind.PROCESS_REWARD_MODEL:
        return ProcessRewardModelVerifier(config.url, config.model, config.timeout_seconds)
    return RewardModelVerifier(config.url, config.model, config.timeout_seconds)


async def _each(verifier: Verifier, inputs: Sequence[VerifierInput]) -> list[float]:
    """Every input scored by its own `verifier.score` call, concurrently, in order."""
    return await _all(
        [verifier.score(i.question, i.answer, i.steps, mean_logprob=i.mean_logprob) for i in inputs]
    )


async def _all(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run calls concurrently, each owned by one task group; the first error is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [task.result() for task in tasks]
