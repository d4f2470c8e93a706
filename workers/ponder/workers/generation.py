"""What one job generated so far, and how a vLLM OpenAI stream adds to it (pure, no I/O).

The worker owns a `Generation` and hands it to the engine, which fills it chunk by chunk; when
the job is cancelled or runs past its deadline, the text and tokens so far are still there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ponder.api.service_config import TokenConfidence
from ponder.api.wire import BranchJob, ChatMessage, Endpoint
from ponder.workers.confidence import GroupConfidence, token_confidence

PROBE_STOPS = ("\n", ". ")
"""Where an answer probe's continuation ends: the answer is the first line or sentence after
the cue, not whatever the model says next."""


@dataclass
class ChoiceOutput:
    """One branch's output (one choice of the `n=k` request).

    `checkpoints` holds `(characters, tokens)` after each streamed piece of text, so that a
    position in the text can be told in tokens (where the answer settled). `completion_tokens`
    counts the branch's own stream; `probe_tokens` what its answer probes generated besides.
    `confidence` tracks its group confidence when the job watches it (`BranchJob.confidence`).
    """

    text_parts: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprob_sum: float = 0.0
    logprob_count: int = 0
    text_length: int = 0
    checkpoints: list[tuple[int, int]] = field(default_factory=list)
    probes: int = 0
    probe_tokens: int = 0
    early_exit: bool = False
    confidence: GroupConfidence | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def total_tokens(self) -> int:
        """Every token generated for this branch: its stream's and its probes'."""
        return self.completion_tokens + self.probe_tokens

    def append_text(self, text: str) -> None:
        """Add streamed text; call after updating `completion_tokens` for the same chunk."""
        self.text_parts.append(text)
        self.text_length += len(text)
        self.checkpoints.append((self.text_length, self.completion_tokens))

    def exit_with(self, prefix_length: int, answer_text: str) -> None:
        """End the branch early: keep the text up to `prefix_length` characters (what the
        deciding probe saw), then `answer_text` (its cue and answer). Tokens generated past the
        prefix stay counted: they were spent."""
        kept = [point for point in self.checkpoints if point[0] <= prefix_length]
        prefix_tokens = kept[-1][1] if kept else 0
        self.text_parts = [self.text[:prefix_length], answer_text]
        self.text_length = prefix_length + len(answer_text)
        self.checkpoints = [*kept, (self.text_length, prefix_tokens)]
        self.finish_reason = "stop"
        self.early_exit = True

    @property
    def low_confidence(self) -> bool:
        """A full window of its confidence fell below the watch's `stop_below`: the branch is
        to stop there."""
        return self.confidence is not None and self.confidence.below_threshold

    @property
    def ended(self) -> bool:
        """It finished, or is to stop for low confidence: nothing more is to be done for it."""
        return self.finish_reason is not None or self.low_confidence

    @property
    def mean_logprob(self) -> float | None:
        """Mean log-probability of the sampled tokens; None when logprobs were not asked for."""
        if self.logprob_count == 0:
            return None
        return self.logprob_sum / self.logprob_count


@dataclass
class Generation:
    """All branches of one job; `choices[i]` is `job.branch_ids[i]`."""

    choices: list[ChoiceOutput]
    prompt_tokens: int = 0

    @classmethod
    def for_job(cls, job: BranchJob) -> Generation:
        """Empty outputs for every branch of `job`, each with a confidence tracker when the job
        watches confidence."""
        watch = job.confidence
        return cls(
            choices=[
                ChoiceOutput(confidence=GroupConfidence(watch) if watch is not None else None)
                for _ in job.branch_ids
            ]
        )

    @property
    def completion_tokens(self) -> int:
        """Every token generated for the job, answer probes included."""
        return sum(choice.total_tokens for choice in self.choices)


class StreamError(Exception):
    """vLLM reported an error inside the stream; `status` is its HTTP-like code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def runs_per_branch(job: BranchJob) -> bool:
    """Whether `job` runs one request per branch rather than one `n=k` request: when one of its
    branches may stop alone, on its answer probe or below its confidence threshold (closing an
    `n=k` request's stream aborts all k)."""
    stops_on_confidence = job.confidence is not None and job.confidence.stop_below is not None
    return job.probe is not None or stops_on_confidence


