"""Status of a ReasoningService from what its children show (pure; Kubernetes API conventions).

Conditions:
    Ready        True while the service can answer: a scheduler and a worker are ready (or the
                 pool is scaled to zero and the first query will start one).
    Progressing  True while the children are not yet what the spec and the autoscaler want.
    Degraded     True when something needs a human: worker pods that cannot be scheduled
                 (InsufficientGPUCapacity when it is the GPUs), the job stream unavailable, a
                 spec the operator's model refuses (InvalidSpec).
    Authenticated  False (AuthDisabled) while spec.auth.type is None: anyone who can reach
                 the scheduler's Service can query it; True (ApiKeys) with keys.
A condition's lastTransitionTime changes only when its status does.

A spec the operator refuses (`invalid_spec_status`) leaves the children as they are: Degraded
and Progressing say why, with reason InvalidSpec, and Ready still says what the children do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ponder.api.crd import GPU_RESOURCE, Condition, ConditionStatus, ReasoningServiceStatus

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
AUTHENTICATED = "Authenticated"
INVALID_SPEC = "InvalidSpec"
"""The reason of the conditions a refused spec sets."""
NATS_CREDENTIALS_FAILED = "NatsCredentialsFailed"
"""Degraded's reason when the API server refused the service's NATS credentials Secret."""
MAX_LISTED_PROBLEMS = 5
"""A spec refused for more reasons names the first few and counts the rest."""


@dataclass(frozen=True)
class DeploymentState:
    """What the operator reads from one child Deployment."""

    exists: bool = False
    spec_replicas: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    generation: int = 0
    observed_generation: int = 0

    @classmethod
    def from_manifest(cls, deployment: Mapping[str, Any] | None) -> DeploymentState:
        """From a Deployment as the API returns it (None when it does not exist)."""
        if deployment is None:
            return cls()
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        metadata = deployment.get("metadata") or {}
        return cls(
            exists=True,
            spec_replicas=int(spec.get("replicas", 1)),
            replicas=int(status.get("replicas", 0)),
            ready_replicas=int(status.get("readyReplicas", 0)),
            updated_replicas=int(status.get("updatedReplicas", 0)),
            generation=int(metadata.get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
        )

    @property
    def rolled_out(self) -> bool:
        """The Deployment controller saw the latest spec and every pod runs it and is ready."""
        return (
            self.exists
            and self.observed_generation >= self.generation
            and self.updated_replicas == self.spec_replicas
            and self.replicas == self.spec_replicas
            and self.ready_replicas == self.spec_replicas
        )


@dataclass(frozen=True)
class UnschedulablePod:
    """A pod the scheduler could not place, with its explanation."""

    name: str
    message: str

    @property
    def lacks_gpus(self) -> bool:
        return f"Insufficient {GPU_RESOURCE}" in self.message

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> UnschedulablePod | None:
        """The pod's PodScheduled=False/Unschedulable condition, if it is Pending on one."""
        status = pod.get("status") or {}
        if status.get("phase") != "Pending":
            return None
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                name = (pod.get("metadata") or {}).get("name", "")
                return cls(name=name, message=condition.get("message", ""))
        return None


@dataclass(frozen=True)
class Observation:
    """Everything status is computed from, read in one reconcile."""

    generation: int
    desired_workers: int
    scheduler_replicas: int
    workers: DeploymentState
    scheduler: DeploymentState
    unschedulable_workers: tuple[UnschedulablePod, ...] = ()
    stream_error: str | None = None
    nats_unreachable: bool = False
    apply_errors: tuple[str, ...] = ()
    """Children the API server refused this pass: `Kind/name: its message`."""
    nats_credentials_error: str | None = None
    """Why the API server refused the service's NATS credentials Secret this pass."""
    queue_depth: int | None = None
    p95_latency_ms: int | None = None
    slo_attainment_percent: int | None = None
    tokens_per_query: int | None = None
    early_stop_percent: int | None = None
    selector: str | None = None
    endpoint: str | None = None
    served_model: str | None = None
    last_scale_time: str | None = None
    keys_secret: str | None = None
    """The Secret of the service's API keys; None: the service is open to anyone."""


