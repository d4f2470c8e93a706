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

# What the API server refuses at admission, written as the Pod API and the tools downstream
# validate it, so that an object it admits is one the operator can converge.
_REPO_PART = r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*"
MODEL_NAME_PATTERN = rf"^({_REPO_PART}/)?{_REPO_PART}$"
"""A Hugging Face repository id, `owner/name` or `name`: never a flag (`-`), a dot path (`.`,
`..`), whitespace, `;` or a newline."""
MODEL_PATH_PATTERN = r"^/[^\s\x00-\x1f\x7f]*$"
"""An absolute path without whitespace or control characters (`..` segments: a CEL rule)."""
_DOMAIN = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_PATH_COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^(({_DOMAIN}|\[[0-9a-fA-F:]+\])(:[0-9]+)?/)?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
"""An image reference, `[registry[:port]/]path[:tag][@digest]` (the distribution/reference
grammar that container runtimes parse)."""
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_QUALIFIED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?{_QUALIFIED_NAME}$"
"""A label key (Kubernetes' qualified name): an optional DNS-subdomain prefix and `/`, then up to
63 letters, digits, `-`, `_` and `.`, starting and ending alphanumeric."""
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
EXTENDED_RESOURCE_PATTERN = rf"^{_DNS_SUBDOMAIN}/{_QUALIFIED_NAME}$"
MAX_RESOURCE_ENTRIES = 8
OVERCOMMITTABLE_RESOURCES = ("cpu", "memory", "ephemeral-storage")
"""The standard resources a container may request below its limit; hugepages and extended
resources (`domain/name`) must request exactly their limit."""
MAX_NODE_SELECTOR_ENTRIES = 64
REFUSED_ENGINE_FLAGS = (
    "--port",
    "--host",
    "--served-model-name",
    "--max-model-len",
    "--tensor-parallel-size",
    "-tp",
    "--trust-remote-code",
    "--api-key",
)
"""`vllm serve` flags extraArgs may not set: Ponder sets the first five from the spec, the
short `-tp` is `--tensor-parallel-size`, `--trust-remote-code` runs code from the model
repository, and an `--api-key` the workers do not send breaks every branch."""


def _label_key_rule(key: str) -> str:
    """CEL: `key` is a label key, its prefix at most 253 characters (a regex cannot count)."""
    return (
        f"{key}.matches(r'{LABEL_KEY_PATTERN}') && "
        f"(!{key}.contains('/') || {key}.indexOf('/') <= 253)"
    )


def _cel_list(items: tuple[str, ...]) -> str:
    """A CEL list literal of strings."""
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _url_with_host_rule(field: str) -> str:
    """CEL: the optional URL `field` parses and names a host."""
    return f"!has(self.{field}) || (isURL(self.{field}) && url(self.{field}).getHostname() != '')"


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


class DeepConfModeType(StrEnum):
    """How DeepConf uses its branches' confidence."""

    OFFLINE = "Offline"
    ONLINE = "Online"


class TokenConfidenceType(StrEnum):
    """What one generated token says about its branch's confidence."""

    SAMPLED_TOKEN = "SampledToken"
    TOP_K = "TopK"


class StoppingRuleType(StrEnum):
    """When AdaptiveConsistency stops sampling, judged after each wave."""

    BETA = "Beta"
    WINDOW = "Window"
    CONFIDENCE = "Confidence"
    VERIFIER = "Verifier"


class LoadAdaptationType(StrEnum):
    """How the planner fits a query's branches to the load it observes."""

    STATIC = "Static"
    SHRINK = "Shrink"
    SHRINK_AND_GROW = "ShrinkAndGrow"


class VerifierType(StrEnum):
    """What scores a branch."""

    NONE = "None"
    LOGPROB = "Logprob"
    HTTP = "HTTP"
    REWARD_MODEL = "RewardModel"
    PROCESS_REWARD_MODEL = "ProcessRewardModel"


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


