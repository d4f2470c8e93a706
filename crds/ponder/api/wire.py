"""NATS wire messages between scheduler and workers (JSON, validated, versioned).

Nobody builds these dicts by hand: publish `Model.model_dump_json()`, parse with
`Model.model_validate_json()`. A message that fails validation is dead-lettered by its receiver.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator

from ponder.api.service_config import (
    MAX_ANSWER_PATTERN_LENGTH,
    AnswerProbe,
    ExtractorKind,
    TokenConfidence,
)

SCHEMA_VERSION: Literal[1] = 1

MAX_STOP_STRINGS = 8
"""Most stop strings a job carries (`SamplingParams.stop`); the scheduler refuses requests with
more, and beam search keeps its step delimiter within it."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class Endpoint(StrEnum):
    """Which vLLM OpenAI endpoint runs the job."""

    COMPLETIONS = "completions"
    CHAT = "chat"


MAX_LOGIT_BIAS_ENTRIES = 300
"""Most tokens a request may bias (OpenAI's limit)."""
MAX_RESPONSE_FORMAT_BYTES = 16_384
"""Largest `response_format` (a JSON schema, say) a request may carry, serialised."""
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
"""OpenAI's `response_format` types, each of which vLLM serves."""


class EngineSampling(BaseModel):
    """OpenAI and vLLM sampling options that Ponder passes to vLLM for every branch, as the
    request gave them; None leaves vLLM's default. Answer probes, which only read an answer,
    take none of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=10.0, description="vLLM extension; 1 is none."
    )
    top_k: int | None = Field(
        default=None, ge=-1, le=100_000, description="vLLM extension; -1 or 0 is all tokens."
    )
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="vLLM extension.")
    min_tokens: int | None = Field(
        default=None, ge=0, le=1_048_576, description="vLLM extension: no end of sequence before."
    )
    logit_bias: dict[str, float] | None = Field(
        default=None,
        max_length=MAX_LOGIT_BIAS_ENTRIES,
        description="Token id (as a string) -> bias in [-100, 100].",
    )
    response_format: dict[str, Any] | None = Field(
        default=None, description="Structured output (`json_object`, `json_schema`), to vLLM."
    )

    @field_validator("logit_bias")
    @classmethod
    def _bias_in_range(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit():
                raise ValueError(f"logit_bias key {token!r} is not a token id")
            if not -100.0 <= value <= 100.0:
                raise ValueError(f"logit_bias[{token}]={value} is outside [-100, 100]")
        return bias

    @field_validator("response_format")
    @classmethod
    def _format_bounded(cls, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
        if response_format is None:
            return None
        size = len(json.dumps(response_format))
        if size > MAX_RESPONSE_FORMAT_BYTES:
            raise ValueError(
                f"response_format is {size} bytes, over the limit of {MAX_RESPONSE_FORMAT_BYTES}"
            )
        # Checked here, so that a malformed one is a 400 naming the field rather than vLLM's
        # own validation dump relayed from every branch.
        kind = response_format.get("type")
        if kind not in RESPONSE_FORMAT_TYPES:
            raise ValueError(
                f"response_format.type must be one of {', '.join(RESPONSE_FORMAT_TYPES)}"
            )
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ValueError("response_format.json_schema must be an object with a name")
            if not isinstance(spec.get("schema", {}), dict):
                raise ValueError("response_format.json_schema.schema must be an object")
        return response_format

    def request_fields(self) -> dict[str, Any]:
        """The options that were given, as vLLM's request fields."""
        return {name: value for name, value in self if value is not None}


class SamplingParams(BaseModel):
    """Sampling parameters passed to vLLM for every branch of a job."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_tokens: int = Field(ge=1, description="Generation cap per branch, in tokens.")
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    seed: int | None = Field(default=None, description="Base seed; branch i uses seed + i.")
    logprobs: bool = Field(default=False, description="Return per-token logprobs (mean kept).")
    ignore_eos: bool = Field(
        default=False, description="Keep generating past end-of-sequence (vLLM extension)."
    )
    engine: EngineSampling = Field(default_factory=EngineSampling)


class AnswerReading(BaseModel):
    """How the service reads a branch's answer (`spec.strategy.extractor`, `answerPattern`).

    Workers read answers with it while a branch generates: to count the tokens generated after
    the answer settled, and to read an answer probe.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    extractor: ExtractorKind
    pattern: str | None = Field(default=None, min_length=1, max_length=MAX_ANSWER_PATTERN_LENGTH)


