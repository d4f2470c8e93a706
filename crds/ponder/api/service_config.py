"""Runtime configuration of one ReasoningService's scheduler and workers.

The operator renders it from the ReasoningService spec into a ConfigMap (JSON); the scheduler
and workers load it from a file or the environment. Tests and `make demo` build it directly.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ponder.api.strategy import StrategyName

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
"""The NATS server of a service that names none: one on the same host (local runs)."""


class VerifierKind(StrEnum):
    NONE = "none"
    LOGPROB = "logprob"  # mean token logprob of the branch
    HTTP = "http"  # POST {question, answer, steps} -> {"score": float}
    REWARD_MODEL = "reward-model"  # an outcome reward model served by vLLM (its /score)
    PROCESS_REWARD_MODEL = "process-reward-model"  # a process reward model on vLLM's /pooling


REMOTE_VERIFIER_KINDS = frozenset(
    {VerifierKind.HTTP, VerifierKind.REWARD_MODEL, VerifierKind.PROCESS_REWARD_MODEL}
)
"""The kinds that call a server at the verifier's url."""

MAX_ANSWER_PATTERN_LENGTH = 256
"""Longest user regex an answer extractor accepts (CRD `spec.strategy.answerPattern`)."""


class ExtractorKind(StrEnum):
    AUTO = "auto"  # the first of boxed, hashes, answer-colon, answer-is that matches, else none
    BOXED = "boxed"
    HASHES = "hashes"
    ANSWER_COLON = "answer-colon"
    ANSWER_IS = "answer-is"  # the number after the last "the answer is" / "answer:"
    LAST_NUMBER = "last-number"  # the last number in the text
    REGEX = "regex"  # the user's `answer_pattern`: its first group, else the whole match


def answer_pattern_error(pattern: str) -> str | None:
    """Why `pattern` cannot be an answer extractor's regex (Python `re` syntax), or None."""
    try:
        re.compile(pattern)
    except re.error as error:
        return f"answer pattern {pattern!r} is not a valid regular expression: {error}"
    return None


DEFAULT_PROBE_CUE = "\n\nThe answer is"
"""What the answer probe appends to ask a branch for its answer: extractor AnswerIs (and Auto)
reads the number after it."""


class EarlyExit(StrEnum):
    """How a single branch may stop before its token cap or end of sequence."""

    NONE = "none"
    ANSWER_PROBE = "answer-probe"  # Dynasor's certaindex: stop once probed answers agree


class AnswerProbe(BaseModel):
    """The answer-probe early exit (Dynasor's certaindex, arXiv 2412.20993).

    Every `every_tokens` generated tokens, the worker asks the engine for a short greedy
    continuation (`probe_tokens` at most) of the branch's text so far followed by `cue`, and
    reads an answer from `cue` + that continuation with the service's extractor. Once `window`
    probes in a row read the same answer, the branch stops: its text ends with the cue and the
    probed answer, and every probe's tokens count in its usage.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    every_tokens: int = Field(default=32, ge=4, le=4096, description="Tokens between probes.")
    window: int = Field(default=2, ge=2, le=16, description="Agreeing probes in a row to stop.")
    cue: str = Field(
        default=DEFAULT_PROBE_CUE,
        min_length=1,
        max_length=256,
        description="Text appended to the branch so far to ask for its answer.",
    )
    probe_tokens: int = Field(default=8, ge=1, le=64, description="Cap of one probe's tokens.")


class EarlyExitConfig(BaseModel):
    """The early exit a request gets when it names none, and the answer probe's settings (which
    a request asking for `answer-probe` uses whatever the default)."""

    model_config = ConfigDict(extra="forbid")
    default: EarlyExit = EarlyExit.NONE
    probe: AnswerProbe = Field(default_factory=AnswerProbe)


class VerifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: VerifierKind = VerifierKind.NONE
    url: str | None = Field(default=None, description="HTTP verifier or reward-model base URL.")
    model: str | None = Field(default=None, description="Served name of the reward model.")
    timeout_seconds: float = Field(default=5.0, gt=0)
    accept_score: float = Field(
        default=0.99,
        ge=0.01,
        le=1,
        description="A score at or above this counts as verified: adaptive stopping, the "
        "vote among verified branches, refine's pass. Set it from a learned verifier's "
        "calibration (an exact checker scores 1).",
    )

    @model_validator(mode="after")
    def _url_when_remote(self) -> VerifierConfig:
        if self.kind in REMOTE_VERIFIER_KINDS and not self.url:
            raise ValueError(f"verifier kind {self.kind.value} needs a url")
        return self


class BeamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(default=4, ge=1, le=64, description="Beams kept after each step (B).")
    expansions: int = Field(default=4, ge=1, le=64, description="Continuations per beam (K).")
    step_delimiter: str = Field(default="\n", min_length=1)
    max_steps: int = Field(default=16, ge=1, le=256)


class BudgetForcingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_thinking_tokens: int = Field(default=0, ge=0)
    wait_token: str = "Wait"
    answer_prompt: str = Field(default="Final Answer:", description="Appended at the cap.")
    max_waits: int = Field(default=2, ge=0, le=16)


class DeepConfMode(StrEnum):
    """How `deep-conf` uses its branches' confidence (Fu et al. 2025, arXiv 2508.15260)."""

    OFFLINE = "offline"  # all branches at once, then a vote over the most confident
    ONLINE = "online"  # a warm-up wave sets a threshold; later branches stop below it


