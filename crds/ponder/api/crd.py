"""The ReasoningService custom resource (group `ponder.dev`, version `v1alpha1`, short name `rsvc`).

These pydantic types are the source of the CRD YAML (`python -m ponder.api.crd_gen`): field
descriptions and class docstrings become what `kubectl explain reasoningservice.spec...` shows,
bounds and defaults become the OpenAPI schema, and the `x-kubernetes-validations` entries become
CEL rules the API server enforces, so an invalid object never reaches the operator.

Conventions (the Kubernetes API conventions): camelCase JSON, no floats (percentages and
milliseconds are integers, a temperature is a decimal string), durations as `...Seconds` or
`...Milliseconds` integers, enums in CamelCase, lists of named objects, absent means default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

from ponder.api.service_config import (
    DEFAULT_PROBE_CUE,
    MAX_ANSWER_PATTERN_LENGTH,
    answer_pattern_error,
)
from ponder.api.strategy import StrategyName

GROUP = "ponder.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ReasoningService"
PLURAL = "reasoningservices"
SINGULAR = "reasoningservice"
SHORT_NAMES = ("rsvc",)
MAX_NAME_LENGTH = 40
"""Names become NATS subjects, stream names and child object names, so they are kept short."""

DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
TEMPERATURE_PATTERN = r"^([0-4](\.[0-9]{1,3})?|5(\.0{1,3})?)$"
GPU_RESOURCE = "nvidia.com/gpu"


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry. The message names the fields to change; the API
    server prefixes it with the field path. (A messageExpression quoting the values would be
    nicer, but the API server's cost estimate for string(int) concatenation rejects it.)"""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: JsonDict) -> ConfigDict:
    """Model config of a CRD object with CEL rules attached to its schema."""
    return ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_enum_values=False,
        json_schema_extra={"x-kubernetes-validations": list(rules)} if rules else None,
    )


class _Spec(BaseModel):
    model_config = validations()


Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
ShortString = Annotated[str, StringConstraints(min_length=1, max_length=256)]


# ---------------------------------------------------------------------------------------- enums


# A test-time strategy in the CRD's CamelCase (`SelfConsistency`; requests spell it
# `self-consistency`). Its members are derived from StrategyName, so the list of strategies is
# written once; `StrategyName.from_crd` turns a member back into the request spelling.
if TYPE_CHECKING:
    StrategyType: TypeAlias = StrEnum
else:
    StrategyType = StrEnum(
        "StrategyType", [(member.name, member.crd_value) for member in StrategyName]
    )
    StrategyType.__doc__ = (
        "A test-time strategy (requests spell it in kebab case, e.g. self-consistency)."
    )


class ExtractorType(StrEnum):
    """How a final answer is read from a branch's text."""

    AUTO = "Auto"
    BOXED = "Boxed"
    HASHES = "Hashes"
    ANSWER_COLON = "AnswerColon"
    ANSWER_IS = "AnswerIs"
    LAST_NUMBER = "LastNumber"
    REGEX = "Regex"


class EarlyExitType(StrEnum):
    """How a single branch may stop before its token cap or end of sequence."""

    NONE = "None"
    ANSWER_PROBE = "AnswerProbe"


class VerifierType(StrEnum):
    """What scores a branch."""

    NONE = "None"
    LOGPROB = "Logprob"
    HTTP = "HTTP"
    REWARD_MODEL = "RewardModel"


class AutoscalingMode(StrEnum):
    """Who sets the number of workers."""

    BUILTIN = "Builtin"
    EXTERNAL = "External"


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# ----------------------------------------------------------------------------------------- spec