def _condition(
    kind: str, status: bool, reason: str, message: str, generation: int, now: str
) -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE if status else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def _ready(observation: Observation, now: str) -> Condition:
    workers, scheduler = observation.workers, observation.scheduler
    counts = (
        f"{workers.ready_replicas}/{observation.desired_workers} workers and "
        f"{scheduler.ready_replicas}/{observation.scheduler_replicas} schedulers ready"
    )
    generation = observation.generation
    if not workers.exists or not scheduler.exists:
        return _condition(READY, False, "Creating", "creating the children", generation, now)
    if scheduler.ready_replicas < 1:
        return _condition(READY, False, "SchedulerUnavailable", counts, generation, now)
    if observation.desired_workers == 0:
        message = "no workers while idle; the first query starts one"
        return _condition(READY, True, "ScaledToZero", message, generation, now)
    if workers.ready_replicas < 1:
        if any(pod.lacks_gpus for pod in observation.unschedulable_workers):
            reason = "InsufficientGPUCapacity"
        else:
            reason = "WorkersUnavailable"
        return _condition(READY, False, reason, counts, generation, now)
    return _condition(READY, True, "Available", counts, generation, now)


def _progressing(observation: Observation, now: str) -> Condition:
    workers, scheduler = observation.workers, observation.scheduler
    generation = observation.generation
    if not workers.exists or not scheduler.exists:
        return _condition(PROGRESSING, True, "Creating", "creating the children", generation, now)
    if workers.spec_replicas != observation.desired_workers or not workers.rolled_out:
        message = (
            f"{workers.ready_replicas} of {observation.desired_workers} workers ready, "
            f"{workers.updated_replicas} updated"
        )
        rolling = (
            workers.observed_generation < workers.generation
            or workers.updated_replicas < workers.replicas
        )
        reason = "RollingOut" if rolling else "ScalingWorkers"
        return _condition(PROGRESSING, True, reason, message, generation, now)
    if not scheduler.rolled_out:
        message = f"{scheduler.ready_replicas} of {observation.scheduler_replicas} schedulers ready"
        return _condition(PROGRESSING, True, "RollingOut", message, generation, now)
    return _condition(
        PROGRESSING, False, "RolloutComplete", "every child is up to date", generation, now
    )


def _degraded(observation: Observation, now: str) -> Condition:
    generation = observation.generation
    if observation.apply_errors:
        first, *rest = observation.apply_errors
        more = f" (and {len(rest)} more)" if rest else ""
        message = f"the API server refused {first}{more}"
        return _condition(DEGRADED, True, "ApplyFailed", message, generation, now)
    if observation.nats_credentials_error:
        # The pods wait for the Secret they mount; the next pass tries again.
        message = f"cannot write the NATS credentials: {observation.nats_credentials_error}"
        return _condition(DEGRADED, True, NATS_CREDENTIALS_FAILED, message, generation, now)
    pending = observation.unschedulable_workers
    lacking_gpus = [pod for pod in pending if pod.lacks_gpus]
    if lacking_gpus:
        message = (
            f"{len(lacking_gpus)} of {observation.desired_workers} worker pods are Pending: "
            f"not enough {GPU_RESOURCE} capacity ({lacking_gpus[0].message})"
        )
        return _condition(DEGRADED, True, "InsufficientGPUCapacity", message, generation, now)
    if pending:
        message = f"{len(pending)} worker pods are Pending: {pending[0].message}"
        return _condition(DEGRADED, True, "WorkersUnschedulable", message, generation, now)
    if observation.stream_error:
        message = f"the JetStream job stream is unavailable: {observation.stream_error}"
        # Unreachable: check spec.nats.url, and that a NetworkPolicy lets the operator out.
        reason = "NatsUnreachable" if observation.nats_unreachable else "StreamUnavailable"
        return _condition(DEGRADED, True, reason, message, generation, now)
    return _condition(DEGRADED, False, "AsExpected", "nothing needs attention", generation, now)


def _authenticated(observation: Observation, now: str) -> Condition:
    generation = observation.generation
    if observation.keys_secret is None:
        message = (
            "spec.auth.type is None: anyone who can reach the scheduler's Service can query it "
            "and spend its GPUs"
        )
        return _condition(AUTHENTICATED, False, "AuthDisabled", message, generation, now)
    message = f"requests need an API key from Secret {observation.keys_secret}"
    return _condition(AUTHENTICATED, True, "ApiKeys", message, generation, now)


def degraded_warning(
    previous: ReasoningServiceStatus | None, current: ReasoningServiceStatus
) -> tuple[str, str] | None:
    """(reason, message) of a Warning Event when `current` became Degraded, or Degraded for
    another reason than `previous`; None otherwise (once per transition, not every tick). A
    refused spec (reason InvalidSpec) is reported by its own Event."""
    now = _find(current.conditions, DEGRADED)
    if now is None or now.status != ConditionStatus.TRUE or now.reason == INVALID_SPEC:
        return None
    before = _find(previous.conditions if previous else [], DEGRADED)
    if before is not None and before.status == now.status and before.reason == now.reason:
        return None
    return now.reason, now.message


def _find(conditions: Sequence[Condition], kind: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == kind), None)


