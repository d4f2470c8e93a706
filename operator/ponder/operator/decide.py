"""The decisions of one reconcile pass (pure): what observe saw in; children, workers, status out.

    read_service    the object kopf hands over in the operator's model, or why its spec is
                    refused (`RefusedService`: nothing is applied for it)
    refused_status  the status of a refused service: why, and what its children still do
    decide          the worker count: held between decisions, or the autoscaler's on the timer
                    (Builtin mode, backlog readable); the autoscaler memory to keep; every child
                    manifest, in apply order, with whether observe saw it
    status_of       the status subresource from what the children show after the apply
    status_change   the merge patch to send, or None when status would not change

No clock, no client: the caller passes the snapshot and the time, so a table of snapshots is a
table of reconciles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ponder.api.crd import (
    AuthType,
    AutoscalingMode,
    NatsSpec,
    ObjectMeta,
    ReasoningService,
    ReasoningServiceSpec,
    ReasoningServiceStatus,
)
from ponder.api.service_config import ServiceConfig
from ponder.operator import policy, render
from ponder.operator.policy import AutoscalerState, Decision, PolicyConfig, Signals
from ponder.operator.service_config import served_model_name
from ponder.operator.snapshot import Backlog, Snapshot, StatsSummary
from ponder.operator.status import (
    DeploymentState,
    Observation,
    UnschedulablePod,
    compute_status,
    invalid_spec_status,
    spec_problems,
    status_patch,
)


@dataclass(frozen=True)
class DesiredChild:
    """One child to apply."""

    manifest: render.Manifest
    existed: bool | None
    """Whether observe saw it; None when it was not looked up (only Deployments are)."""


@dataclass(frozen=True)
class Plan:
    """What one pass wants: the worker count, the autoscaler's verdict, every child."""

    worker_replicas: int
    decision: Decision | None
    """The autoscaler's decision; None when it did not run this pass."""
    autoscaler: AutoscalerState
    """The autoscaler memory to keep for the next tick."""
    children: tuple[DesiredChild, ...]


@dataclass(frozen=True)
class Children:
    """The Deployments after the apply: as the API server returned them, else as observed."""

    workers: DeploymentState
    scheduler: DeploymentState
    apply_errors: tuple[str, ...] = ()
    """Children the API server refused: `Kind/name: its message`."""


@dataclass(frozen=True)
class RefusedService:
    """A ReasoningService whose spec the operator's model refuses, with what a pass needs to
    say so in its status and to finalize it."""

    metadata: ObjectMeta
    status: ReasoningServiceStatus | None
    nats: NatsSpec
    """The spec's NATS settings (the finalizer deletes the stream, if one was made)."""
    problems: str
    """What is wrong, field by field (`spec.strategy.answerPattern: ...`)."""


def read_service(body: Mapping[str, Any]) -> ReasoningService | RefusedService:
    """The object `body` (plain dicts) in the operator's model, or why its spec is refused.

    The API server checked the spec against the CRD's schema and CEL rules; what those cannot
    check (a Python regex that does not compile) or an operator newer than the installed CRD
    may still refuse it, and that is the user's to fix, so it is reported rather than raised. A
    status that does not read (the operator's own, from another version) counts as none: the
    pass rewrites it. Metadata that does not read is the API server's fault and raises.
    """
    metadata = ObjectMeta.model_validate(body.get("metadata") or {})
    status = None
    if body.get("status"):
        with contextlib.suppress(ValidationError):
            status = ReasoningServiceStatus.model_validate(body["status"])
    spec = body.get("spec") or {}
    try:
        valid_spec = ReasoningServiceSpec.model_validate(spec)
    except ValidationError as error:
        try:
            nats = NatsSpec.model_validate(spec.get("nats") or {})
        except ValidationError:
            nats = NatsSpec()
        return RefusedService(metadata, status, nats, spec_problems(error))
    return ReasoningService(metadata=metadata, spec=valid_spec, status=status)


def refused_by_config(service: ReasoningService, error: ValidationError) -> RefusedService:
    """`service` refused because the ServiceConfig its spec translates to does not validate
    (the CRD model let through what the data plane's model refuses)."""
    problems = f"its ServiceConfig is invalid: {spec_problems(error, root='')}"
    return RefusedService(service.metadata, service.status, service.spec.nats, problems)


def refused_status(
    refused: RefusedService,
    workers: Mapping[str, Any] | None,
    scheduler: Mapping[str, Any] | None,
    now: datetime,
) -> ReasoningServiceStatus:
    """The status that reports `refused`, from its Deployments as they are (None: absent)."""
    return invalid_spec_status(
        refused.status,
        refused.metadata.generation,
        refused.problems,
        DeploymentState.from_manifest(workers),
        DeploymentState.from_manifest(scheduler),
        rfc3339(now),
    )


def rfc3339(moment: datetime) -> str:
    """`moment` in UTC as Kubernetes writes timestamps, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(service: ReasoningService) -> render.Owner:
    """The owner reference every child of `service` carries."""
    meta = service.metadata
    return render.Owner(namespace=meta.namespace, name=meta.name, uid=meta.uid)


def signals_of(snapshot: Snapshot, current_replicas: int) -> Signals:
    """The policy's input from the snapshot; `current_replicas` is the count held so far."""
    return signals_from(snapshot.at, current_replicas, snapshot.backlog, snapshot.stats)