class ConfidenceWatch(BaseModel):
    """What a worker measures of each branch's confidence while it generates (`deep-conf`).

    Each token gets a confidence (`token`: the sampled token's logprob, or minus the mean
    logprob of the `top_k` likeliest tokens); a group is the mean over a sliding window of
    `window_tokens` (the whole branch when it is shorter), exp'ed for `sampled`, and the branch's
    confidence is its lowest group's. With `stop_below`, a branch stops as soon as a full
    window's group falls below it; the job then runs one engine request per branch, so that one
    branch can stop alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    token: TokenConfidence = TokenConfidence.SAMPLED
    top_k: int = Field(default=5, ge=2, le=20)
    window_tokens: int = Field(default=4, ge=1, le=4096)
    stop_below: float | None = Field(default=None, ge=0.0)


class BranchJob(_Wire):
    """A group of k branches of one query, run by one worker as one vLLM request with n=k (one
    request per branch when a branch may stop alone: an answer probe, a confidence threshold)."""

    query_id: str = Field(min_length=1, max_length=128)
    job_id: str = Field(min_length=1, max_length=160, description="Also the Nats-Msg-Id.")
    branch_ids: list[str] = Field(min_length=1, max_length=256)
    reply_subject: str = Field(min_length=1, description="Scheduler inbox for the results.")
    endpoint: Endpoint = Endpoint.COMPLETIONS
    model: str = Field(min_length=1, description="Served model name in vLLM.")
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    sampling: SamplingParams
    deadline_at: float = Field(description="Unix time (s) after which the job is worthless.")
    answer: AnswerReading | None = Field(
        default=None, description="How answers are read; None: the worker reads none."
    )
    probe: AnswerProbe | None = Field(
        default=None,
        description="Stop each branch once its probed answers agree (needs `answer`); each "
        "branch then runs as its own engine request, so that one can stop alone.",
    )
    confidence: ConfidenceWatch | None = Field(
        default=None,
        description="Measure each branch's confidence (and stop it below a threshold); the "
        "results then carry it.",
    )
    partials: bool = Field(
        default=False,
        description="Publish `BranchPartial` messages with the text so far while generating, "
        "at most one per branch every `PARTIAL_INTERVAL_SECONDS` (the scheduler streams an "
        "answer live from them). Never with `probe`: an early exit rewrites the text's tail.",
    )

    def model_post_init(self, _context: object) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a job carries exactly one of prompt or messages")
        if self.probe is not None and self.answer is None:
            raise ValueError("an answer probe needs an answer reading")
        if self.probe is not None and self.partials:
            raise ValueError("a job with an answer probe publishes no partial text")


class BranchStatus(StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # aborted on a cancel, or below its confidence threshold; text
    # holds what was generated so far
    EXPIRED = "expired"  # past its deadline before or during generation
    FAILED = "failed"  # engine error, or MaxDeliver reached


class BranchResult(_Wire):
    """The outcome of one branch. Tokens are counted even when the branch did not complete."""

    query_id: str
    job_id: str
    branch_id: str
    status: BranchStatus
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = Field(default=0, ge=0, description="Counted once per job, first branch.")
    completion_tokens: int = Field(default=0, ge=0)
    mean_logprob: float | None = None
    error: str | None = None
    rejected: bool = Field(
        default=False,
        description="FAILED because the engine found the request itself invalid (vLLM's 400, "
        "e.g. a prompt longer than the model's context); `error` is then the engine's message. "
        "A query whose every branch is rejected is the client's 400, not a 502.",
    )
    worker_id: str = ""
    generation_seconds: float = Field(default=0.0, ge=0.0)
    answer_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Tokens of `text` generated until its answer first appeared and stayed the "
        "same; None when the text has no answer or the job carried no answer reading. "
        "`completion_tokens - probe_tokens - answer_tokens` were generated after the answer.",
    )
    probes: int = Field(default=0, ge=0, description="Answer probes run for this branch.")
    probe_tokens: int = Field(
        default=0, ge=0, description="Tokens the probes generated; part of completion_tokens."
    )
    early_exit: bool = Field(
        default=False, description="Stopped by the answer probe; `text` ends with its answer."
    )
    confidence: float | None = Field(
        default=None,
        ge=0.0,
        description="Its lowest group confidence, when the job watched it (`confidence`); "
        "None when it generated nothing.",
    )
    low_confidence: bool = Field(
        default=False,
        description="CANCELLED by the worker because a group fell below `stop_below`.",
    )

    @property
    def tokens_after_answer(self) -> int | None:
        """What the branch generated after its answer settled, its probes aside; None when it
        has no settled answer."""
        if self.answer_tokens is None:
            return None
        return max(0, self.completion_tokens - self.probe_tokens - self.answer_tokens)


class BranchResults(_Wire):
    """Every branch result of one job, in one message on the scheduler's inbox.

    A worker publishes one per job (all branches of a job end together: one vLLM request runs
    them), so the scheduler's per-message cost is paid per job, not per branch. Each result
    keeps its own ids: the scheduler takes the first terminal result of each branch and drops
    the rest (a redelivered job reports its branches again), exactly as for single results.
    Partial output of cancelled or expired branches rides in the same way.
    """

    query_id: str
    job_id: str
    results: list[BranchResult] = Field(min_length=1, max_length=256)

    def model_post_init(self, _context: object) -> None:
        for result in self.results:
            if result.query_id != self.query_id or result.job_id != self.job_id:
                raise ValueError(
                    f"result of branch {result.branch_id} belongs to job {result.job_id} of "
                    f"query {result.query_id}, not to job {self.job_id} of query {self.query_id}"
                )


PARTIAL_INTERVAL_SECONDS = 0.05
"""Least time between two `BranchPartial` messages of one branch: a streamed answer's tokens
reach the scheduler in pieces at most this far apart, at no more than 20 messages a second."""


class BranchPartial(_Wire):
    """Text a branch of a `partials` job generated since its last partial, on the scheduler's
    inbox while it generates. Core NATS keeps one connection's messages in order but may drop
    one: `offset` (characters of the branch's text before `text`) lets the scheduler tell a gap
    and stop using partials of that branch. The final `BranchResults` carries the whole text, so
    a lost partial loses nothing but liveness."""

    kind: Literal["partial"] = "partial"
    query_id: str
    job_id: str
    branch_id: str
    offset: int = Field(ge=0)
    text: str = Field(min_length=1)


def _inbox_kind(message: Any) -> str:
    """`BranchResults` carry no `kind` (they predate partials); a partial says so."""
    kind = message.get("kind") if isinstance(message, dict) else getattr(message, "kind", None)
    return "partial" if kind == "partial" else "results"


InboxMessage = Annotated[
    Annotated[BranchResults, Tag("results")] | Annotated[BranchPartial, Tag("partial")],
    Discriminator(_inbox_kind),
]
"""What arrives on a scheduler's results inbox."""

INBOX_MESSAGE: TypeAdapter[BranchResults | BranchPartial] = TypeAdapter(InboxMessage)
"""Parses one inbox message: `INBOX_MESSAGE.validate_json(data)`."""


class CancelMessage(_Wire):
    """Stop every outstanding branch of a query (all of them when branch_ids is empty)."""

    query_id: str
    branch_ids: list[str] = Field(default_factory=list)
    reason: str = "stopped"


class SchedulerStats(_Wire):
    """What a scheduler replica publishes on `stats` for the autoscaler, every few seconds, and
    at once when its load steps up (`step`)."""

    scheduler_id: str
    at: float = Field(description="Unix time of the snapshot.")
    queries_in_flight: int = Field(ge=0)
    branches_outstanding: int = Field(ge=0, description="Launched, not yet finished branches.")
    expected_branch_tokens: int = Field(
        ge=0, description="Tokens the outstanding branches are expected to generate."
    )
    p95_latency_seconds: float | None = None
    slo_attainment: float | None = Field(default=None, ge=0.0, le=1.0)
    queries_total: int = Field(default=0, ge=0)
    tokens_per_query: float | None = Field(
        default=None, ge=0.0, description="Mean tokens (prompt + completion) of recent queries."
    )
    early_stop_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of recent queries whose strategy stopped before its branch cap.",
    )
    branches_per_second: float | None = Field(
        default=None,
        ge=0.0,
        description="Branches launched per second over the last `BRANCH_RATE_WINDOW_SECONDS` "
        "(every wave of every query): the arrival rate of work at the pool's slots.",
    )
    branch_seconds: float | None = Field(
        default=None,
        ge=0.0,
        description="Mean seconds a recent branch held a worker slot (completed or cut short), "
        "as its worker reported: the service time of one slot.",
    )
    step: bool = Field(
        default=False,
        description="The load stepped up since this scheduler's previous update "
        "(`ponder.scheduler.stats.is_load_step`): published at once rather than on the "
        "interval, and the operator decides on it at once rather than at its next tick.",
    )