def merge_conditions(
    previous: Sequence[Condition], current: Sequence[Condition]
) -> list[Condition]:
    """`current`, keeping each condition's lastTransitionTime when its status did not change."""
    before = {condition.type: condition for condition in previous}
    merged = []
    for condition in current:
        old = before.get(condition.type)
        if old is not None and old.status == condition.status:
            condition = condition.model_copy(
                update={"last_transition_time": old.last_transition_time}
            )
        merged.append(condition)
    return merged


def compute_status(
    observation: Observation, previous: ReasoningServiceStatus | None, now: str
) -> ReasoningServiceStatus:
    """The whole status subresource for this observation; `now` is an RFC 3339 timestamp."""
    conditions = [
        _ready(observation, now),
        _progressing(observation, now),
        _degraded(observation, now),
        _authenticated(observation, now),
    ]
    previous_conditions = previous.conditions if previous else []
    workers = observation.workers
    return ReasoningServiceStatus(
        observed_generation=observation.generation,
        conditions=merge_conditions(previous_conditions, conditions),
        replicas=workers.replicas,
        ready_replicas=workers.ready_replicas,
        desired_replicas=observation.desired_workers,
        ready=f"{workers.ready_replicas}/{observation.desired_workers}",
        selector=observation.selector,
        queue_depth=observation.queue_depth,
        p95_latency_milliseconds=observation.p95_latency_ms,
        slo_attainment_percent=observation.slo_attainment_percent,
        tokens_per_query=observation.tokens_per_query,
        early_stop_percent=observation.early_stop_percent,
        endpoint=observation.endpoint,
        served_model=observation.served_model,
        last_scale_time=observation.last_scale_time,
    )


def _field_path(root: str, location: tuple[int | str, ...]) -> str:
    path = root
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


def _problem(error: ErrorDetails, root: str) -> str:
    path = _field_path(root, error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    # A validator's own words, without pydantic's "Value error, " in front of them.
    reason = str(cause) if error["type"] == "value_error" and cause is not None else error["msg"]
    if not path:
        return reason
    # A validator that names its field itself ("spec.strategy.answerPattern: ...") is not
    # prefixed with it twice.
    return f"{path}: {reason.removeprefix(f'{path}: ')}"


def spec_problems(error: ValidationError, root: str = "spec") -> str:
    """What `error` refuses, one `field.path: reason` per problem joined by "; ", in the
    validated object's own field names under `root` (e.g. `spec.strategy.answerPattern: ...`);
    past MAX_LISTED_PROBLEMS, how many more there are."""
    problems = [_problem(detail, root) for detail in error.errors(include_url=False)]
    listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    hidden = len(problems) - MAX_LISTED_PROBLEMS
    return f"{listed}; and {hidden} more" if hidden > 0 else listed


def invalid_spec_status(
    previous: ReasoningServiceStatus | None,
    generation: int,
    problems: str,
    workers: DeploymentState,
    scheduler: DeploymentState,
    now: str,
) -> ReasoningServiceStatus:
    """The status of a service whose spec (at `generation`) the operator refuses for `problems`.

    Nothing is applied for such a spec, so the children still run the last one that was valid:
    Degraded=True and Progressing=False (reason InvalidSpec) say why, while Ready and the
    replica counts come from the children as they are (Ready=False, InvalidSpec, when there are
    none). The other fields stay as the last valid pass left them.
    """
    if workers.exists and scheduler.exists:
        running = Observation(
            generation=generation,
            desired_workers=workers.spec_replicas,
            scheduler_replicas=scheduler.spec_replicas,
            workers=workers,
            scheduler=scheduler,
        )
        ready = _ready(running, now)
    else:
        message = "nothing was created: the spec is invalid (see Degraded)"
        ready = _condition(READY, False, INVALID_SPEC, message, generation, now)
    conditions = [
        ready,
        _condition(
            PROGRESSING,
            False,
            INVALID_SPEC,
            "waiting for a valid spec; the children are left as they are",
            generation,
            now,
        ),
        _condition(
            DEGRADED,
            True,
            INVALID_SPEC,
            f"the operator refuses the spec and applies nothing until it changes: {problems}",
            generation,
            now,
        ),
    ]
    base = previous or ReasoningServiceStatus()
    desired = workers.spec_replicas if workers.exists else 0
    return base.model_copy(
        update={
            "observed_generation": generation,
            "conditions": merge_conditions(base.conditions, conditions),
            "replicas": workers.replicas,
            "ready_replicas": workers.ready_replicas,
            "desired_replicas": desired,
            "ready": f"{workers.ready_replicas}/{desired}",
        }
    )


def status_patch(status: ReasoningServiceStatus) -> dict[str, Any]:
    """The status as a JSON merge patch body; a field that became unknown is sent as null,
    which removes it."""
    return status.model_dump(mode="json")
