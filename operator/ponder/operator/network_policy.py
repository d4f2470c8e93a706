"""The NetworkPolicies of a ReasoningService's pods (pure: spec parts in, manifests out).

Two policies, both Ingress only, each selecting one component's pods:

    NetworkPolicy `name-scheduler`  the scheduler's API port, from the namespaces
                                    spec.scheduler.clientNamespaceSelector selects (absent: from
                                    anywhere); nothing else
    NetworkPolicy `name-workers`    the worker loop's health and metrics port, from pods of the
                                    service's namespace and of the namespaces
                                    spec.workers.metricsNamespaceSelector selects (a
                                    Prometheus'); nothing on the engine port, which only the
                                    worker loop calls, over loopback inside the pod

Kubelet probes come from the node, and traffic from the pod's own node is always allowed
(Kubernetes docs, "Network Policies"), so no rule names a node address. Egress stays open: the
pods reach NATS, DNS and, for the engine, model downloads from hosts no policy can name ahead.

render.py owns the names, labels and ports and passes them in, so this module imports nothing of
the operator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ponder.api.crd import NamespaceSelector

Manifest = dict[str, Any]

API_VERSION = "networking.k8s.io/v1"


def _tcp(port: int) -> Manifest:
    return {"port": port, "protocol": "TCP"}


def namespace_peer(selector: NamespaceSelector) -> Manifest:
    """The NetworkPolicyPeer of every pod in the namespaces `selector` matches (`{}`: all)."""
    if not selector.match_labels:
        return {"namespaceSelector": {}}
    return {"namespaceSelector": {"matchLabels": dict(selector.match_labels)}}


def scheduler_network_policy(
    metadata: Manifest,
    pod_labels: Mapping[str, str],
    api_port: int,
    clients: NamespaceSelector | None,
) -> Manifest:
    """Scheduler pods accept only `api_port`, from pods of the namespaces `clients` selects.

    `clients` None admits the port from any source, outside the cluster too, so a LoadBalancer
    or NodePort Service keeps working.
    """
    rule: Manifest = {"ports": [_tcp(api_port)]}
    if clients is not None:
        rule["from"] = [namespace_peer(clients)]
    return _ingress_policy(metadata, pod_labels, rule)


def worker_network_policy(
    metadata: Manifest,
    pod_labels: Mapping[str, str],
    worker_loop_port: int,
    scrapers: NamespaceSelector | None = None,
) -> Manifest:
    """Worker pods accept only `worker_loop_port` (health, metrics), from their own namespace
    and from the namespaces `scrapers` selects."""
    # An empty podSelector without a namespaceSelector: every pod of this namespace.
    peers: list[Manifest] = [{"podSelector": {}}]
    if scrapers is not None:
        peers.append(namespace_peer(scrapers))
    return _ingress_policy(metadata, pod_labels, {"from": peers, "ports": [_tcp(worker_loop_port)]})


def _ingress_policy(metadata: Manifest, pod_labels: Mapping[str, str], rule: Manifest) -> Manifest:
    """An Ingress-only NetworkPolicy of the pods `pod_labels` selects, admitting `rule` alone."""
    return {
        "apiVersion": API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": dict(pod_labels)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }
