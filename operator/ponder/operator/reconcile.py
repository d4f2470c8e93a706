"""One level-based reconcile of a ReasoningService, shared by create/update/resume and the timer.

    read     the worker and scheduler Deployments, the autoscaler's signals (timer only)
    decide   the worker count: the autoscaler (Builtin) or spec.workers.replicas (External)
    apply    every child with server-side apply, field manager `ponder-operator`, force
    ensure   the JetStream stream and the workers' consumer
    report   status computed from what the children show

Nothing here depends on what happened before: running it twice, or after a crash half-way,
converges on the same objects. The only memory (autoscaler history, what was last applied) is
an optimisation or a smoothing, and rebuilds itself after a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from ponder.api import crd
from ponder.api.crd import AutoscalingMode, ReasoningService, ReasoningServiceStatus
from ponder.api.jetstream import delete_stream, ensure_stream
from ponder.api.subjects import ServiceSubjects
from ponder.operator import render
from ponder.operator.policy import (
    AutoscalerState,
    Decision,
    PolicyConfig,
    Signals,
    decide,
    held_replicas,
)
from ponder.operator.runtime import FIELD_MANAGER, AppliedChild, Runtime
from ponder.operator.service_config import served_model_name, service_config_from_spec
from ponder.operator.signals import Backlog, ServiceKey, StatsSummary, read_backlog
from ponder.operator.status import (
    DeploymentState,
    Observation,
    UnschedulablePod,
    compute_status,
    status_patch,
)

Logger = logging.Logger | logging.LoggerAdapter[Any]

ReasoningServiceResource = create_namespaced_resource(crd.GROUP, crd.VERSION, crd.KIND, crd.PLURAL)

_KINDS: dict[str, Any] = {
    "ConfigMap": ConfigMap,
    "Deployment": Deployment,
    "Service": Service,
    "PodDisruptionBudget": PodDisruptionBudget,
}


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile did that a handler may report (as an Event)."""

    decision: Decision | None
    status: ReasoningServiceStatus