def signals_from(
    at: float, current_replicas: int, backlog: Backlog | None, stats: StatsSummary | None
) -> Signals:
    """The policy's input from the stream's backlog and the schedulers' combined stats (either
    None when unread): what `signals_of` reads from a snapshot, and a simulation from its own."""
    return Signals(
        at=at,
        current_replicas=current_replicas,
        pending_jobs=backlog.pending_jobs if backlog else 0,
        ack_pending_jobs=backlog.ack_pending_jobs if backlog else 0,
        scheduler_branches=stats.branches_outstanding if stats else None,
        expected_branch_tokens=stats.expected_branch_tokens if stats else None,
        p95_latency_ms=stats.p95_latency_ms if stats else None,
        queries_in_flight=stats.queries_in_flight if stats else 0,
        slo_attainment_percent=stats.slo_attainment_percent if stats else None,
        branches_per_second=stats.branches_per_second if stats else None,
        branch_seconds=stats.branch_seconds if stats else None,
    )


def decide(snapshot: Snapshot, config: ServiceConfig, *, autoscale: bool) -> Plan:
    """The plan of one pass. `autoscale` (the timer) lets the policy move the worker count;
    otherwise the count is held, so a spec change never fights the autoscaler."""
    spec, previous = snapshot.service.spec, snapshot.service.status
    current = DeploymentState.from_manifest(snapshot.workers)
    replicas = policy.held_replicas(
        spec,
        snapshot.remembered_workers,
        previous.desired_replicas if previous else None,
        current.spec_replicas if current.exists else None,
    )
    decision: Decision | None = None
    # Without a backlog (NATS down, stream missing) the replicas are held rather than guessed.
    if (
        autoscale
        and snapshot.backlog is not None
        and spec.autoscaling.mode == AutoscalingMode.BUILTIN
    ):
        decision = policy.decide(
            PolicyConfig.from_spec(spec), signals_of(snapshot, replicas), snapshot.autoscaler
        )
        replicas = decision.replicas

    owner = owner_of(snapshot.service)
    names = render.ChildNames(owner.name)
    # Only the Deployments are read before the apply; whether they existed decides the log line.
    seen = {
        names.workers: snapshot.workers is not None,
        names.scheduler: snapshot.scheduler is not None,
    }
    children = []
    rendered = render.render_children_of_config(
        owner, spec, replicas, config, snapshot.nats_credentials, snapshot.nats_ca
    )
    for manifest in rendered:
        name = manifest["metadata"]["name"]
        existed = seen.get(name) if manifest["kind"] == "Deployment" else None
        children.append(DesiredChild(manifest=manifest, existed=existed))
    return Plan(
        worker_replicas=replicas,
        decision=decision,
        autoscaler=decision.state if decision else snapshot.autoscaler,
        children=tuple(children),
    )


def children_after(
    snapshot: Snapshot,
    applied_workers: Mapping[str, Any] | None,
    applied_scheduler: Mapping[str, Any] | None,
    apply_errors: tuple[str, ...] = (),
) -> Children:
    """The Deployments' state after the apply; a skipped or refused apply (None) leaves what
    observe saw."""
    return Children(
        workers=DeploymentState.from_manifest(applied_workers or snapshot.workers),
        scheduler=DeploymentState.from_manifest(applied_scheduler or snapshot.scheduler),
        apply_errors=apply_errors,
    )


def workers_short(plan: Plan, children: Children) -> bool:
    """Whether the worker pool exists with fewer ready pods than the plan wants: then its
    Pending pods may say why (no GPU capacity), and status should show them."""
    workers = children.workers
    return workers.exists and workers.ready_replicas < plan.worker_replicas


def queue_depth_branches(snapshot: Snapshot) -> int | None:
    """Branches queued or running: the schedulers' count when they report (a job carries
    several), never fewer than the stream's jobs; None when neither could be read."""
    backlog, stats = snapshot.backlog, snapshot.stats
    if backlog is None and stats is None:
        return None
    jobs = backlog.total if backlog else 0
    return max(jobs, stats.branches_outstanding if stats else 0)


def status_of(
    snapshot: Snapshot,
    plan: Plan,
    children: Children,
    unschedulable_workers: tuple[UnschedulablePod, ...],
    now: datetime,
) -> ReasoningServiceStatus:
    """The whole status to report for this pass; lastScaleTime moves only when the autoscaler
    changed the worker count."""
    service = snapshot.service
    meta, spec, previous = service.metadata, service.spec, service.status
    stats = snapshot.stats
    last_scale = previous.last_scale_time if previous else None
    if plan.decision is not None and plan.decision.changed:
        last_scale = rfc3339(now)
    observation = Observation(
        generation=meta.generation,
        desired_workers=plan.worker_replicas,
        scheduler_replicas=spec.scheduler.replicas,
        workers=children.workers,
        scheduler=children.scheduler,
        unschedulable_workers=unschedulable_workers,
        stream_error=snapshot.stream_error,
        nats_unreachable=snapshot.nats_unreachable,
        apply_errors=children.apply_errors,
        nats_credentials_error=snapshot.nats_credentials_error,
        queue_depth=queue_depth_branches(snapshot),
        p95_latency_ms=stats.p95_latency_ms if stats else None,
        slo_attainment_percent=stats.slo_attainment_percent if stats else None,
        tokens_per_query=stats.tokens_per_query if stats else None,
        early_stop_percent=stats.early_stop_percent if stats else None,
        selector=render.worker_selector(meta.name),
        endpoint=render.endpoint_url(owner_of(service)),
        served_model=served_model_name(spec),
        last_scale_time=last_scale,
        keys_secret=spec.auth.secret_name if spec.auth.type is AuthType.API_KEYS else None,
    )
    return compute_status(observation, previous, rfc3339(now))


def status_change(
    previous: ReasoningServiceStatus | None, status: ReasoningServiceStatus
) -> dict[str, Any] | None:
    """The merge patch that writes `status`, or None when the status already says it all."""
    patch = status_patch(status)
    if previous is not None and status_patch(previous) == patch:
        return None
    return patch
