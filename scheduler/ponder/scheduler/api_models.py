"""The HTTP bodies the scheduler accepts and returns: OpenAI's, plus the `ponder` extension.

Requests follow OpenAI's `/v1/chat/completions` and `/v1/completions`, and no parameter is
dropped silently (`ponder.scheduler.openai_params` says what happens to each): sampling options
vLLM honours go to every branch, those that change nothing about the answer (`user`, ...) are
accepted, those Ponder cannot honour (`tools`, ...) and unknown ones are 400s. Ponder's own
options ride in `ponder` (`extra_body={"ponder": {...}}`) and are strict as well.

Responses are OpenAI's objects with one more field, `ponder` (`PonderInfo`); the official client
exposes it as `response.ponder` (pydantic extra) or `response.model_extra["ponder"]`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.api.wire import EngineSampling

SEED_MAX = 2**63 - 1 - 2**20
"""Largest seed a request may give: branch i samples with seed + i, within vLLM's 64 bits."""


class PonderOptions(BaseModel):
    """Per-request test-time compute options; absent fields take the service's defaults.

    Ranges are checked by the planner, which names the service limit a value exceeds.
    """

    model_config = ConfigDict(extra="forbid")
    strategy: str | None = Field(
        default=None, description="single, self-consistency, adaptive-consistency, ..."
    )
    branches: int | None = Field(default=None, description="Branches (samples) to launch.")
    max_branches: int | None = Field(default=None, description="Cap for adaptive strategies.")
    budget_tokens: int | None = Field(
        default=None, description="Completion tokens all branches together may generate."
    )
    deadline_ms: int | None = Field(
        default=None, description="Answer within this many ms, with the best result so far."
    )
    confidence: float | None = Field(
        default=None, description="Stopping threshold of adaptive-consistency, in (0, 1)."
    )
    early_exit: str | None = Field(
        default=None,
        description="How a branch may stop early: none, or answer-probe (stop once probes of "
        "its answer agree; the service's spec.strategy.earlyExit settings).",
    )
    deep_conf_mode: str | None = Field(
        default=None,
        description="deep-conf only: offline or online (default: spec.strategy.deepConf.mode).",
    )
    stopping_rule: str | None = Field(
        default=None,
        description="adaptive-consistency only: beta, window, confidence or verifier "
        "(default: spec.strategy.stoppingRule).",
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class TextContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class RequestMessage(BaseModel):
    """A chat message; content is a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextContentPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _SamplingFields(EngineSampling):
    """The OpenAI fields both endpoints share; `EngineSampling`'s go to vLLM as given."""

    model_config = ConfigDict(extra="forbid", frozen=False)
    model: str
    max_tokens: int | None = Field(default=None, description="Cap per branch, in tokens.")
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(
        default=None,
        ge=-(2**63),
        le=SEED_MAX,
        description="Branch i samples with seed + i (vLLM takes 64-bit seeds).",
    )
    n: int | None = Field(default=None, description="Must be 1: ask for ponder.branches.")
    ignore_eos: bool = Field(
        default=False, description="vLLM extension: keep generating past end-of-sequence."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    ponder: PonderOptions = Field(default_factory=PonderOptions)
    user: str | None = Field(default=None, description="Accepted; not used.")
    logprobs: Any = Field(default=None, description="Refused unless false or 0.")

    @property
    def engine_sampling(self) -> EngineSampling:
        """The options that go to vLLM for every branch."""
        return EngineSampling(**{name: getattr(self, name) for name in EngineSampling.model_fields})

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_SamplingFields):
    """Body of `POST /v1/chat/completions`."""

    messages: list[RequestMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(
        default=None, description="Newer spelling of max_tokens; wins when both are set."
    )
    metadata: dict[str, str] | None = Field(default=None, description="Accepted; not stored.")
    store: bool | None = Field(default=None, description="Accepted; nothing is stored.")
    service_tier: str | None = Field(default=None, description="Accepted; one tier.")
    parallel_tool_calls: bool | None = Field(default=None, description="Accepted; no tools.")
    top_logprobs: Any = Field(default=None, description="Refused unless 0.")
    tools: Any = Field(default=None, description="Refused: no tool calls.")
    tool_choice: Any = Field(default=None, description="Refused unless 'none'.")
    functions: Any = Field(default=None, description="Refused: no function calls.")
    function_call: Any = Field(default=None, description="Refused unless 'none'.")
    modalities: Any = Field(default=None, description="Refused unless ['text'].")
    audio: Any = Field(default=None, description="Refused: text only.")
    prediction: Any = Field(default=None, description="Refused.")
    reasoning_effort: Any = Field(default=None, description="Refused: use ponder.budget_tokens.")
    web_search_options: Any = Field(default=None, description="Refused.")

    @property
    def branch_max_tokens(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else (self.max_tokens)
        )


class CompletionRequest(_SamplingFields):
    """Body of `POST /v1/completions`; one prompt per request."""

    prompt: str | list[str]
    best_of: int | None = Field(
        default=None, ge=1, description="Strategy best-of-n over this many branches."
    )
    echo: Any = Field(default=None, description="Refused unless false.")
    suffix: Any = Field(default=None, description="Refused unless empty.")

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt: str | list[str]) -> str | list[str]:
        if prompt == "" or (isinstance(prompt, list) and "" in prompt):
            raise ValueError("a prompt must not be empty")
        return prompt

    @property
    def prompt_text(self) -> str | None:
        """The one prompt, or None when a list of several (unsupported) was sent."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PlanInfo(BaseModel):
    """What the planner granted, and whether it shrank the request to fit load or deadline."""

    requested_branches: int
    branches: int
    max_branches: int
    wave_size: int
    branches_per_job: int
    budget_tokens: int
    max_tokens_per_branch: int
    deadline_ms: int
    priority: str = Field(
        default="Standard",
        description="The query's priority class (Critical, Standard, Sheddable): its API "
        "key's, or lower as the x-gateway-inference-objective header asked.",
    )
    cold_start_hold_ms: int = Field(
        default=0,
        description="The pool had no worker taking jobs: how much longer than deadline_ms the "
        "query could wait for one to start.",
    )
    shrunk: bool = False
    shrink_reason: str | None = None
    grown: bool = Field(
        default=False,
        description="More branches than asked: the pool was idle (spec.slo.loadAdaptation "
        "ShrinkAndGrow); grow_reason says how idle and what bounded it.",
    )
    grow_reason: str | None = None
    early_exit: str = Field(default="none", description="The branches' early exit: none, ...")
    stopping_rule: str | None = Field(
        default=None,
        description="adaptive-consistency's stopping rule: beta, window, confidence or "
        "verifier; absent for other strategies.",
    )


class BranchInfo(BaseModel):
    """One branch's outcome, as its worker reported it."""

    id: str
    status: str
    answer: str | None = None
    score: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    worker_id: str = ""
    answer_tokens: int | None = Field(
        default=None, description="Tokens generated until its answer appeared and stayed."
    )
    tokens_after_answer: int | None = Field(
        default=None, description="Tokens generated after that (overthinking), probes aside."
    )
    probes: int = 0
    probe_tokens: int = Field(default=0, description="Answer probes' tokens, in its usage.")
    early_exit: bool = Field(default=False, description="Stopped by its answer probe.")
    confidence: float | None = Field(
        default=None, description="Its lowest group confidence (deep-conf), when measured."
    )
    low_confidence: bool = Field(
        default=False, description="Stopped by its worker below the confidence threshold."
    )


class PonderInfo(BaseModel):
    """The `ponder` object of a response: how the answer was reached.

    `branches_launched == branches_completed + branches_cancelled + branches_failed`: cancelled
    counts branches stopped by a cancel, by their deadline, or still running when the query
    answered (the scheduler cancelled them). After the answer the scheduler waits a bounded time
    (`spec.slo.usageSettleMilliseconds`) for the branches it cancelled to report, so `usage` and
    `branches` include them; one that completed in that time counts as completed, though the
    answer was decided without it.
    """

    query_id: str
    strategy: str
    answer: str | None = Field(description="The extracted answer the strategy chose.")
    branches_launched: int
    branches_completed: int
    branches_cancelled: int
    branches_failed: int
    waves: int
    votes: dict[str, float] = Field(default_factory=dict)
    scores: list[float] = Field(default_factory=list)
    confidence: float | None = None
    deadline_exceeded: bool = False
    branches_unreported: int = Field(
        default=0,
        description="Cancelled branches that had not reported within the usage settle time: "
        "what they spent is not in `usage` (the scheduler's ponder_late_tokens_total counts it).",
    )
    stopped_early: bool = Field(
        default=False,
        description="The strategy answered before its branch cap had completed.",
    )
    gave_up: bool = Field(
        default=False,
        description="An adaptive strategy answered unsettled, with its best so far: it had "
        "spent spec.strategy.giveUpPercent of its branch cap or budget without a verified, "
        "confident or agreed answer.",
    )
    tokens_saved: int = Field(
        default=0,
        description="Completion tokens that stopping early left unspent, against the plan's "
        "maximum (budget_tokens, or every branch at its cap if less).",
    )
    usage_complete: bool = Field(
        default=True, description="`usage` counts every branch launched (none unreported)."
    )
    latency_ms: float
    plan: PlanInfo
    tokens_after_answer: int = Field(
        default=0,
        description="Tokens all branches generated after their answers settled (overthinking).",
    )
    early_exits: int = Field(default=0, description="Branches stopped by their answer probe.")
    low_confidence_stops: int = Field(
        default=0, description="Branches stopped below deep-conf's confidence threshold."
    )
    branches: list[BranchInfo] = Field(
        default_factory=list, description="Every branch result received, in arrival order."
    )


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    ponder: PonderInfo


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    ponder: PonderInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ponder"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape; every 4xx/5xx of the API has it."""

    error: ErrorBody


class Health(BaseModel):
    status: str
    detail: str | None = None