class ModelSpec(_Spec):
    """The model vLLM serves: a Hugging Face repository or a path inside the engine image."""

    model_config = validations(
        cel(
            "has(self.name) != has(self.path)",
            "set exactly one of spec.model.name or spec.model.path",
        ),
        cel(
            "self.extraArgs.all(arg, !arg.startsWith('--port') && !arg.startsWith('--host') &&"
            " !arg.startsWith('--served-model-name') && !arg.startsWith('--max-model-len') &&"
            " !arg.startsWith('--tensor-parallel-size'))",
            "spec.model.extraArgs may not set --port, --host, --served-model-name, "
            "--max-model-len or --tensor-parallel-size: use spec.model.servedName, "
            "spec.model.maxModelLen and spec.workers.gpusPerWorker",
            field_path=".extraArgs",
        ),
    )

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Hugging Face repository id of the model, e.g. Qwen/Qwen2.5-1.5B-Instruct.",
    )
    path: str | None = Field(
        default=None,
        pattern=r"^/",
        max_length=1024,
        description="Absolute path of the model inside the engine container (instead of name).",
    )
    served_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        max_length=128,
        description="The model name clients send in requests. Absent: the name or path.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=1_048_576,
        description="Context length vLLM allocates for (--max-model-len). Absent: the model's.",
    )
    extra_args: list[ShortString] = Field(
        default_factory=list,
        max_length=64,
        description="More `vllm serve` arguments, e.g. [--gpu-memory-utilization, '0.85'].",
    )


class ResourceRequirements(_Spec):
    """Compute resources of a container, as in a Pod spec."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: '4', memory: 32Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources, e.g. {memory: 48Gi}."
    )


class Toleration(_Spec):
    """A taint this pool's pods tolerate, as in a Pod spec."""

    model_config = validations(
        cel(
            "self.operator != 'Exists' || !has(self.value)",
            "a toleration with operator Exists must not set a value",
            field_path=".value",
        ),
        cel(
            "has(self.key) || self.operator == 'Exists'",
            "a toleration without a key must use operator Exists",
            field_path=".operator",
        ),
    )

    key: str | None = Field(default=None, max_length=316, description="Taint key to tolerate.")
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL, description="Exists matches any value."
    )
    value: str | None = Field(default=None, max_length=63, description="Taint value (Equal).")
    effect: TaintEffect | None = Field(default=None, description="Absent matches every effect.")
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class WorkersSpec(_Spec):
    """The GPU worker pool: a `vllm serve` engine beside a `ponder.workers` loop in each pod."""

    model_config = validations(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "spec.workers.minReplicas must not exceed spec.workers.maxReplicas",
            field_path=".minReplicas",
        ),
        cel(
            "!has(self.resources.limits) || !('nvidia.com/gpu' in self.resources.limits)",
            "set GPUs with spec.workers.gpusPerWorker, not spec.workers.resources.limits",
            field_path=".resources.limits",
        ),
        cel(
            "!has(self.resources.requests) || !('nvidia.com/gpu' in self.resources.requests)",
            "set GPUs with spec.workers.gpusPerWorker, not spec.workers.resources.requests",
            field_path=".resources.requests",
        ),
    )

    engine_image: str = Field(
        default="vllm/vllm-openai:v0.32.0",
        min_length=1,
        max_length=512,
        description="The vLLM engine image (upstream vllm/vllm-openai).",
    )
    image: str = Field(
        default="ghcr.io/ponder-dev/ponder:0.1.0",
        min_length=1,
        max_length=512,
        description="The Ponder image that runs the worker loop (and the scheduler).",
    )
    image_pull_policy: PullPolicy = Field(
        default=PullPolicy.IF_NOT_PRESENT, description="Pull policy of both images."
    )
    gpus_per_worker: int = Field(
        default=1, ge=1, le=16, description="nvidia.com/gpu per worker; vLLM's tensor parallelism."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory of the engine container (GPUs come from gpusPerWorker).",
    )
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, description="Node labels a worker pod requires, e.g. a GPU product."
    )
    tolerations: list[Toleration] | None = Field(
        default=None,
        max_length=32,
        description="Taints worker pods tolerate. Absent: the nvidia.com/gpu taint of GPU nodes.",
    )
    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Fewest workers the autoscaler keeps."
    )
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most workers it may run.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description=(
            "Workers wanted when spec.autoscaling.mode is External: the scale subresource's "
            "replicas, written by kubectl scale, an HPA or KEDA. Ignored in Builtin mode."
        ),
    )
    slots_per_worker: int = Field(
        default=32, ge=1, le=1024, description="Branches one worker runs at once."
    )
    max_deliveries: int = Field(
        default=3, ge=1, le=20, description="Deliveries of a branch job before it is dead-lettered."
    )
    ack_wait_seconds: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="A job not acknowledged (or kept in progress) this long is redelivered: a "
        "dead worker's jobs come back after it. Workers keep theirs in progress every third "
        "of it. At most half of spec.slo.targetLatencyMilliseconds.",
    )
    termination_grace_period_seconds: int | None = Field(
        default=None,
        ge=10,
        le=7200,
        description=(
            "How long a worker being removed may drain its in-flight branches. "
            "Absent: the longest query deadline (spec.slo.maxDeadlineMilliseconds) plus 30 s."
        ),
    )


