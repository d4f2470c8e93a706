"""One level-based reconcile of a ReasoningService, shared by create/update/resume and the timer.

Each pass runs four named steps:

    observe  the worker and scheduler Deployments; the JetStream stream and workers' consumer,
             ensured first because the backlog is read from them; the backlog and the
             schedulers' stats (a `Snapshot`)
    decide   pure (`decide.py`): the worker count, held or the autoscaler's (timer only), and
             every child manifest
    apply    every child with server-side apply, field manager `ponder-operator`, force;
             before it lowers the worker replicas, each worker pod's deletion cost from its
             slot use, so that idle workers go first (`pod_costs`)
    report   status computed from what the children show after the apply, written when it
             changed

A spec the operator's model refuses (`decide.read_service`: the API server's CEL cannot compile
a Python regex, and a CRD older than the operator may admit more) gets none of them. `refuse`
reads the two Deployments, writes a status that says what is wrong (Degraded, reason
InvalidSpec) and returns the problems in `ReconcileResult.refused`; no child and no stream is
touched.

Nothing here depends on what happened before: running it twice, or after a crash half-way,
converges on the same objects. The only memory (`ServiceMemory`: autoscaler history, what was
last applied) is an optimisation or a smoothing, and rebuilds itself after a restart.
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
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType
from pydantic import ValidationError

from ponder.api import crd
from ponder.api.crd import ReasoningService, ReasoningServiceStatus
from ponder.api.jetstream import delete_stream, ensure_stream
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.operator import render
from ponder.operator.decide import (
    Children,
    DesiredChild,
    Plan,
    RefusedService,
    children_after,
    decide,
    read_service,
    refused_by_config,
    refused_status,
    status_change,
    status_of,
    workers_short,
)
from ponder.operator.nats_credentials import keep_service_credentials, service_secret_name
from ponder.operator.pod_costs import spare_busy_workers
from ponder.operator.policy import Decision
from ponder.operator.runtime import (
    FIELD_MANAGER,
    AppliedChild,
    AppliedStream,
    NatsUnreachable,
    Runtime,
    ServiceMemory,
)
from ponder.operator.service_config import service_config_from_spec
from ponder.operator.signals import read_backlog
from ponder.operator.snapshot import Backlog, ServiceKey, Snapshot
from ponder.operator.status import UnschedulablePod

Logger = logging.Logger | logging.LoggerAdapter[Any]

ReasoningServiceResource = create_namespaced_resource(crd.GROUP, crd.VERSION, crd.KIND, crd.PLURAL)

_KINDS: dict[str, Any] = {
    "ConfigMap": ConfigMap,
    "Deployment": Deployment,
    "Service": Service,
    "PodDisruptionBudget": PodDisruptionBudget,
    "NetworkPolicy": NetworkPolicy,
}


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile did that a handler may report (as an Event)."""

    decision: Decision | None
    status: ReasoningServiceStatus
    refused: str | None = None
    """Why the spec was refused (status says so, nothing was applied); None when it was not."""


def plain(value: Any) -> Any:
    """A deep copy of kopf's mapping views as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


async def reconcile(
    runtime: Runtime,
    body: Mapping[str, Any],
    *,
    autoscale: bool,
    logger: Logger,
    trigger: str | None = None,
) -> ReconcileResult:
    """Bring the children of the ReasoningService `body` to its spec and report status.

    `autoscale` (the timer, or a load step) also lets the policy move the worker count; every
    reconcile reads the signals for status. A refused spec is reported in status, not raised.
    `trigger` names the pass in metrics and the liveness probe (default: timer or change).
    """
    service = read_service(plain(body))
    key = (service.metadata.namespace, service.metadata.name)
    memory = runtime.memory(key)
    trigger = trigger or ("timer" if autoscale else "change")
    with runtime.passes.track(key, trigger):
        async with memory.lock, runtime.reconcile_slots:
            if isinstance(service, RefusedService):
                return await refuse(runtime, service)
            with runtime.metrics.timed(trigger):
                return await _reconcile(
                    runtime, memory, service, autoscale=autoscale, logger=logger
                )


async def _reconcile(
    runtime: Runtime,
    memory: ServiceMemory,
    service: ReasoningService,
    *,
    autoscale: bool,
    logger: Logger,
) -> ReconcileResult:
    """One pass, under the service's lock: observe, decide, apply, report."""
    meta = service.metadata
    # Built once: the stream, the ConfigMap and the pod templates' config hash all come from it.
    try:
        config = service_config_from_spec(
            meta.namespace,
            meta.name,
            service.spec,
            runtime.config.nats_url,
            stream_replicas=runtime.config.stream_replicas,
        )
    except ValidationError as error:
        return await refuse(runtime, refused_by_config(service, error))
    snapshot = await observe(runtime, memory, service, config)
    plan = decide(snapshot, config, autoscale=autoscale)
    await spare_busy_workers(runtime, snapshot, plan, logger)  # before the replicas drop
    children = await apply(runtime, memory, snapshot, plan, logger)
    status = await report(runtime, memory, snapshot, plan, children, autoscale=autoscale)
    runtime.metrics.observe_pass(snapshot, plan, status)
    return ReconcileResult(decision=plan.decision, status=status)