def plain(value: Any) -> Any:
    """A deep copy of kopf's mapping views as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


async def _get_deployment(runtime: Runtime, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        deployment = await runtime.kube.get(Deployment, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise
    return deployment.to_dict()


async def _apply(
    runtime: Runtime,
    service: ServiceKey,
    manifest: dict[str, Any],
    existed: bool | None,
    logger: Logger,
) -> dict[str, Any] | None:
    """Server-side apply one child unless it was applied unchanged within the resync period.

    Returns the object as the API server holds it after the apply, or None when skipped.
    `existed` is whether the child was seen before the apply (None: not looked up).
    """
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    key = (service, kind, name)
    digest = _digest(manifest)
    cached = runtime.applied.get(key)
    now = time.monotonic()
    if (
        cached is not None
        and cached.digest == digest
        and existed is not False
        and now - cached.applied_at < runtime.config.resync_seconds
    ):
        return None
    applied = await runtime.kube.patch(
        _KINDS[kind],
        name,
        manifest,
        namespace=service[0],
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=True,
    )
    result: dict[str, Any] = applied.to_dict()
    resource_version = str(result["metadata"].get("resourceVersion", ""))
    runtime.applied[key] = AppliedChild(digest, resource_version, now)
    if existed is False or (existed is None and cached is None and _just_created(result)):
        logger.info("Created %s %s/%s", kind, service[0], name)
    elif cached is None or cached.resource_version != resource_version:
        logger.info("Configured %s %s/%s", kind, service[0], name)
    return result


def _just_created(obj: Mapping[str, Any]) -> bool:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return False
    moment = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (datetime.now(UTC) - moment).total_seconds() < 5


async def _unschedulable_workers(
    runtime: Runtime, namespace: str, name: str
) -> tuple[UnschedulablePod, ...]:
    selector: dict[str, Any] = dict(render.selector_labels(name, "worker"))
    pods = runtime.kube.list(Pod, namespace=namespace, labels=selector)
    found = []
    async for pod in pods:
        pending = UnschedulablePod.from_pod(pod.to_dict())
        if pending is not None:
            found.append(pending)
    return tuple(found)


async def _ensure_stream(
    runtime: Runtime, owner: render.Owner, service: ReasoningService, nats_url: str
) -> str | None:
    """Create or update the stream and consumer (at most once per resync when unchanged).

    Returns None, or why the stream is unavailable; never raises for NATS trouble, so the
    Kubernetes side still converges while NATS is down.
    """
    spec = service.spec
    config = service_config_from_spec(owner.namespace, owner.name, spec, nats_url)
    wanted = _digest({"config": config.model_dump(mode="json"), "max": spec.workers.max_replicas})
    key = (owner.namespace, owner.name)
    cached = runtime.streams.get(key)
    now = time.monotonic()
    if cached and cached[0] == wanted and now - cached[1] < runtime.config.resync_seconds:
        return None
    try:
        js = await runtime.nats.jetstream(config.nats_url)
        subjects = ServiceSubjects(owner.namespace, owner.name)
        await ensure_stream(js, subjects, config, max(spec.workers.max_replicas, 1))
    except Exception as error:  # any NATS or network failure is reported in status
        runtime.streams.pop(key, None)
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    runtime.streams[key] = (wanted, now)
    return None


async def _read_signals(
    runtime: Runtime, service: ReasoningService, nats_url: str
) -> tuple[Backlog | None, StatsSummary | None]:
    key = (service.metadata.namespace, service.metadata.name)
    subjects = ServiceSubjects(*key)
    try:
        js = await runtime.nats.jetstream(nats_url)
        backlog = await read_backlog(js, subjects)
    except Exception:  # no backlog this tick: hold the replicas rather than guess
        logging.getLogger(__name__).warning("Could not read the backlog of %s/%s", *key)
        backlog = None
    return backlog, runtime.stats.summary(key)


def _autoscale(
    runtime: Runtime,
    service: ReasoningService,
    current: int,
    backlog: Backlog,
    stats: StatsSummary | None,
) -> Decision:
    key = (service.metadata.namespace, service.metadata.name)
    signals = Signals(
        at=time.time(),
        current_replicas=current,
        pending_jobs=backlog.pending_jobs,
        ack_pending_jobs=backlog.ack_pending_jobs,
        scheduler_branches=stats.branches_outstanding if stats else None,
        expected_branch_tokens=stats.expected_branch_tokens if stats else None,
        p95_latency_ms=stats.p95_latency_ms if stats else None,
        queries_in_flight=stats.queries_in_flight if stats else 0,
    )
    state = runtime.autoscalers.get(key) or AutoscalerState()
    decision = decide(PolicyConfig.from_spec(service.spec), signals, state)
    runtime.autoscalers[key] = decision.state
    return decision


async def reconcile(
    runtime: Runtime, body: Mapping[str, Any], *, autoscale: bool, logger: Logger
) -> ReconcileResult:
    """Bring the children of the ReasoningService `body` to its spec and report status.

    `autoscale` (the timer) also lets the policy move the worker count; every reconcile reads
    the signals for status.
    """
    service = ReasoningService.model_validate(plain(body))
    key: ServiceKey = (service.metadata.namespace, service.metadata.name)
    async with runtime.lock(key), runtime.reconcile_slots:
        return await _reconcile(runtime, service, autoscale=autoscale, logger=logger)


async def _reconcile(
    runtime: Runtime, service: ReasoningService, *, autoscale: bool, logger: Logger
) -> ReconcileResult:
    meta, spec = service.metadata, service.spec
    key: ServiceKey = (meta.namespace, meta.name)
    owner = render.Owner(namespace=meta.namespace, name=meta.name, uid=meta.uid)
    names = render.ChildNames(meta.name)
    nats_url = spec.nats.url or runtime.config.nats_url
    previous = service.status

    workers_before = await _get_deployment(runtime, meta.namespace, names.workers)
    scheduler_before = await _get_deployment(runtime, meta.namespace, names.scheduler)
    current = DeploymentState.from_manifest(workers_before)
    held = held_replicas(
        spec,
        runtime.desired_workers.get(key),
        previous.desired_replicas if previous else None,
        current.spec_replicas if current.exists else None,
    )

    # The stream first: workers and schedulers need it, and the backlog is read from it.
    stream_error = await _ensure_stream(runtime, owner, service, nats_url)
    backlog: Backlog | None = None
    stats: StatsSummary | None = None
    if stream_error is None:
        backlog, stats = await _read_signals(runtime, service, nats_url)
    decision: Decision | None = None
    if autoscale and backlog is not None and spec.autoscaling.mode == AutoscalingMode.BUILTIN:
        decision = _autoscale(runtime, service, held, backlog, stats)
        held = decision.replicas
    runtime.desired_workers[key] = held

    applied: dict[str, dict[str, Any] | None] = {}
    existed = {
        names.workers: workers_before is not None,
        names.scheduler: scheduler_before is not None,
    }
    for manifest in render.render_children(owner, spec, held, nats_url):
        name = manifest["metadata"]["name"]
        was_there = existed.get(name) if manifest["kind"] == "Deployment" else None
        applied[f"{manifest['kind']}/{name}"] = await _apply(
            runtime, key, manifest, was_there, logger
        )

    workers = DeploymentState.from_manifest(
        applied.get(f"Deployment/{names.workers}") or workers_before
    )
    scheduler = DeploymentState.from_manifest(
        applied.get(f"Deployment/{names.scheduler}") or scheduler_before
    )
    # Pods are listed on the timer only (a rollout sends many Deployment events); in between,
    # what the last tick found stands until every worker is ready.
    if not workers.exists or workers.ready_replicas >= held:
        runtime.unschedulable[key] = ()
    elif autoscale:
        runtime.unschedulable[key] = await _unschedulable_workers(
            runtime, meta.namespace, meta.name
        )
    unschedulable = runtime.unschedulable.get(key, ())

    queue_depth = backlog.total if backlog else None
    p95 = stats.p95_latency_ms if stats else None
    attainment = stats.slo_attainment_percent if stats else None
    now = datetime.now(UTC)
    last_scale = previous.last_scale_time if previous else None
    if decision is not None and decision.changed:
        last_scale = rfc3339(now)
    observation = Observation(
        generation=meta.generation,
        desired_workers=held,
        scheduler_replicas=spec.scheduler.replicas,
        workers=workers,
        scheduler=scheduler,
        unschedulable_workers=unschedulable,
        stream_error=stream_error,
        queue_depth=queue_depth,
        p95_latency_ms=p95,
        slo_attainment_percent=attainment,
        selector=render.worker_selector(meta.name),
        endpoint=render.endpoint_url(owner),
        served_model=served_model_name(spec),
        last_scale_time=last_scale,
    )
    status = compute_status(observation, previous, rfc3339(now))
    patch = status_patch(status)
    if previous is None or status_patch(previous) != patch:
        await runtime.kube.patch(
            ReasoningServiceResource.Status,
            meta.name,
            {"status": patch},
            namespace=meta.namespace,
            patch_type=PatchType.MERGE,
        )
    return ReconcileResult(decision=decision, status=status)


def owning_service(child: Mapping[str, Any]) -> str | None:
    """The name of the ReasoningService that controls `child`, if one does."""
    for owner in (child.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == crd.KIND and owner.get("apiVersion") == crd.API_VERSION:
            return str(owner["name"])
    return None


async def refresh(runtime: Runtime, namespace: str, name: str, logger: Logger) -> None:
    """Reconcile the ReasoningService `namespace/name` after one of its children changed, so
    status follows the children at once instead of at the next timer tick. A burst of changes
    while a refresh waits for its turn costs one reconcile, not one each."""
    key: ServiceKey = (namespace, name)
    if key in runtime.refresh_queued:
        return
    runtime.refresh_queued.add(key)
    try:
        async with runtime.lock(key):
            # From here on a new change needs a new refresh: this one may have read too early.
            runtime.refresh_queued.discard(key)
            try:
                current = await runtime.kube.get(
                    ReasoningServiceResource, name, namespace=namespace
                )
            except ApiError as error:
                if error.status.code == 404:
                    return
                raise
            body = current.to_dict()
            if body.get("metadata", {}).get("deletionTimestamp"):
                return
            service = ReasoningService.model_validate(body)
            async with runtime.reconcile_slots:
                await _reconcile(runtime, service, autoscale=False, logger=logger)
    finally:
        runtime.refresh_queued.discard(key)


async def finalize(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> None:
    """Delete the service's stream (its children go with their owner references)."""
    service = ReasoningService.model_validate(plain(body))
    meta = service.metadata
    nats_url = service.spec.nats.url or runtime.config.nats_url
    js = await runtime.nats.jetstream(nats_url)
    subjects = ServiceSubjects(meta.namespace, meta.name)
    await delete_stream(js, subjects)
    logger.info("Deleted JetStream stream %s", subjects.stream)
    runtime.forget((meta.namespace, meta.name))
