"""Branch requests -> `BranchJob`s (pure): ids, prompts, sampling, grouping into jobs of k.

Naming: branch `n` of query `q` is `q-n` (n counts from 0 over the whole query, every wave), and
the job holding branches `q-n..` is `q-jn`, named after its first branch, so a job id is unique
within the query and stable if the same launch is published twice.

Prompts:
- completions: the query's prompt + the request's `continuation`, or `prompt_override`;
- chat: the query's messages; a `continuation` becomes a final assistant message that the
  engine continues (vLLM's `continue_final_message=true, add_generation_prompt=false`: the
  worker sets them when a chat job ends with an assistant message); a `prompt_override` replaces
  the conversation by the query's system messages plus one user message.
Answers: every job says how the service reads answers (`AnswerReading`), and carries the
query's answer probe when it has one, and a confidence watch when the request asks for one.
Seeds: a seeded query gives the job holding branches `n..n+k-1` the seed `seed + n`; vLLM gives
child i of the `n=k` request `seed + n + i`, so branch n always samples with `seed + n`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ponder.api.wire import (
    AnswerReading,
    BranchJob,
    ChatMessage,
    ConfidenceWatch,
    Endpoint,
    SamplingParams,
)
from ponder.scheduler.strategies.base import BranchRequest, PlannedQuery


@dataclass(frozen=True)
class JobContext:
    """What every job of one query shares."""

    query: PlannedQuery
    model: str
    reply_subject: str
    deadline_at: float
    branches_per_job: int
    ignore_eos: bool = False
    logprobs: bool = False  # every branch returns logprobs (a logprob verifier scores them)
    partials: bool = False  # a streaming client: jobs of `streams_answer` requests send text


def branch_id(query_id: str, index: int) -> str:
    return f"{query_id}-{index}"


def job_id(query_id: str, first_index: int) -> str:
    return f"{query_id}-j{first_index}"


def build_jobs(context: JobContext, request: BranchRequest, first_index: int) -> list[BranchJob]:
    """The jobs that launch `request.n` branches numbered from `first_index`."""
    query = context.query
    prompt, messages = _prompt_of(query, request)
    unseeded = SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature if request.temperature is not None else query.temperature,
        top_p=query.top_p,
        stop=list(request.stop if request.stop is not None else query.stop),
        logprobs=request.logprobs or context.logprobs,
        ignore_eos=context.ignore_eos,
        engine=query.engine,
    )
    # Workers read answers as the service does: where each settled, and what a probe says.
    answer = AnswerReading(extractor=query.extractor, pattern=query.answer_pattern)
    jobs = []
    for start, count in _groups(request.n, context.branches_per_job):
        index = first_index + start
        # Jobs differ only in their seed, if any (the models are frozen, so sharing is safe).
        sampling = (
            unseeded
            if query.seed is None
            else unseeded.model_copy(update={"seed": query.seed + index})
        )
        jobs.append(
            BranchJob(
                query_id=query.query_id,
                job_id=job_id(query.query_id, index),
                branch_ids=[branch_id(query.query_id, index + i) for i in range(count)],
                reply_subject=context.reply_subject,
                endpoint=query.endpoint,
                model=context.model,
                prompt=prompt,
                messages=messages,
                sampling=sampling,
                deadline_at=context.deadline_at,
                answer=answer,
                probe=query.probe,
                confidence=confidence_watch(query, request),
                partials=streams_text(context, request),
            )
        )
    return jobs


def streams_text(context: JobContext, request: BranchRequest) -> bool:
    """Whether the job of `request` sends its text while it generates: a streaming client, a
    branch whose text is the answer, and no answer probe (an early exit rewrites the tail)."""
    return (
        context.partials and request.streams_answer and request.n == 1 and not context.query.probe
    )


def confidence_watch(query: PlannedQuery, request: BranchRequest) -> ConfidenceWatch | None:
    """What the worker measures of the branches' confidence, and where it stops them; None
    when the request asks for no confidence."""
    if not request.confidence:
        return None
    settings = query.deep_conf
    return ConfidenceWatch(
        token=settings.token_confidence,
        top_k=settings.top_k,
        window_tokens=settings.window_tokens,
        stop_below=request.confidence_stop_below,
    )


def _prompt_of(
    query: PlannedQuery, request: BranchRequest
) -> tuple[str | None, list[ChatMessage] | None]:
    if query.endpoint is Endpoint.COMPLETIONS:
        if request.prompt_override is not None:
            return request.prompt_override, None
        return (query.prompt or "") + request.continuation, None
    conversation: Sequence[ChatMessage] = query.messages or ()
    if request.prompt_override is not None:
        system = [message for message in conversation if message.role == "system"]
        return None, [*system, ChatMessage(role="user", content=request.prompt_override)]
    messages = list(conversation)
    if request.continuation:
        messages.append(ChatMessage(role="assistant", content=request.continuation))
    return None, messages


def _groups(total: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, count) of consecutive groups of at most `size` covering `total`."""
    size = max(1, size)
    for start in range(0, total, size):
        yield start, min(size, total - start)