def request_path(endpoint: Endpoint) -> str:
    return "/v1/chat/completions" if endpoint is Endpoint.CHAT else "/v1/completions"


def request_body(job: BranchJob) -> dict[str, Any]:
    """The streaming OpenAI request that runs every branch of `job` as one `n=k` request.

    Streaming keeps the tokens-so-far known while generating and lets closing the connection
    abort the sequences in vLLM. `continuous_usage_stats` puts each choice's running
    completion-token count on its chunks, so counts stay exact even for text held back by stop
    strings. vLLM gives child i of an `n=k` request the seed `seed + i`, which is the wire
    contract (`SamplingParams.seed`). A chat job whose messages end with an assistant message
    (a strategy's continuation: a beam prefix, budget forcing's "Wait") asks vLLM to continue
    that message rather than open a new turn after it. Logprobs are asked for when the job
    wants their mean (`sampling.logprobs`) or watches confidence (with the `top_k` likeliest
    tokens' for `top-k`).
    """
    sampling = job.sampling
    body: dict[str, Any] = {
        "model": job.model,
        "n": len(job.branch_ids),
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.ignore_eos:
        body["ignore_eos"] = True  # a vLLM extension of the OpenAI API
    body.update(sampling.engine.request_fields())
    if job.endpoint is Endpoint.CHAT:
        assert job.messages is not None  # BranchJob guarantees exactly one of prompt/messages
        body["messages"] = [message.model_dump() for message in job.messages]
        if job.messages and job.messages[-1].role == "assistant":
            # vLLM's chat extensions: render the conversation up to the end of the final
            # message and generate on from there, with no new assistant header in between.
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        alternatives = _alternatives(job)
        if alternatives is not None:
            # The sampled token's logprob is always returned, besides the alternatives.
            body["logprobs"] = True
            body["top_logprobs"] = alternatives
    else:
        body["prompt"] = job.prompt
        alternatives = _alternatives(job)
        if alternatives is not None:
            body["logprobs"] = alternatives
    return body


def _alternatives(job: BranchJob) -> int | None:
    """How many of the likeliest tokens' logprobs `job` needs at each position beside the
    sampled one's; None when it needs no logprobs at all."""
    watch = job.confidence
    if watch is not None and watch.token is TokenConfidence.TOP_K:
        return watch.top_k
    if watch is not None or job.sampling.logprobs:
        return 0
    return None


def branch_request_body(job: BranchJob, index: int) -> dict[str, Any]:
    """The streaming request of branch `index` of `job` alone (`n=1`), with the seed it has in
    the job's `n=k` request (`seed + index`): how a probed job runs, one request per branch, so
    that one branch can stop while the others go on."""
    body = request_body(job)
    body["n"] = 1
    if job.sampling.seed is not None:
        body["seed"] = job.sampling.seed + index
    return body


def probe_request_body(job: BranchJob, text_so_far: str) -> dict[str, Any]:
    """The answer probe of a branch that generated `text_so_far`: its prompt, that text and the
    probe's cue, continued greedily for a few tokens (streamed, so that a probe cut short still
    counts its tokens)."""
    probe = job.probe
    if probe is None:
        raise ValueError(f"job {job.job_id} has no answer probe")
    body: dict[str, Any] = {
        "model": job.model,
        "n": 1,
        "temperature": 0.0,
        "max_tokens": probe.probe_tokens,
        "stop": list(PROBE_STOPS),
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if job.endpoint is Endpoint.CHAT:
        assert job.messages is not None  # BranchJob guarantees exactly one of prompt/messages
        messages = list(job.messages)
        continued = ""
        if messages and messages[-1].role == "assistant":
            continued = messages.pop().content  # the branch continues that message
        answer = ChatMessage(role="assistant", content=continued + text_so_far + probe.cue)
        body["messages"] = [message.model_dump() for message in [*messages, answer]]
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    else:
        body["prompt"] = (job.prompt or "") + text_so_far + probe.cue
    return body


def parse_sse_line(line: bytes) -> dict[str, Any] | None:
    """The JSON object of one server-sent-events `data:` line; None for blank, comment or
    `[DONE]` lines."""
    text = line.decode("utf-8").strip()
    if not text.startswith("data:"):
        return None
    payload = text[len("data:") :].strip()
    if not payload or payload == "[DONE]":
        return None
    parsed = json.loads(payload)
    if not isinstance(parsed, dict):
        raise StreamError(f"unexpected stream payload {payload[:200]!r}", status=502)
    return parsed


def apply_chunk(generation: Generation, chunk: dict[str, Any], endpoint: Endpoint) -> None:
    """Add one streamed chunk (completions or chat format) to `generation`.

    Raises StreamError when the chunk is vLLM's in-stream error object.
    """
    error = chunk.get("error")
    if chunk.get("object") == "error" or error is not None:
        details = error if isinstance(error, dict) else chunk
        status = details.get("code")
        raise StreamError(
            str(details.get("message", "vLLM stream error")),
            status=status if isinstance(status, int) else 500,
        )
    choices = chunk.get("choices") or []
    usage = chunk.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        # The prompt is counted once per job whichever chunk reports it (see BranchResult).
        generation.prompt_tokens = usage["prompt_tokens"]
    for choice in choices:
        index = choice.get("index", 0)
        if not 0 <= index < len(generation.choices):
            raise StreamError(f"choice index {index} outside n={len(generation.choices)}", 502)
        output = generation.choices[index]
        if endpoint is Endpoint.CHAT:
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
        else:
            text = choice.get("text") or ""
        token_logprobs = _token_logprobs(choice.get("logprobs") or {}, endpoint)
        for logprob, top_logprobs in token_logprobs:
            if isinstance(logprob, int | float):
                output.logprob_sum += float(logprob)
                output.logprob_count += 1
            if output.confidence is not None:
                value = token_confidence(output.confidence.watch, logprob, top_logprobs)
                if value is not None:
                    output.confidence.add(value)
        if choice.get("finish_reason"):
            output.finish_reason = str(choice["finish_reason"])
        # With continuous usage stats, a chunk of one choice carries that choice's running
        # total; without them, each logprob stands for one token.
        if len(choices) == 1 and isinstance(usage, dict):
            completion_tokens = usage.get("completion_tokens")
            if isinstance(completion_tokens, int):
                output.completion_tokens = max(output.completion_tokens, completion_tokens)
        else:
            output.completion_tokens += len(token_logprobs)
        if text:
            output.append_text(text)


def _token_logprobs(logprobs: dict[str, Any], endpoint: Endpoint) -> list[tuple[Any, list[Any]]]:
    """(sampled logprob, logprobs of the likeliest tokens) of each token of one streamed choice.

    vLLM's completions put them side by side: `token_logprobs` (floats) and `top_logprobs`
    ({token: logprob} per position, the sampled token added when it is not among the top k,
    null entries possible); its chat puts one item per token in `content`, `{token, logprob,
    top_logprobs: [{token, logprob}]}` with exactly the top k.
    """
    if endpoint is Endpoint.CHAT:
        return [
            (
                item.get("logprob"),
                [top.get("logprob") for top in item.get("top_logprobs") or []],
            )
            for item in logprobs.get("content") or []
        ]
    sampled = list(logprobs.get("token_logprobs") or [])
    tops = list(logprobs.get("top_logprobs") or [])
    return [
        (logprob, list((tops[position] or {}).values()) if position < len(tops) else [])
        for position, logprob in enumerate(sampled)
    ]
