"""kopf handlers: translate kopf's calls into `reconcile` and `finalize`, nothing more.

Handlers return nothing (kopf would store a returned value in status). They are registered on
a fresh registry by `build_registry()`, with the timer interval the operator was started with.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from lightkube import ApiError

from ponder.api import crd
from ponder.operator.passes import stuck_problem
from ponder.operator.peering import Peering
from ponder.operator.reconcile import finalize, owning_service, reconcile, refresh
from ponder.operator.render import MANAGED_BY
from ponder.operator.runtime import OperatorConfig, Runtime
from ponder.operator.status import INVALID_SPEC, degraded_warning

FINALIZER = "ponder.dev/finalizer"
ANNOTATION_PREFIX = "ponder.dev"
RESOURCE = (crd.GROUP, crd.VERSION, crd.PLURAL)
RETRY_SECONDS = 5.0
STEP_DECISION_GAP_SECONDS = 1.0
"""The least time between two decisions woken by load steps of one service: a storm of steps
costs one reconcile a second at most, beside the timer's."""


Logger = logging.Logger | logging.LoggerAdapter[Any]


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


async def on_change(body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    """Create, update (spec changes, including the scale subresource) and operator resume.

    A refused spec is posted as a Warning Event and raised as a permanent error, which kopf
    logs and retries no more until the spec changes; status already says what to fix.
    """
    previous = _status_of(body)
    try:
        result = await reconcile(_runtime(memo), body, autoscale=False, logger=logger)
    except ApiError as error:
        raise kopf.TemporaryError(f"API server refused: {error}", delay=RETRY_SECONDS) from error
    _warn_if_degraded(body, previous, result.status)
    if result.refused is not None:
        kopf.event(body, type="Warning", reason=INVALID_SPEC, message=result.refused)
        raise kopf.PermanentError(f"Refused the spec: {result.refused}")


async def on_timer(body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    """Every interval: read the signals, let the autoscaler decide, refresh status (a refused
    spec's status too, silently: `on_change` reported it once)."""
    await _autoscale(body, _runtime(memo), logger, trigger="timer")


async def on_load_step(
    body: kopf.Body, memo: Any, logger: Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """A daemon per service: whenever one of its schedulers pushes a load step
    (`Runtime.wake_autoscaler`), the autoscaler decides at once, as on the timer, and then at
    most once per `STEP_DECISION_GAP_SECONDS` (steps within the gap are taken together after it).
    kopf stops it when the object goes, the operator exits or a peer takes over; it returns
    then, after the pass in flight (a cancelled daemon would post a Warning Event)."""
    runtime = _runtime(memo)
    memory = runtime.memory((body.metadata.namespace or "", body.metadata.name or ""))
    while await _stepped_or_stopped(memory.load_stepped, stopped):
        memory.load_stepped.clear()
        try:
            await _autoscale(body, runtime, logger, trigger="step")
        except Exception as error:  # as on the timer: logged, and the next step or tick retries
            logger.warning(f"Deciding on a load step failed: {error!r}")
        await stopped.wait(STEP_DECISION_GAP_SECONDS)


async def _stepped_or_stopped(stepped: asyncio.Event, stopped: kopf.DaemonStopped) -> bool:
    """Wait for a load step or the daemon's stop; True for a step (and no stop)."""
    waits = {asyncio.ensure_future(stepped.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return stepped.is_set() and not stopped


async def _autoscale(body: kopf.Body, runtime: Runtime, logger: Logger, *, trigger: str) -> None:
    """One autoscaling pass; a changed worker count is logged and posted as an Event."""
    previous = _status_of(body)
    result = await reconcile(runtime, body, autoscale=True, logger=logger, trigger=trigger)
    _warn_if_degraded(body, previous, result.status)
    decision = result.decision
    if decision is not None and decision.changed:
        logger.info(decision.message)
        kopf.event(body, type="Normal", reason="ScaledWorkers", message=decision.message)


async def on_child_event(
    body: kopf.Body, memo: Any, logger: Logger, namespace: str | None, **_: Any
) -> None:
    """A worker or scheduler Deployment changed (a rollout, pods becoming ready): refresh the
    owning service's status now rather than at the next tick."""
    owner = owning_service(body)
    if owner is not None and namespace is not None:
        await refresh(_runtime(memo), namespace, owner, logger)


async def on_delete(body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    """Remove the job stream; owner references take care of every child object. An
    unreachable NATS server does not keep the object: the stream is left, and an Event says so."""
    left = await finalize(_runtime(memo), body, logger)
    if left is not None:
        kopf.event(body, type="Warning", reason="StreamLeftBehind", message=left)


async def on_probe(memo: Any, **_: Any) -> dict[str, float | None]:
    """The liveness probe: fails (so the endpoint answers 500 and the kubelet restarts the
    operator) when a reconcile pass has been in flight too long; else the oldest pass's age."""
    runtime = _runtime(memo)
    oldest = runtime.passes.oldest()
    problem = stuck_problem(oldest, runtime.config.stuck_pass_seconds)
    if problem is not None:
        raise RuntimeError(f"the reconcile loop is stuck: {problem}")
    return {"oldest_pass_seconds": None if oldest is None else round(oldest.seconds, 3)}


def _status_of(body: kopf.Body) -> crd.ReasoningServiceStatus | None:
    """The status the object had before this reconcile (None when it has none, or an older
    shape than the model reads)."""
    raw = body.get("status")
    if not raw:
        return None
    try:
        return crd.ReasoningServiceStatus.model_validate(dict(raw))
    except ValueError:
        return None


def _warn_if_degraded(
    body: kopf.Body,
    previous: crd.ReasoningServiceStatus | None,
    status: crd.ReasoningServiceStatus,
) -> None:
    """One Warning Event when the service became Degraded, or Degraded for a new reason."""
    warning = degraded_warning(previous, status)
    if warning is not None:
        kopf.event(body, type="Warning", reason=warning[0], message=warning[1])


def configure(settings: kopf.OperatorSettings, peering: Peering | None = None) -> None:
    """kopf settings: our finalizer, our annotations, Events only for warnings and decisions;
    standalone without `peering`, else one peer of several (peering.py)."""
    settings.persistence.finalizer = FINALIZER
    # Keep kopf's bookkeeping in annotations: status is ours and its schema has no `kopf` field.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "ponder-operator"
    configure_peering(settings, peering)
    # The resources are known; no need to watch CustomResourceDefinitions.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]


def configure_peering(settings: kopf.OperatorSettings, peering: Peering | None) -> None:
    """Standalone (one replica: no peering object to read or grant), or a peer that stays paused
    until it has read the peering object and found no live peer of a higher priority."""
    if peering is None:
        settings.peering.standalone = True
        return
    settings.peering.standalone = False
    # Mandatory: a replica starts paused, and stays paused while the peering object is missing,
    # instead of running standalone beside the active one.
    settings.peering.mandatory = True
    settings.peering.name = peering.name
    settings.peering.priority = peering.priority
    settings.peering.lifetime = peering.lifetime_seconds


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A registry with every handler of the operator."""
    registry = kopf.OperatorRegistry()
    # A fresh registry has none of kopf's fallback logins: in a pod the service account's token,
    # else the KUBECONFIG (local runs and tests).
    kopf.on.login(registry=registry, id="service-account", errors=kopf.ErrorsMode.IGNORED)(
        kopf.login_with_service_account
    )
    kopf.on.login(registry=registry, id="kubeconfig", errors=kopf.ErrorsMode.IGNORED)(
        kopf.login_with_kubeconfig
    )
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(*RESOURCE, registry=registry, id="reconcile", backoff=RETRY_SECONDS)(on_change)
    kopf.timer(
        *RESOURCE,
        registry=registry,
        id="autoscale",
        interval=config.autoscale_interval_seconds,
        backoff=config.autoscale_interval_seconds,
        errors=kopf.ErrorsMode.IGNORED,
    )(on_timer)
    # Stopped, it returns after the pass in flight; cancelled only if that pass hangs.
    kopf.daemon(
        *RESOURCE,
        registry=registry,
        id="load-step",
        cancellation_backoff=RETRY_SECONDS * 6,
        cancellation_timeout=RETRY_SECONDS,
    )(on_load_step)
    kopf.on.event(
        "apps",
        "v1",
        "deployments",
        registry=registry,
        id="child-changed",
        labels={"app.kubernetes.io/managed-by": MANAGED_BY},
    )(on_child_event)
    kopf.on.probe(registry=registry, id="reconcile-loop")(on_probe)
    # A NATS that stays unreachable must not block deletion forever: after a minute of retries
    # the finalizer goes and the stream is left for NATS's max age to expire.
    kopf.on.delete(*RESOURCE, registry=registry, id="finalize", backoff=RETRY_SECONDS, retries=12)(
        on_delete
    )
    return registry
