"""The NetworkPolicies the operator renders per ReasoningService, on the local control plane.

The operator runs as in tests/e2e/test_operator.py, with the chart ServiceAccount's rights, so
the chart's RBAC for networkpolicies is exercised too. kwok plays the kubelets and there is no
network plugin: nothing enforces these policies here. What is checked is what the API server
holds: the policies owned by the service, with the pod selectors, ports and peers a CNI would
enforce (rendering each case is tested in tests/unit/test_network_policy.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ponder.local.cluster.commands import CommandError, Kubectl
from tests.cluster.eventually import eventually
from tests.e2e.test_operator import (  # noqa: F401 (operator: the fixture, used by name)
    SETTLE_SECONDS,
    apply,
    get_json,
    operator,
    service,
    wait_ready,
)

pytestmark = pytest.mark.e2e

CLIENTS = {"ponder.dev/client": "true"}
API_PORT = [{"port": 8000, "protocol": "TCP"}]
WORKER_LOOP_PORT = [{"port": 8081, "protocol": "TCP"}]


@pytest_asyncio.fixture
async def tenant(kubectl: Kubectl) -> AsyncIterator[str]:
    """A fresh namespace for the test's service, deleted afterwards (without waiting)."""
    name = f"np-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", name)
    yield name
    await kubectl("delete", "namespace", name, "--wait=false")


def pods_of(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ponder",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }


async def policies_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """The NetworkPolicies labelled as the service's children, by name."""
    listed = await get_json(
        kubectl,
        "networkpolicies",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={name}",
    )
    return {item["metadata"]["name"]: item for item in listed["items"]}


@pytest.mark.usefixtures("operator")
async def test_service_gets_owned_policies_that_follow_its_client_namespace_selector(
    kubectl: Kubectl, tenant: str
) -> None:
    name = "guarded"
    await apply(
        kubectl,
        tenant,
        service(name, scheduler={"clientNamespaceSelector": {"matchLabels": CLIENTS}}),
    )
    ready = await wait_ready(kubectl, tenant, name)
    policies = await eventually(
        lambda: policies_of(kubectl, tenant, name),
        lambda found: set(found) == {f"{name}-scheduler", f"{name}-workers"},
        timeout_seconds=SETTLE_SECONDS,
        what="the service's two NetworkPolicies",
    )
    for policy in policies.values():
        owners = policy["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [
            ("ReasoningService", ready["metadata"]["uid"], True)
        ]
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open
    assert policies[f"{name}-scheduler"]["spec"]["podSelector"] == {
        "matchLabels": pods_of(name, "scheduler")
    }
    assert policies[f"{name}-scheduler"]["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": CLIENTS}}], "ports": API_PORT}
    ]
    assert policies[f"{name}-workers"]["spec"]["podSelector"] == {
        "matchLabels": pods_of(name, "worker")
    }
    assert policies[f"{name}-workers"]["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": WORKER_LOOP_PORT}
    ]

    # Without a selector the API port is open to any client: server-side apply drops `from`.
    await apply(kubectl, tenant, service(name))
    await eventually(
        lambda: policies_of(kubectl, tenant, name),
        lambda found: found[f"{name}-scheduler"]["spec"]["ingress"] == [{"ports": API_PORT}],
        timeout_seconds=SETTLE_SECONDS,
        what="the scheduler's policy open to any client",
    )


async def test_api_server_refuses_a_client_namespace_selector_key_that_is_no_label_key(
    kubectl: Kubectl, operator_kubeconfig: Path
) -> None:
    # operator_kubeconfig: the chart, and with it the CRD, is installed.
    body = service(
        "bad-selector", scheduler={"clientNamespaceSelector": {"matchLabels": {"team a": "x"}}}
    )
    with pytest.raises(CommandError) as refused:
        await kubectl(
            "create", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(body)
        )
    assert "clientNamespaceSelector.matchLabels keys must be label keys" in refused.value.stderr