class TokenConfidence(StrEnum):
    """What one generated token says about a branch's confidence; higher is more confident."""

    SAMPLED = "sampled"  # the sampled token's probability: a group scores exp(mean logprob)
    TOP_K = "top-k"  # DeepConf's: minus the mean logprob of the k likeliest tokens


class DeepConfConfig(BaseModel):
    """The `deep-conf` strategy: a branch's confidence is its lowest group confidence, the mean
    token confidence over a sliding window of `window_tokens` (over the whole branch when it is
    shorter). Offline, `branches` run at once and the `keep_percent` most confident vote,
    weighted by their confidence. Online, a first wave of `branches` sets the threshold (the
    confidence the `keep_percent` most confident of it reach); each later branch is stopped as
    soon as a window falls below it; waves of `branches` follow up to `max_branches` until the
    weighted vote's leader holds `consensus` of the weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: DeepConfMode = DeepConfMode.ONLINE
    token_confidence: TokenConfidence = TokenConfidence.SAMPLED
    top_k: int = Field(default=5, ge=2, le=20, description="Tokens averaged by top-k.")
    window_tokens: int = Field(default=4, ge=1, le=4096, description="Tokens per group.")
    keep_percent: int = Field(default=10, ge=1, le=100, description="Most confident share kept.")
    consensus: float = Field(default=0.95, gt=0.0, le=1.0, description="Online stop share.")


class StoppingRule(StrEnum):
    """When adaptive-consistency stops sampling, judged after each wave."""

    BETA = "beta"  # the vote's leader is the majority with probability >= confidence
    WINDOW = "window"  # the last wave's answers are all the same (ESC, Li et al. 2024)
    CONFIDENCE = "confidence"  # the confidence-weighted leader holds deep_conf.consensus
    VERIFIER = "verifier"  # a branch's verifier score reaches verifier.accept_score


class StrategyDefaults(BaseModel):
    """Defaults a request falls back to, and the limits it may not exceed."""

    model_config = ConfigDict(extra="forbid")
    default: StrategyName = StrategyName.ADAPTIVE_CONSISTENCY
    allowed: list[StrategyName] = Field(default_factory=lambda: list(StrategyName))
    branches: int = Field(default=8, ge=1, le=256)
    max_branches: int = Field(default=32, ge=1, le=256)
    branches_per_job: int = Field(default=4, ge=1, le=64, description="k branches share a job.")
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    give_up: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="An adaptive strategy (adaptive-consistency, deep-conf online) that has not "
        "settled once this share of its branch cap or token budget is spent answers with its "
        "best so far and says so (`ponder.gave_up`); 1: it runs to the cap.",
    )
    stopping_rule: StoppingRule | None = Field(
        default=None,
        description="adaptive-consistency's stopping rule; None: verifier when the service has "
        "one, else beta.",
    )
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    extractor: ExtractorKind = ExtractorKind.AUTO
    answer_pattern: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ANSWER_PATTERN_LENGTH,
        description="The regex of extractor `regex` (its first group, else the whole match).",
    )
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)
    budget_forcing: BudgetForcingConfig = Field(default_factory=BudgetForcingConfig)
    deep_conf: DeepConfConfig = Field(default_factory=DeepConfConfig)
    early_exit: EarlyExitConfig = Field(default_factory=EarlyExitConfig)

    @model_validator(mode="after")
    def _branches_within_limit(self) -> StrategyDefaults:
        if self.branches > self.max_branches:
            raise ValueError(f"branches={self.branches} exceeds max_branches={self.max_branches}")
        if self.stopping_rule is StoppingRule.VERIFIER and self.verifier.kind is VerifierKind.NONE:
            raise ValueError("stopping_rule=verifier needs a verifier (verifier.kind is none)")
        return self

    @field_validator("answer_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None) -> str | None:
        # The scheduler refuses to start on a bad pattern rather than fail every query later.
        error = None if pattern is None else answer_pattern_error(pattern)
        if error:
            raise ValueError(error)
        return pattern

    @model_validator(mode="after")
    def _pattern_with_regex(self) -> StrategyDefaults:
        if (self.extractor == ExtractorKind.REGEX) != (self.answer_pattern is not None):
            raise ValueError("extractor regex needs an answer_pattern, and only it takes one")
        return self


class BudgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default_tokens: int = Field(default=4096, ge=1, description="Per-query token budget.")
    max_tokens: int = Field(default=32768, ge=1)
    max_tokens_per_branch: int = Field(default=1024, ge=1)

    @model_validator(mode="after")
    def _default_within_limit(self) -> BudgetConfig:
        if self.default_tokens > self.max_tokens:
            raise ValueError(
                f"default_tokens={self.default_tokens} exceeds max_tokens={self.max_tokens}"
            )
        return self


class LoadAdaptation(StrEnum):
    """How the planner adapts a query's width to the load it observes (docs/architecture.md,
    "Load-adaptive width")."""

    STATIC = "static"  # as the request and the hard limits (budget, maxBranches) say, any load
    SHRINK = "shrink"  # fewer branches and waves when the load would push them past the deadline
    SHRINK_AND_GROW = "shrink-and-grow"  # that, and more branches on an idle pool with slack


class SloConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_latency_ms: int = Field(default=30_000, ge=10, description="Latency SLO per query.")
    attainment: float = Field(default=0.95, gt=0.0, le=1.0)
    max_deadline_ms: int = Field(default=300_000, ge=10, description="Longest deadline allowed.")
    usage_settle_ms: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="After an answer, how long to wait for the branches it cancelled to report "
        "the tokens they spent, so that `usage` counts them (0: answer without waiting).",
    )
    cold_start_hold_ms: int = Field(
        default=0,
        ge=0,
        le=3_600_000,
        description="How much longer than its deadline a query that finds no worker taking jobs "
        "(the pool scaled to zero) may wait for one, its jobs queued meanwhile (0: no hold).",
    )
    load_adaptation: LoadAdaptation = Field(
        default=LoadAdaptation.SHRINK,
        description="How the planner fits a query's branches to the observed load: static "
        "(never), shrink (fewer under load) or shrink-and-grow (also more on an idle pool).",
    )


MIB = 1024 * 1024


class ApiLimits(BaseModel):
    """What one HTTP request to a scheduler may carry; past a limit it is refused with a 4xx
    that names the limit, before anything is queued (413 for a body over `max_body_bytes`,
    refused by its Content-Length before it is read; 431 for too many headers; 408 for a
    request not received within `request_timeout_seconds`; 400 for the rest)."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(default=4 * MIB, ge=1024, le=64 * MIB)
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, le=MIB, description="Request line and headers together."
    )
    max_headers: int = Field(default=100, ge=8, le=1000)
    max_messages: int = Field(default=1024, ge=1, le=100_000, description="Chat messages.")
    max_stop_sequences: int = Field(default=16, ge=0, le=256)
    max_stop_chars: int = Field(default=256, ge=1, le=16_384, description="Of one stop string.")
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="To receive a request's head, and again its body: slow and idle clients "
        "are cut off.",
    )