class RequestLimitsSpec(_Spec):
    """What one API request may carry. Past a limit a request is refused with a 4xx that names
    it (413 for the body, 431 for headers, 408 for a slow client, 400 for the rest), and nothing
    is queued for it."""

    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body; a larger one is refused by its Content-Length, unread.",
    )
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, le=1024 * 1024, description="Request line and headers."
    )
    max_headers: int = Field(default=100, ge=8, le=1000, description="Headers of one request.")
    max_messages: int = Field(
        default=1024, ge=1, le=100_000, description="Messages of one chat completion."
    )
    max_stop_sequences: int = Field(default=16, ge=0, le=256, description="Stop strings.")
    max_stop_characters: int = Field(
        default=256, ge=1, le=16_384, description="Length of one stop string."
    )
    request_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=600,
        description="Time to send a request's head, and again its body; slower clients are "
        "cut off.",
    )


class SchedulerSpec(_Spec):
    """The OpenAI-compatible front: plans queries, fans out branches, aggregates."""

    replicas: int = Field(default=1, ge=1, le=100, description="Scheduler pods.")
    image: str | None = Field(
        default=None, max_length=512, description="Ponder image. Absent: spec.workers.image."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory of a scheduler pod."
    )
    service_type: ServiceType = Field(
        default=ServiceType.CLUSTER_IP, description="Type of the scheduler's Service."
    )
    limits: RequestLimitsSpec = Field(
        default_factory=RequestLimitsSpec, description="Bounds on one API request."
    )


class VerifierSpec(_Spec):
    """What scores branches for best-of-n, weighted votes, beam search and refine."""

    model_config = validations(
        cel(
            "!(self.type in ['HTTP', 'RewardModel']) || has(self.url)",
            "spec.strategy.verifier.url is required when the verifier type is HTTP or RewardModel",
            field_path=".url",
        ),
    )

    type: VerifierType = Field(default=VerifierType.NONE, description="The kind of verifier.")
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=1024,
        description="Base URL of an HTTP verifier or of the vLLM serving the reward model.",
    )
    model: str | None = Field(
        default=None, max_length=253, description="Reward model name (type RewardModel)."
    )
    timeout_seconds: int = Field(default=5, ge=1, le=300, description="Per-call timeout.")


class BeamSpec(_Spec):
    """Step-wise beam search: K continuations per beam, the best B kept after each step."""

    width: int = Field(default=4, ge=1, le=64, description="Beams kept after each step (B).")
    expansions: int = Field(default=4, ge=1, le=64, description="Continuations per beam (K).")
    step_delimiter: str = Field(
        default="\n", min_length=1, max_length=32, description="Text that ends a step."
    )
    max_steps: int = Field(default=16, ge=1, le=256, description="Steps before it must answer.")


class BudgetForcingSpec(_Spec):
    """Budget forcing (s1): `Wait` to think longer, a forced final answer at the cap."""

    min_thinking_tokens: int = Field(
        default=0, ge=0, le=1_048_576, description="Below this, an end of thinking gets a Wait."
    )
    wait_token: str = Field(
        default="Wait", min_length=1, max_length=64, description="Text that makes it think on."
    )
    answer_prompt: str = Field(
        default="Final Answer:", min_length=1, max_length=256, description="Appended at the cap."
    )
    max_waits: int = Field(default=2, ge=0, le=16, description="Waits inserted at most.")


