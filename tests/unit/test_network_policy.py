"""The NetworkPolicies the operator renders for each ReasoningService (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ponder.api import crd_gen
from ponder.api.crd import NamespaceSelector, ReasoningServiceSpec
from ponder.operator import render

OWNER = render.Owner(namespace="team-a", name="math", uid="1234-abcd")
NATS = "nats://nats.ponder-system:4222"
SCHEDULER_PODS = {
    "app.kubernetes.io/name": "ponder",
    "app.kubernetes.io/instance": "math",
    "app.kubernetes.io/component": "scheduler",
}
WORKER_PODS = {**SCHEDULER_PODS, "app.kubernetes.io/component": "worker"}

Manifest = dict[str, Any]


def spec_of(scheduler: dict[str, Any] | None = None) -> ReasoningServiceSpec:
    body: dict[str, Any] = {"model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"}}
    if scheduler is not None:
        body["scheduler"] = scheduler
    return ReasoningServiceSpec.model_validate(body)


def rendered(spec: ReasoningServiceSpec) -> list[Manifest]:
    return render.render_children(OWNER, spec, 2, NATS)


def one(children: list[Manifest], kind: str, name: str) -> Manifest:
    [child] = [c for c in children if c["kind"] == kind and c["metadata"]["name"] == name]
    return child


def container_ports(deployment: Manifest) -> dict[str, int]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return {port["name"]: port["containerPort"] for c in containers for port in c.get("ports", [])}


@pytest.mark.parametrize(
    ("scheduler", "ingress"),
    [
        # Absent: the API port from any source (a LoadBalancer Service's outside clients too).
        (None, [{"ports": [{"port": 8000, "protocol": "TCP"}]}]),
        (
            {"clientNamespaceSelector": {}},
            [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000, "protocol": "TCP"}]}],
        ),
        (
            {"clientNamespaceSelector": {"matchLabels": {}}},
            [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000, "protocol": "TCP"}]}],
        ),
        (
            {"clientNamespaceSelector": {"matchLabels": {"ponder.dev/client": "true"}}},
            [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"ponder.dev/client": "true"}}}],
                    "ports": [{"port": 8000, "protocol": "TCP"}],
                }
            ],
        ),
    ],
    ids=["absent", "empty", "empty-match-labels", "match-labels"],
)
def test_schedulers_accept_only_the_api_port_from_the_selected_namespaces(
    scheduler: dict[str, Any] | None, ingress: list[Manifest]
) -> None:
    policy = one(rendered(spec_of(scheduler)), "NetworkPolicy", "math-scheduler")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": SCHEDULER_PODS},
        "policyTypes": ["Ingress"],
        "ingress": ingress,
    }


@pytest.mark.parametrize(
    "scheduler",
    [None, {"clientNamespaceSelector": {"matchLabels": {"team": "a"}}}],
    ids=["absent", "match-labels"],
)
def test_workers_accept_only_the_worker_loop_port_from_their_namespace(
    scheduler: dict[str, Any] | None,
) -> None:
    policy = one(rendered(spec_of(scheduler)), "NetworkPolicy", "math-workers")
    assert policy["spec"] == {
        "podSelector": {"matchLabels": WORKER_PODS},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 8081, "protocol": "TCP"}]}],
    }


@pytest.mark.parametrize(
    ("selector", "peer"),
    [
        (
            {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        ),
        ({}, {"namespaceSelector": {}}),
    ],
    ids=["monitoring", "every-namespace"],
)
def test_workers_also_admit_the_metrics_scrapers_namespaces_on_the_worker_loop_port_only(
    selector: dict[str, Any], peer: dict[str, Any]
) -> None:
    spec = ReasoningServiceSpec.model_validate(
        {
            "model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"},
            "workers": {"metricsNamespaceSelector": selector},
        }
    )
    policy = one(rendered(spec), "NetworkPolicy", "math-workers")
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}, peer], "ports": [{"port": 8081, "protocol": "TCP"}]}
    ]
    scheduler = one(rendered(spec), "NetworkPolicy", "math-scheduler")
    assert scheduler == one(rendered(spec_of()), "NetworkPolicy", "math-scheduler")


def test_policies_select_the_pods_of_their_deployment_and_open_only_the_named_ports() -> None:
    children = rendered(spec_of())
    cases = [
        ("math-scheduler", "math-scheduler", {"http"}),
        ("math-workers", "math-workers", {"metrics"}),
    ]
    for policy_name, deployment_name, open_ports in cases:
        policy = one(children, "NetworkPolicy", policy_name)
        deployment = one(children, "Deployment", deployment_name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        ports = container_ports(deployment)
        allowed = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
        assert allowed == {ports[name] for name in open_ports}, policy_name
    # The engine port is reached over loopback only; no rule opens it.
    worker_policy = one(children, "NetworkPolicy", "math-workers")
    assert all(
        p["port"] != render.ENGINE_PORT
        for r in worker_policy["spec"]["ingress"]
        for p in r["ports"]
    )


def test_policies_are_applied_after_the_deployments_and_their_service() -> None:
    order = [f"{c['kind']}/{c['metadata']['name']}" for c in rendered(spec_of())]
    assert order[-2:] == ["NetworkPolicy/math-scheduler", "NetworkPolicy/math-workers"]
    assert order.index("Service/math") < order.index("NetworkPolicy/math-scheduler")
    assert order.index("Deployment/math-workers") < order.index("NetworkPolicy/math-scheduler")


def test_policies_are_owned_by_the_service_in_its_namespace() -> None:
    for name in ("math-scheduler", "math-workers"):
        metadata = one(rendered(spec_of()), "NetworkPolicy", name)["metadata"]
        assert metadata["namespace"] == "team-a"
        assert metadata["ownerReferences"] == [OWNER.reference]
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "ponder-operator"


@pytest.mark.parametrize(
    "selector",
    [
        {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]},
        {"matchLabels": {"team": "no spaces"}},
        {"matchLabels": {"team": "x" * 64}},
        {"matchLabels": {f"label-{index}": "v" for index in range(65)}},
    ],
    ids=["match-expressions", "value-with-space", "value-too-long", "too-many-labels"],
)
def test_client_namespace_selector_refuses_what_a_label_selector_cannot_hold(
    selector: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        NamespaceSelector.model_validate(selector)


def test_client_namespace_selector_schema_bounds_its_labels_and_checks_their_keys() -> None:
    schema = crd_gen.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    scheduler = schema["properties"]["spec"]["properties"]["scheduler"]
    selector = scheduler["properties"]["clientNamespaceSelector"]
    assert "default" not in selector  # absent means "any client", not an empty selector
    assert selector["properties"]["matchLabels"]["maxProperties"] == 64
    [rule] = selector["x-kubernetes-validations"]
    assert "self.matchLabels.all(key" in rule["rule"]
    assert rule["fieldPath"] == ".matchLabels"