# --- observe -----------------------------------------------------------------------------------


async def observe(
    runtime: Runtime, memory: ServiceMemory, service: ReasoningService, config: ServiceConfig
) -> Snapshot:
    """What this pass decides from: the Deployments, the stream, the backlog and the stats.

    The stream is ensured here rather than in `apply`: the backlog is read from it, and what it
    should be follows from the spec alone, not from anything `decide` computes. The backlog is
    not read while the stream is unavailable (one NATS failure per pass, not two).
    """
    meta = service.metadata
    key: ServiceKey = (meta.namespace, meta.name)
    names = render.ChildNames(meta.name)
    workers = await _get_deployment(runtime, meta.namespace, names.workers)
    scheduler = await _get_deployment(runtime, meta.namespace, names.scheduler)
    credentials, credentials_error = await _keep_nats_credentials(runtime, memory, service)
    stream_error, unreachable = await _ensure_stream(
        runtime, memory, key, config, service.spec.workers.max_replicas
    )
    backlog = None
    if stream_error is None:
        backlog = await _read_backlog(runtime, key, config.nats_url)
    return Snapshot(
        service=service,
        workers=workers,
        scheduler=scheduler,
        stream_error=stream_error,
        nats_unreachable=unreachable,
        backlog=backlog,
        stats=runtime.stats.summary(key) if stream_error is None else None,
        at=time.time(),
        remembered_workers=memory.desired_workers,
        autoscaler=memory.autoscaler,
        nats_credentials=credentials,
        nats_credentials_error=credentials_error,
        nats_ca=runtime.nats_ca,
    )


async def _keep_nats_credentials(
    runtime: Runtime, memory: ServiceMemory, service: ReasoningService
) -> tuple[str | None, str | None]:
    """Write the service's NATS credentials Secret, renewed when due, before the pods that mount
    it are applied (they would wait for it anyway): every pass, so that a Secret deleted by hand
    is back at the next one. (Its name, or None when NATS needs no credentials; why the API
    server refused it, or None.)"""
    if runtime.trust is None:
        return None, None
    meta = service.metadata
    owner = render.Owner(meta.namespace, meta.name, meta.uid)
    try:
        memory.nats_credentials = await keep_service_credentials(
            runtime.kube,
            runtime.trust,
            owner,
            memory.nats_credentials,
            runtime.config.nats_creds_lifetime_seconds,
            int(time.time()),
        )
    except ApiError as error:
        logging.getLogger(__name__).warning(
            "the API server refused the NATS credentials of %s/%s: %s",
            meta.namespace,
            meta.name,
            error,
        )
        return service_secret_name(meta.name), _api_message(error)
    return service_secret_name(meta.name), None