BRANCH_RATE_WINDOW_SECONDS = 30.0
"""The window of `SchedulerStats.branches_per_second`: short enough that a load step shows
within a few ticks, long enough to hold a few hundred branches at modest load."""

STATS_INTERVAL_SECONDS = 2.0
"""How often a scheduler replica publishes its `SchedulerStats` unless told otherwise
(`--stats-interval`)."""


class WorkerStats(_Wire):
    """What a worker publishes on `worker_stats` every `WORKER_STATS_INTERVAL_SECONDS`: its slot
    use, from which the operator sets its pod's deletion cost before a scale-down."""

    worker_id: str = Field(description="The worker's id: its pod's name in Kubernetes.")
    at: float = Field(description="Unix time of the snapshot.")
    slots: int = Field(ge=1, description="Branches the worker runs at once.")
    slots_in_use: int = Field(ge=0, description="Branches its running jobs hold now.")
    jobs_running: int = Field(ge=0)
    draining: bool = Field(default=False, description="It stopped pulling to shut down.")


WORKER_STATS_INTERVAL_SECONDS = 2.0
"""How often a worker publishes its `WorkerStats`: fresh enough that the pod a scale-down
deletes is one that was idle a moment before, and a few small messages per worker a minute."""


class DeadLetter(_Wire):
    """A job that could not be run, kept on the dead-letter subject with the reason."""

    reason: str
    subject: str
    payload: str = Field(description="The original message body (utf-8, replaced if binary).")
    worker_id: str = ""