class EarlyExitSpec(_Spec):
    """The answer-probe early exit (Dynasor's certaindex): every `everyTokens` tokens, ask for
    the branch's answer so far (its text, then `cue`, continued greedily for at most
    `probeTokens`), and stop the branch once `window` probes in a row read the same answer with
    `spec.strategy.extractor`. Requests choose with `ponder.early_exit`; steps and turns of
    beam search, refine and budget forcing never exit early."""

    default: EarlyExitType = Field(
        default=EarlyExitType.NONE, description="Early exit of a request that names none."
    )
    every_tokens: int = Field(default=32, ge=4, le=4096, description="Tokens between probes.")
    window: int = Field(default=2, ge=2, le=16, description="Agreeing probes in a row to stop.")
    cue: str = Field(
        default=DEFAULT_PROBE_CUE,
        min_length=1,
        max_length=256,
        description="Text appended to the branch so far to ask for its answer; pick one the "
        "extractor reads (AnswerIs reads 'The answer is 42', Boxed a cue ending in '\\boxed{').",
    )
    probe_tokens: int = Field(default=8, ge=1, le=64, description="Cap of one probe's tokens.")


class StrategySpec(_Spec):
    """Defaults a request falls back to, and the limits it may not exceed."""

    model_config = validations(
        cel(
            "self.branches <= self.maxBranches",
            "spec.strategy.branches must not exceed spec.strategy.maxBranches",
            field_path=".branches",
        ),
        cel(
            "self.branchesPerJob <= self.maxBranches",
            "spec.strategy.branchesPerJob must not exceed spec.strategy.maxBranches",
            field_path=".branchesPerJob",
        ),
        cel(
            "self.default in self.allowed",
            "spec.strategy.default must be one of spec.strategy.allowed",
            field_path=".default",
        ),
        cel(
            "(self.extractor == 'Regex') == has(self.answerPattern)",
            "spec.strategy.answerPattern is required by extractor Regex and allowed with it alone",
            field_path=".answerPattern",
        ),
    )

    default: StrategyType = Field(
        default=StrategyType(StrategyName.ADAPTIVE_CONSISTENCY.crd_value),
        description="Strategy of a request that names none.",
    )
    allowed: list[StrategyType] = Field(
        default_factory=lambda: list(StrategyType),
        min_length=1,
        max_length=len(StrategyType),
        description="Strategies requests may ask for. Absent: all.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    branches: int = Field(default=8, ge=1, le=256, description="Branches a request gets.")
    max_branches: int = Field(default=32, ge=1, le=256, description="Most branches per request.")
    branches_per_job: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Branches of one query that run as one vLLM request (they share the prompt).",
    )
    confidence_percent: int = Field(
        default=95,
        ge=1,
        le=99,
        description="Adaptive consistency stops once the vote's confidence reaches this.",
    )
    temperature: str = Field(
        default="0.8",
        pattern=TEMPERATURE_PATTERN,
        description="Sampling temperature as a decimal string from 0 to 5, e.g. '0.8'.",
    )
    extractor: ExtractorType = Field(
        default=ExtractorType.AUTO,
        description=(
            "How answers are read: Boxed (\\boxed{}), Hashes (#### or #N), AnswerColon (the "
            "line after 'Answer:'), AnswerIs (the number after 'the answer is' or 'answer:'), "
            "LastNumber (the text's last number), Regex (answerPattern). Auto tries Boxed, "
            "Hashes, AnswerColon, then AnswerIs."
        ),
    )
    answer_pattern: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ANSWER_PATTERN_LENGTH,
        description=(
            "Python regular expression of extractor Regex: the answer is its first capturing "
            "group (else the whole match) in the last match, e.g. 'Result: (-?[0-9]+)'. One "
            "that does not compile is admitted (CEL cannot check it) and reported in status: "
            "Degraded, reason InvalidSpec."
        ),
    )
    verifier: VerifierSpec = Field(default_factory=VerifierSpec)
    beam: BeamSpec = Field(default_factory=BeamSpec)
    budget_forcing: BudgetForcingSpec = Field(default_factory=BudgetForcingSpec)
    early_exit: EarlyExitSpec = Field(default_factory=EarlyExitSpec)

    @field_validator("answer_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None) -> str | None:
        # CEL cannot compile a Python regex, so the API server admits any string: the operator
        # refuses it here, and the scheduler again when it loads its ServiceConfig.
        error = None if pattern is None else answer_pattern_error(pattern)
        if error:
            raise ValueError(f"spec.strategy.answerPattern: {error}")
        return pattern


class BudgetSpec(_Spec):
    """Completion tokens a query may spend over all its branches."""

    model_config = validations(
        cel(
            "self.defaultTokens <= self.maxTokens",
            "spec.budget.defaultTokens must not exceed spec.budget.maxTokens",
            field_path=".defaultTokens",
        ),
        cel(
            "self.maxTokensPerBranch <= self.maxTokens",
            "spec.budget.maxTokensPerBranch must not exceed spec.budget.maxTokens",
            field_path=".maxTokensPerBranch",
        ),
    )

    default_tokens: int = Field(
        default=4096, ge=1, le=16_777_216, description="Budget of a request that names none."
    )
    max_tokens: int = Field(
        default=32768, ge=1, le=16_777_216, description="Largest budget a request may ask for."
    )
    max_tokens_per_branch: int = Field(
        default=1024, ge=1, le=1_048_576, description="Generation cap of one branch."
    )


class SloSpec(_Spec):
    """The latency objective the scheduler plans for and the autoscaler defends."""

    model_config = validations(
        cel(
            "self.targetLatencyMilliseconds <= self.maxDeadlineMilliseconds",
            "spec.slo.targetLatencyMilliseconds must not exceed spec.slo.maxDeadlineMilliseconds",
            field_path=".targetLatencyMilliseconds",
        ),
    )

    target_latency_milliseconds: int = Field(
        default=30_000, ge=10, le=3_600_000, description="Latency a query should finish within."
    )
    attainment_percent: int = Field(
        default=95, ge=1, le=100, description="Share of queries that should meet the target."
    )
    max_deadline_milliseconds: int = Field(
        default=300_000, ge=10, le=3_600_000, description="Longest deadline a request may ask for."
    )
    usage_settle_milliseconds: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="After an answer, how long to wait for the branches it cancelled to report "
        "the tokens they spent, so that usage counts them; what reports later is counted in "
        "ponder_late_tokens_total only. 0: answer without waiting.",
    )