async def _get_deployment(runtime: Runtime, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        deployment = await runtime.kube.get(Deployment, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise
    return deployment.to_dict()


async def _ensure_stream(
    runtime: Runtime,
    memory: ServiceMemory,
    key: ServiceKey,
    config: ServiceConfig,
    max_replicas: int,
) -> tuple[str | None, bool]:
    """Create or update the stream and consumer (at most once per resync when unchanged).

    Returns (None, False), or why the stream is unavailable and whether that is because its
    NATS server cannot be reached; never raises for NATS trouble, and never waits long for it
    (`NatsPool`), so the Kubernetes side still converges while NATS is down.
    """
    wanted = _digest({"config": config.model_dump(mode="json"), "max": max_replicas})
    cached = memory.stream
    now = time.monotonic()
    if (
        cached
        and cached.digest == wanted
        and now - cached.applied_at < runtime.config.resync_seconds
    ):
        return None, False
    try:
        js = await runtime.nats.jetstream(config.nats_url)
        await ensure_stream(js, ServiceSubjects(*key), config, max(max_replicas, 1))
    except NatsUnreachable as error:
        memory.stream = None
        return str(error), True
    except Exception as error:  # any NATS or network failure is reported in status
        memory.stream = None
        return (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__), False
    memory.stream = AppliedStream(wanted, now)
    return None, False


async def _read_backlog(runtime: Runtime, key: ServiceKey, nats_url: str) -> Backlog | None:
    try:
        js = await runtime.nats.jetstream(nats_url)
        return await read_backlog(js, ServiceSubjects(*key))
    except Exception:  # no backlog this tick: hold the replicas rather than guess
        logging.getLogger(__name__).warning("Could not read the backlog of %s/%s", *key)
        return None


# --- apply -------------------------------------------------------------------------------------


async def apply(
    runtime: Runtime, memory: ServiceMemory, snapshot: Snapshot, plan: Plan, logger: Logger
) -> Children:
    """Remember the plan's worker count and autoscaler state, then apply every child in order.

    Returns the Deployments as the API server holds them after the apply (as observed when an
    unchanged child was skipped or refused). A child the API server refuses (invalid, over a
    quota, denied by an admission policy) does not stop the others: what it said goes into
    status (Degraded, reason ApplyFailed, and its Warning Event), and the next pass tries again.
    """
    memory.desired_workers = plan.worker_replicas
    memory.autoscaler = plan.autoscaler
    namespace = snapshot.service.metadata.namespace
    applied: dict[tuple[str, str], dict[str, Any] | None] = {}
    refused: list[str] = []
    for child in plan.children:
        kind, name = child.manifest["kind"], child.manifest["metadata"]["name"]
        try:
            applied[kind, name] = await _apply_child(runtime, memory, namespace, child, logger)
        except ApiError as error:
            logger.warning("the API server refused %s %s/%s: %s", kind, namespace, name, error)
            refused.append(f"{kind}/{name}: {_api_message(error)}")
    names = render.ChildNames(snapshot.service.metadata.name)
    return children_after(
        snapshot,
        applied.get(("Deployment", names.workers)),
        applied.get(("Deployment", names.scheduler)),
        tuple(refused),
    )


def _api_message(error: ApiError) -> str:
    """What the API server said, bounded (a Condition's message is short by nature)."""
    status = error.status
    text = status.message or str(error)
    return f"{text[:500]} ({status.code} {status.reason or ''})".replace(" )", ")")


async def _apply_child(
    runtime: Runtime, memory: ServiceMemory, namespace: str, child: DesiredChild, logger: Logger
) -> dict[str, Any] | None:
    """Server-side apply one child unless it was applied unchanged within the resync period.

    Returns the object as the API server holds it after the apply, or None when skipped.
    """
    manifest, existed = child.manifest, child.existed
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    digest = _digest(manifest)
    cached = memory.applied.get((kind, name))
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
        namespace=namespace,
        patch_type=PatchType.APPLY,
        field_manager=FIELD_MANAGER,
        force=True,
    )
    result: dict[str, Any] = applied.to_dict()
    resource_version = str(result["metadata"].get("resourceVersion", ""))
    memory.applied[kind, name] = AppliedChild(digest, resource_version, now)
    if existed is False or (existed is None and cached is None and _just_created(result)):
        logger.info("Created %s %s/%s", kind, namespace, name)
    elif cached is None or cached.resource_version != resource_version:
        logger.info("Configured %s %s/%s", kind, namespace, name)
    return result


def _just_created(obj: Mapping[str, Any]) -> bool:
    created = obj.get("metadata", {}).get("creationTimestamp")
    if not created:
        return False
    moment = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (datetime.now(UTC) - moment).total_seconds() < 5


# --- report ------------------------------------------------------------------------------------


async def report(
    runtime: Runtime,
    memory: ServiceMemory,
    snapshot: Snapshot,
    plan: Plan,
    children: Children,
    *,
    autoscale: bool,
) -> ReasoningServiceStatus:
    """Compute status from what the children show and write it when it changed.

    Pods are listed on the timer only (a rollout sends many Deployment events); in between,
    what the last tick found stands until every worker is ready.
    """
    meta = snapshot.service.metadata
    if not workers_short(plan, children):
        memory.unschedulable_workers = ()
    elif autoscale:
        memory.unschedulable_workers = await _unschedulable_workers(
            runtime, meta.namespace, meta.name
        )
    status = status_of(snapshot, plan, children, memory.unschedulable_workers, datetime.now(UTC))
    await _write_status(runtime, meta.namespace, meta.name, snapshot.service.status, status)
    return status


async def refuse(runtime: Runtime, refused: RefusedService) -> ReconcileResult:
    """Report a refused spec in status and touch nothing else: the Deployments are only read,
    so that Ready still says what the children of the last valid spec do."""
    meta = refused.metadata
    names = render.ChildNames(meta.name)
    workers = await _get_deployment(runtime, meta.namespace, names.workers)
    scheduler = await _get_deployment(runtime, meta.namespace, names.scheduler)
    status = refused_status(refused, workers, scheduler, datetime.now(UTC))
    await _write_status(runtime, meta.namespace, meta.name, refused.status, status)
    return ReconcileResult(decision=None, status=status, refused=refused.problems)


async def _write_status(
    runtime: Runtime,
    namespace: str,
    name: str,
    previous: ReasoningServiceStatus | None,
    status: ReasoningServiceStatus,
) -> None:
    patch = status_change(previous, status)
    if patch is not None:
        await runtime.kube.patch(
            ReasoningServiceResource.Status,
            name,
            {"status": patch},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )


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


# --- the other entry points --------------------------------------------------------------------


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
    memory = runtime.memory((namespace, name))
    if memory.refresh_queued:
        return
    memory.refresh_queued = True
    try:
        with runtime.passes.track((namespace, name), "refresh"):
            await _refresh_locked(runtime, memory, namespace, name, logger)
    finally:
        memory.refresh_queued = False


async def _refresh_locked(
    runtime: Runtime, memory: ServiceMemory, namespace: str, name: str, logger: Logger
) -> None:
    """`refresh` once its turn came: under the service's lock, read it and reconcile it."""
    async with memory.lock:
        # From here on a new change needs a new refresh: this one may have read too early.
        memory.refresh_queued = False
        try:
            current = await runtime.kube.get(ReasoningServiceResource, name, namespace=namespace)
        except ApiError as error:
            if error.status.code == 404:
                return
            raise
        body = current.to_dict()
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        service = read_service(body)
        async with runtime.reconcile_slots:
            if isinstance(service, RefusedService):
                await refuse(runtime, service)
            else:
                await _reconcile(runtime, memory, service, autoscale=False, logger=logger)


async def finalize(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> str | None:
    """Delete the service's stream (its children go with their owner references); a refused
    spec does not stand in the way, and neither does an unreachable NATS server: then the
    stream is left behind, and the returned message says so (None when it was deleted)."""
    service = read_service(plain(body))
    meta = service.metadata
    nats = service.nats if isinstance(service, RefusedService) else service.spec.nats
    nats_url = nats.url or runtime.config.nats_url
    subjects = ServiceSubjects(meta.namespace, meta.name)
    runtime.forget((meta.namespace, meta.name))
    try:
        js = await runtime.nats.jetstream(nats_url)
    except NatsUnreachable as error:
        left = f"JetStream stream {subjects.stream} is left behind: {error}"
        logger.warning(left)
        return left
    await delete_stream(js, subjects)
    logger.info("Deleted JetStream stream %s", subjects.stream)
    return None