class AuthMode(StrEnum):
    NONE = "none"  # anyone who reaches the scheduler may query it
    API_KEYS = "api-keys"  # `Authorization: Bearer <key>`, keys from `keys_file`


class AuthConfig(BaseModel):
    """Who may query the service. With API keys the scheduler reads `keys_file` (the mounted
    Secret: a YAML document of keys, tenants and limits, `ponder.scheduler.auth`) and reads it
    again whenever it changes, checked every `reload_seconds`: keys rotate without a restart."""

    model_config = ConfigDict(extra="forbid")
    mode: AuthMode = AuthMode.NONE
    keys_file: str | None = Field(default=None, description="The keys document (api-keys).")
    reload_seconds: float = Field(default=5.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _keys_with_api_keys(self) -> AuthConfig:
        if (self.mode is AuthMode.API_KEYS) != (self.keys_file is not None):
            raise ValueError("auth mode api-keys needs a keys_file, and only it takes one")
        return self


class ServiceConfig(BaseModel):
    """Everything a scheduler or worker of one ReasoningService needs to know."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field(
        default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63
    )  # a DNS-1123 label, as Kubernetes namespaces are (digits first too)
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    nats_url: str = DEFAULT_NATS_URL
    model: str = Field(description="Served model name, as vLLM serves it and clients ask for it.")
    max_model_len: int | None = Field(default=None, ge=16)
    strategy: StrategyDefaults = Field(default_factory=StrategyDefaults)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    api: ApiLimits = Field(default_factory=ApiLimits)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    slots_per_worker: int = Field(default=32, ge=1, le=1024)
    job_max_deliver: int = Field(default=3, ge=1, le=20)
    job_ack_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A dead worker's jobs are redelivered after this; well under the deadline.",
    )
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Copies JetStream keeps of the job stream (and its consumers): 1 on a "
        "single NATS server, 3 on a three-node JetStream cluster, where the stream then "
        "survives the loss of any one server.",
    )
