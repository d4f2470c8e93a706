"""Which replica is active, read from the peering object, for `ponder_operator_active`.

kopf pauses a standby without telling it; the peering object's `status` holds every replica's
keep-alive record, and `peering.is_active` reads it as kopf does. This loop reads the object
every few seconds (a GET the chart's RBAC allows) while kopf runs, paused or not, and sets the
gauge: 1 active, 0 standing by or unknown (the object unreadable). Standalone: always 1.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from prometheus_client import Gauge

from ponder.operator.peering import Peering, is_active

log = logging.getLogger(__name__)

ClusterKopfPeering = create_global_resource(
    "kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings"
)
KopfPeering = create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")


async def watch_activity(
    kube: AsyncClient,
    peering: Peering | None,
    identity: str,
    gauge: Gauge,
    namespace: str | None = None,
    interval_seconds: float | None = None,
) -> None:
    """Keep `gauge` saying whether this replica is active, until cancelled. `namespace`: the
    first watched namespace (each holds a `KopfPeering` with the same records), None for the
    cluster-wide `ClusterKopfPeering`."""
    if peering is None:
        gauge.set(1)
        return
    interval = interval_seconds or max(1.0, peering.lifetime_seconds / 2)
    while True:
        try:
            found: dict[str, Any] = (
                await kube.get(ClusterKopfPeering, name=peering.name)
                if namespace is None
                else await kube.get(KopfPeering, name=peering.name, namespace=namespace)
            )
            records = found.get("status") or {}
            now = datetime.datetime.now(datetime.UTC)
            gauge.set(1 if is_active(records, identity, now) else 0)
        except Exception as error:  # unknown: not counted as active
            log.debug("reading peering object %s failed: %r", peering.name, error)
            gauge.set(0)
        await asyncio.sleep(interval)