class AuthType(StrEnum):
    NONE = "None"  # anyone who reaches the Service may query it; status says so
    API_KEYS = "ApiKeys"  # `Authorization: Bearer <key>`, keys from a Secret


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
            # A flag is refused in every spelling vLLM parses: `--flag value`, `--flag=value`,
            # underscores for dashes, and any abbreviation argparse would expand to it.
            "self.extraArgs.all(arg, !arg.startsWith('-') || arg in ['-', '--'] || "
            f"!{_cel_list(REFUSED_ENGINE_FLAGS)}.exists(flag, "
            "flag.startsWith(arg.split('=')[0].replace('_', '-')) || "
            "arg.split('=')[0].replace('_', '-').startsWith(flag)))",
            "spec.model.extraArgs may not set "
            + ", ".join(REFUSED_ENGINE_FLAGS)
            + " (nor their underscore or --flag=value spellings): use spec.model.servedName, "
            "spec.model.maxModelLen and spec.workers.gpusPerWorker",
            field_path=".extraArgs",
        ),
        cel(
            "!has(self.path) || !self.path.matches('(^|/)[.][.](/|$)')",
            "spec.model.path must not contain a '..' segment",
            field_path=".path",
        ),
    )

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=MODEL_NAME_PATTERN,
        description="Hugging Face repository id of the model, e.g. Qwen/Qwen2.5-1.5B-Instruct.",
    )
    path: str | None = Field(
        default=None,
        pattern=MODEL_PATH_PATTERN,
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


def _as_quantity(value: str) -> str:
    """CEL: an int-or-string `value` as a Quantity. (`quantity(string(value))` reads simpler, but
    the cost estimate charges a conversion of the largest request for each string().)"""
    return f"(type({value}) == string ? quantity({value}) : quantity('0').add(int({value})))"


def _resource_map_rules(field: str) -> list[JsonDict]:
    """CEL rules of `requests` or `limits`: names and quantities the Pod API accepts."""
    value = f"self.{field}[name]"
    return [
        cel(
            f"!has(self.{field}) || self.{field}.all(name, "
            f"name in {_cel_list(OVERCOMMITTABLE_RESOURCES)} || "
            "(name.startsWith('hugepages-') && isQuantity(name.substring(10))) || "
            f"(name.matches(r'{EXTENDED_RESOURCE_PATTERN}') && !name.contains('kubernetes.io/')))",
            f"resources.{field} may name cpu, memory, ephemeral-storage, hugepages-<size> or an "
            "extended resource domain/name (e.g. example.com/fpga)",
            field_path=f".{field}",
        ),
        cel(
            f"!has(self.{field}) || self.{field}.all(name, "
            f"type({value}) == string ? !{value}.startsWith('-') : int({value}) >= 0)",
            f"resources.{field} must not be negative",
            field_path=f".{field}",
        ),
    ]


class ResourceRequirements(_Spec):
    """Compute resources of a container, as in a Pod spec."""

    model_config = validations(
        *_resource_map_rules("requests"),
        *_resource_map_rules("limits"),
        cel(
            # One comparison serves both Pod API rules: a request of cpu, memory or
            # ephemeral-storage may be below its limit, one of hugepages or an extended
            # resource must equal it (they cannot be overcommitted).
            "!has(self.requests) || !has(self.limits) || self.requests.all(name, "
            "!(name in self.limits) || "
            f"{_as_quantity('self.requests[name]')}.compareTo("
            f"{_as_quantity('self.limits[name]')}) in "
            f"(name in {_cel_list(OVERCOMMITTABLE_RESOURCES)} ? [-1, 0] : [0]))",
            "resources.requests must not exceed resources.limits (and must equal them for "
            "hugepages and extended resources)",
            field_path=".requests",
        ),
        cel(
            "!has(self.requests) || self.requests.all(name, "
            f"name in {_cel_list(OVERCOMMITTABLE_RESOURCES)} || "
            "(has(self.limits) && name in self.limits))",
            "resources.limits must be set for every hugepages or extended resource in "
            "resources.requests: they cannot be overcommitted",
            field_path=".limits",
        ),
    )

    requests: dict[str, Quantity] | None = Field(
        default=None,
        max_length=MAX_RESOURCE_ENTRIES,
        description="Minimum resources, e.g. {cpu: '4', memory: 32Gi}.",
    )
    limits: dict[str, Quantity] | None = Field(
        default=None,
        max_length=MAX_RESOURCE_ENTRIES,
        description="Maximum resources, e.g. {memory: 48Gi}.",
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
        cel(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds applies to effect NoExecute only: set effect NoExecute or remove "
            "tolerationSeconds",
            field_path=".tolerationSeconds",
        ),
        cel(
            "!has(self.key) || self.key.indexOf('/') <= 253",
            "a toleration key's prefix (before '/') must be at most 253 characters",
            field_path=".key",
        ),
    )

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=LABEL_KEY_PATTERN,
        description="Taint key to tolerate (a label key, e.g. nvidia.com/gpu).",
    )
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL, description="Exists matches any value."
    )
    value: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Taint value (Equal), a label value.",
    )
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
        cel(
            f"!has(self.nodeSelector) || self.nodeSelector.all(key, {_label_key_rule('key')})",
            "spec.workers.nodeSelector keys must be label keys: an optional DNS-subdomain "
            "prefix and '/', then up to 63 letters, digits, '-', '_' or '.'",
            field_path=".nodeSelector",
        ),
    )

    engine_image: str = Field(
        default="vllm/vllm-openai:v0.32.0",
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="The vLLM engine image (upstream vllm/vllm-openai).",
    )
    image: str = Field(
        default="ghcr.io/ponder-dev/ponder:0.1.0",
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
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
    node_selector: (
        dict[str, Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]]
        | None
    ) = Field(
        default=None,
        max_length=MAX_NODE_SELECTOR_ENTRIES,
        description="Node labels a worker pod requires, e.g. a GPU product.",
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
    metrics_namespace_selector: NamespaceSelector | None = Field(
        default=None,
        description="Namespaces whose pods may also reach the worker loop's health and metrics "
        "port (the NetworkPolicy the operator renders), e.g. Prometheus' for the chart's "
        "PodMonitor. Absent: only pods of the service's own namespace. {}: pods of every "
        "namespace. The engine's port stays closed either way.",
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


class NamespaceSelector(_Spec):
    """Namespaces chosen by their labels (a LabelSelector with matchLabels only)."""

    model_config = validations(
        cel(
            f"!has(self.matchLabels) || self.matchLabels.all(key, {_label_key_rule('key')})",
            "spec.scheduler.clientNamespaceSelector.matchLabels keys must be label keys: an "
            "optional DNS-subdomain prefix and '/', then up to 63 letters, digits, '-', '_' or '.'",
            field_path=".matchLabels",
        ),
    )

    match_labels: (
        dict[str, Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]]
        | None
    ) = Field(
        default=None,
        max_length=MAX_NODE_SELECTOR_ENTRIES,
        description="Labels a namespace must all carry, e.g. kubernetes.io/metadata.name: "
        "team-a. Absent or empty: every namespace.",
    )


class SchedulerSpec(_Spec):
    """The OpenAI-compatible front: plans queries, fans out branches, aggregates."""

    replicas: int = Field(default=1, ge=1, le=100, description="Scheduler pods.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Ponder image. Absent: spec.workers.image.",
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
    client_namespace_selector: NamespaceSelector | None = Field(
        default=None,
        description="Namespaces whose pods may reach the scheduler's API port (the "
        "NetworkPolicy the operator renders). Absent: any client, in the cluster or outside "
        "it (a LoadBalancer or NodePort Service). {}: pods of every namespace, and no client "
        "outside the cluster.",
    )


class VerifierSpec(_Spec):
    """What scores branches for best-of-n, weighted votes, beam search and refine."""

    model_config = validations(
        cel(
            "!(self.type in ['HTTP', 'RewardModel', 'ProcessRewardModel']) || has(self.url)",
            "spec.strategy.verifier.url is required when the verifier type is HTTP, RewardModel "
            "or ProcessRewardModel",
            field_path=".url",
        ),
        cel(
            _url_with_host_rule("url"),
            "spec.strategy.verifier.url must be an http(s) URL with a host, e.g. "
            "http://verifier.default:8000",
            field_path=".url",
        ),
    )

    type: VerifierType = Field(default=VerifierType.NONE, description="The kind of verifier.")
    url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        max_length=1024,
        description="Base URL of an HTTP verifier or of the vLLM serving the reward model.",
    )
    model: str | None = Field(
        default=None,
        max_length=253,
        description="Served name of the reward model (types RewardModel, ProcessRewardModel).",
    )
    timeout_seconds: int = Field(default=5, ge=1, le=300, description="Per-call timeout.")
    accept_score_percent: int = Field(
        default=99,
        ge=1,
        le=100,
        description="A score at or above this percentage counts as verified (adaptive "
        "stopping, the vote among verified branches, refine's pass); set it from a learned "
        "verifier's calibration.",
    )


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


class DeepConfSpec(_Spec):
    """DeepConf (confidence without a verifier): a branch's confidence is its lowest group
    confidence, the mean token confidence over a sliding window of `windowTokens`. Offline:
    `branches` at once, the `keepPercent` most confident vote, weighted by confidence. Online:
    a first wave of `branches` sets the threshold (what its `keepPercent` most confident
    reach); each later branch is stopped as soon as a window falls below it, and waves of
    `branches` follow up to `maxBranches` until the vote's leader holds `consensusPercent` of
    the weight. Requests choose the mode with `ponder.deep_conf_mode`."""

    mode: DeepConfModeType = Field(
        default=DeepConfModeType.ONLINE, description="Offline or Online."
    )
    token_confidence: TokenConfidenceType = Field(
        default=TokenConfidenceType.SAMPLED_TOKEN,
        description="SampledToken: the sampled token's probability (a group scores the geometric "
        "mean); TopK: DeepConf's, minus the mean logprob of the topK likeliest tokens.",
    )
    top_k: int = Field(default=5, ge=2, le=20, description="Tokens TopK averages.")
    window_tokens: int = Field(default=4, ge=1, le=4096, description="Tokens per group.")
    keep_percent: int = Field(
        default=10, ge=1, le=100, description="Share of the most confident branches that vote."
    )
    consensus_percent: int = Field(
        default=95, ge=1, le=100, description="Online: stop once the leader holds this weight."
    )


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
        cel(
            f"!('{StrategyName.BEAM_SEARCH.crd_value}' in self.allowed) || "
            "self.beam.width * self.beam.expansions <= self.maxBranches",
            "spec.strategy.beam.width x spec.strategy.beam.expansions must not exceed "
            "spec.strategy.maxBranches while BeamSearch is allowed",
            field_path=".beam",
        ),
        cel(
            f"!has(self.stoppingRule) || self.stoppingRule != '{StoppingRuleType.VERIFIER}' || "
            f"self.verifier.type != '{VerifierType.NONE}'",
            "spec.strategy.stoppingRule Verifier needs a verifier: set spec.strategy.verifier",
            field_path=".stoppingRule",
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
    give_up_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="An adaptive strategy (AdaptiveConsistency, DeepConf online) that has not "
        "settled once this share of its branch cap or token budget is spent answers with its "
        "best so far and says so (ponder.gave_up); 100: it runs to the cap.",
    )
    stopping_rule: StoppingRuleType | None = Field(
        default=None,
        description=(
            "When AdaptiveConsistency stops, judged after each wave: Beta (the vote's leader is "
            "the true majority with probability confidencePercent, Adaptive-Consistency), "
            "Window (every answer of the last wave is the same, ESC), Confidence (the leader "
            "of the vote weighted by deepConf's branch confidence holds "
            "deepConf.consensusPercent of the weight), Verifier (a branch scores "
            "verifier.acceptScorePercent or more). Absent: Verifier with a verifier, else "
            "Beta. Requests choose with ponder.stopping_rule."
        ),
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
    deep_conf: DeepConfSpec = Field(default_factory=DeepConfSpec)
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
        default=95,
        ge=1,
        le=100,
        description="Share of queries that should meet the target. The Builtin autoscaler "
        "runs the workers a queueing estimate (Erlang C over worker slots, from the schedulers' "
        "branch arrivals and branch times) says keep this share of branches from waiting past "
        "the target, sized tighter while the schedulers' attainment over their last minute is "
        "below it; 100 is sized as 99.9.",
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
    load_adaptation: LoadAdaptationType = Field(
        default=LoadAdaptationType.SHRINK,
        description="How the planner fits a query's branches to the load the scheduler "
        "observes. Static: as the request asks, whatever the load (the budget and "
        "spec.strategy.maxBranches still bound it). Shrink: fewer branches (and waves, beam "
        "steps) when the branches outstanding would push them past the deadline. ShrinkAndGrow: "
        "that, and a query that leaves ponder.branches to the service gets more branches, up "
        "to its max_branches and what its budget pays for, while the pool has idle slots and "
        "they fit the deadline (self-consistency, best-of-n, weighted-vote; not Sheddable "
        "queries).",
    )


class ScaleToZeroSpec(_Spec):
    """Remove every worker after a quiet period (needs spec.workers.minReplicas 0); the first
    query then waits for a cold start."""

    enabled: bool = Field(default=False, description="Scale to zero when idle.")
    idle_seconds: int = Field(
        default=600, ge=30, le=86_400, description="No queued or running branch for this long."
    )
    hold_seconds: int = Field(
        default=600,
        ge=0,
        le=3600,
        description="How much longer than its deadline a query that finds no worker taking "
        "jobs may wait for one: its jobs stay queued in JetStream while the autoscaler starts "
        "a worker (or KEDA does, in External mode), and it is answered once one runs them. At "
        "least a worker pod's start (for GPU pods, minutes); 0: no hold, the query ends at its "
        "deadline. Applies while the pool may be at zero (minReplicas 0).",
    )


class AutoscalingSpec(_Spec):
    """How the worker count follows demand: queued branches, slots, p95 latency, SLO attainment."""

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
            "Builtin: the operator scales workers on queue depth, latency and SLO attainment. "
            "External: it follows spec.workers.replicas (the scale subresource), for an HPA or "
            "KEDA."
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
        description="When p95 latency reaches this share of the SLO target, the queueing "
        "estimate sizes the pool for this share of the target instead (one more worker while "
        "the schedulers have reported no branch times yet).",
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

    model_config = validations(
        cel(
            _url_with_host_rule("url"),
            "spec.nats.url must be a URL with a host, e.g. nats://nats.ponder-system:4222",
            field_path=".url",
        ),
    )

    url: str | None = Field(
        default=None,
        pattern=r"^(nats|tls|ws|wss)://\S+$",
        max_length=1024,
        description="NATS URL for this service. Absent: the operator's --nats-url.",
    )


class AuthSpec(_Spec):
    """Who may query the service. With ApiKeys, a Secret in the service's namespace holds a
    YAML document of keys, each with a tenant, the services it may use and its limits (README,
    "API keys"); editing the Secret rotates keys without a restart."""

    model_config = validations(
        cel(
            "(self.type == 'ApiKeys') == has(self.secretName)",
            "spec.auth.secretName is required by type ApiKeys and allowed with it alone",
            field_path=".secretName",
        ),
    )

    type: AuthType = Field(
        default=AuthType.NONE,
        description="ApiKeys: every request needs a key from the Secret. None: anyone who "
        "can reach the scheduler's Service can query it (the Authenticated condition says so).",
    )
    secret_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
        description="The Secret holding the keys document (ApiKeys).",
    )
    secret_key: str = Field(
        default="keys.yaml",
        pattern=r"^[-._a-zA-Z0-9]+$",
        max_length=253,
        description="The Secret's data key that holds the document.",
    )


class TracingSpec(_Spec):
    """OpenTelemetry traces of the service's queries: a span per query and per wave (the
    scheduler), per branch job and per vLLM request (the worker loop), and vLLM's own, one
    trace per query, exported over OTLP/HTTP. Off unless `endpoint` is set."""

    model_config = validations(
        cel(
            _url_with_host_rule("endpoint"),
            "spec.tracing.endpoint must be a URL with a host, e.g. "
            "http://otel-collector.observability:4318",
            field_path=".endpoint",
        ),
    )

    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        max_length=1024,
        description="The OTLP/HTTP collector's base URL (spans go to its /v1/traces), e.g. "
        "http://otel-collector.observability:4318. Absent: no traces.",
    )
    sample_percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Percent of the queries that arrive without a trace of their own to "
        "trace; a client's traceparent is followed as it says (parent-based sampling).",
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
        cel(
            "!self.autoscaling.scaleToZero.enabled || self.workers.minReplicas == 0",
            "spec.workers.minReplicas must be 0 when spec.autoscaling.scaleToZero is enabled",
            field_path=".workers.minReplicas",
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
    auth: AuthSpec = Field(default_factory=AuthSpec)
    tracing: TracingSpec = Field(default_factory=TracingSpec)


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
        default=None,
        description="Branches queued or running: the schedulers' count, never fewer than the "
        "stream's pending and running jobs.",
    )
    p95_latency_milliseconds: int | None = Field(
        default=None, description="95th percentile query latency the schedulers report."
    )
    slo_attainment_percent: int | None = Field(
        default=None, description="Share of recent queries that met the latency target."
    )
    tokens_per_query: int | None = Field(
        default=None,
        description="Mean tokens (prompt and completion, every branch) of the queries the "
        "schedulers answered in the last minute.",
    )
    early_stop_percent: int | None = Field(
        default=None,
        description="Share of those queries whose strategy answered before its branch cap had "
        "completed (an adaptive query certain early).",
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