class ScaleToZeroSpec(_Spec):
    """Remove every worker after a quiet period; the first query then waits for a cold start."""

    enabled: bool = Field(default=False, description="Scale to zero when idle.")
    idle_seconds: int = Field(
        default=600, ge=30, le=86_400, description="No queued or running branch for this long."
    )


class AutoscalingSpec(_Spec):
    """How the worker count follows demand: queued branches, worker slots and p95 latency."""

    model_config = validations(
        cel(
            "self.mode == 'Builtin' || !self.scaleToZero.enabled",
            "spec.autoscaling.scaleToZero applies to mode Builtin; in External mode the HPA or "
            "KEDA scales to zero",
            field_path=".scaleToZero.enabled",
        ),
    )

    mode: AutoscalingMode = Field(
        default=AutoscalingMode.BUILTIN,
        description=(
            "Builtin: the operator scales workers on queue depth and latency. External: it "
            "follows spec.workers.replicas (the scale subresource), for an HPA or KEDA."
        ),
    )
    target_queue_per_worker: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "Queued plus running branches one worker should carry. "
            "Absent: slotsPerWorker x targetUtilizationPercent / 100."
        ),
    )
    target_utilization_percent: int = Field(
        default=80, ge=10, le=100, description="Share of worker slots the autoscaler aims to use."
    )
    scale_up_at_slo_percent: int = Field(
        default=90,
        ge=10,
        le=1000,
        description="Add a worker when p95 latency reaches this share of the SLO target.",
    )
    scale_up_stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="A scale-up must be recommended this long."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Workers are removed only after every recommendation this long was lower.",
    )
    max_scale_up_step: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Most workers one decision adds (or maxScaleUpPercent, if more).",
    )
    max_scale_up_percent: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Most workers one decision adds, in percent of the current workers.",
    )
    scale_to_zero: ScaleToZeroSpec = Field(default_factory=ScaleToZeroSpec)


class NatsSpec(_Spec):
    """The NATS server with JetStream that carries this service's jobs."""

    url: str | None = Field(
        default=None,
        pattern=r"^(nats|tls|ws|wss)://",
        max_length=1024,
        description="NATS URL for this service. Absent: the operator's --nats-url.",
    )


class ReasoningServiceSpec(_Spec):
    """Desired state of a ReasoningService: a model served with test-time compute."""

    model_config = validations(
        cel(
            "!has(self.model.maxModelLen) || self.budget.maxTokensPerBranch < "
            "self.model.maxModelLen",
            "spec.budget.maxTokensPerBranch must be below spec.model.maxModelLen "
            "(the prompt needs room too)",
            field_path=".budget.maxTokensPerBranch",
        ),
        cel(
            "self.workers.ackWaitSeconds * 2000 <= self.slo.targetLatencyMilliseconds",
            "spec.workers.ackWaitSeconds must be at most half of "
            "spec.slo.targetLatencyMilliseconds: a dead worker's jobs come back after the ack "
            "wait and need the rest of the deadline to run",
            field_path=".workers.ackWaitSeconds",
        ),
        cel(
            "!has(self.workers.replicas) || self.autoscaling.mode == 'External' || "
            "self.workers.replicas <= self.workers.maxReplicas",
            "spec.workers.replicas must not exceed spec.workers.maxReplicas",
            field_path=".workers.replicas",
        ),
    )

    model: ModelSpec
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    slo: SloSpec = Field(default_factory=SloSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    nats: NatsSpec = Field(default_factory=NatsSpec)


# --------------------------------------------------------------------------------------- status


class Condition(BaseModel):
    """One observation of the service's state (Kubernetes API conventions)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )

    type: str = Field(max_length=316, description="Ready, Progressing or Degraded.")
    status: ConditionStatus
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        max_length=1024,
        description="CamelCase reason, e.g. InsufficientGPUCapacity.",
    )
    message: str = Field(default="", max_length=32768, description="What happened, for humans.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="When the status last changed (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )


class ReasoningServiceStatus(BaseModel):
    """Observed state of a ReasoningService, written by the operator."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing and Degraded.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    replicas: int | None = Field(default=None, description="Worker pods that exist.")
    ready_replicas: int | None = Field(default=None, description="Worker pods that are ready.")
    desired_replicas: int | None = Field(
        default=None, description="Workers wanted: the autoscaler's decision or spec.replicas."
    )
    ready: str | None = Field(default=None, description="Ready/desired workers, e.g. 2/3.")
    selector: str | None = Field(
        default=None, description="Label selector of the worker pods (scale subresource)."
    )
    queue_depth: int | None = Field(
        default=None, description="Branches queued or running (JetStream pending + ack-pending)."
    )
    p95_latency_milliseconds: int | None = Field(
        default=None, description="95th percentile query latency the schedulers report."
    )
    slo_attainment_percent: int | None = Field(
        default=None, description="Share of recent queries that met the latency target."
    )
    endpoint: str | None = Field(default=None, description="OpenAI base URL inside the cluster.")
    served_model: str | None = Field(default=None, description="The model name clients send.")
    last_scale_time: str | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="When the autoscaler last changed the number of workers.",
    )


# ------------------------------------------------------------------------------------- object


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ReasoningService(BaseModel):
    """A model served with test-time compute: workers, a scheduler and a job stream."""

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, extra="ignore"
    )

    api_version: Literal["ponder.dev/v1alpha1"] = Field(
        default="ponder.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["ReasoningService"] = "ReasoningService"
    metadata: ObjectMeta
    spec: ReasoningServiceSpec
    status: ReasoningServiceStatus | None = None

    def manifest(self) -> dict[str, Any]:
        """The object as `kubectl apply` takes it (no status, no absent fields)."""
        return self.model_dump(mode="json", exclude={"status"}, exclude_none=True)
