"""`helm install` of charts/ponder into the local API server, and its RBAC proven with a real token.

The operator's permissions are asserted as the API server's authorizer answers them for a token of
the chart's ServiceAccount (`kubectl auth can-i` through a token-only kubeconfig), both ways: what
the operator needs is allowed, and what it does not need is denied.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ponder.local.cluster.commands import CommandError, Kubectl, run_command
from ponder.local.cluster.local_cluster import LocalCluster
from tests.cluster.eventually import eventually
from tests.e2e.chart_fixtures import (
    LOCAL_VALUES,
    ChartRelease,
    helm_install,
    helm_uninstall,
    write_token_kubeconfig,
)

pytestmark = pytest.mark.e2e

CRD_NAME = "reasoningservices.ponder.dev"
RSVC = "reasoningservices.ponder.dev"
# kopf's peering CRDs ship in the chart's crds/ for operator.peering.enabled.
PEERING_CRD_NAMES = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")

# (verb, resource, subresource, namespace) the operator must be allowed: None = all namespaces.
ALLOWED: list[tuple[str, str, str, str | None]] = [
    *[(verb, RSVC, "", None) for verb in ("get", "list", "watch", "patch", "update")],
    *[(verb, RSVC, "status", "default") for verb in ("get", "patch", "update")],
    ("update", RSVC, "finalizers", "default"),
    *[
        (verb, resource, "", "default")
        for resource in (
            "deployments.apps",
            "services",
            "configmaps",
            "poddisruptionbudgets.policy",
        )
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    ],
    *[(verb, "pods", "", None) for verb in ("get", "list", "watch", "patch")],
    *[
        (verb, events, "", "default")
        for events in ("events", "events.events.k8s.io")
        for verb in ("create", "patch")
    ],
    *[
        (verb, "customresourcedefinitions.apiextensions.k8s.io", "", None)
        for verb in ("get", "list", "watch")
    ],
]

# What the operator never does, so it must not be able to.
DENIED: list[tuple[str, str, str, str | None]] = [
    ("get", "secrets", "", "default"),
    ("list", "secrets", "", None),
    ("get", "secrets", "", "ponder-system"),
    ("get", "nodes", "", None),
    ("delete", "nodes", "", None),
    ("create", "pods", "", "default"),
    ("delete", "pods", "", "default"),
    ("create", "pods", "exec", "default"),
    ("update", "deployments.apps", "", "default"),  # server-side apply patches
    ("patch", "deployments.apps", "scale", "default"),
    ("create", RSVC, "", "default"),
    ("delete", RSVC, "", "default"),
    ("patch", RSVC, "scale", "default"),
    ("create", "leases.coordination.k8s.io", "", "default"),  # no leader election
    # Peering is off by default (standalone kopf, one replica); operator.peering.enabled grants
    # the peering object (tests/unit/test_chart.py, tests/e2e/test_operator_failover.py).
    ("list", "clusterkopfpeerings.kopf.dev", "", None),
    ("patch", "kopfpeerings.kopf.dev", "", "default"),
    ("list", "namespaces", "", None),  # not needed cluster-wide
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", None),
    ("create", "clusterroles.rbac.authorization.k8s.io", "", None),
    ("create", "rolebindings.rbac.authorization.k8s.io", "", "default"),
    ("impersonate", "serviceaccounts", "", "default"),
    ("create", "serviceaccounts", "token", "default"),
    ("deletecollection", "configmaps", "", "default"),
]


async def can_i(
    kubeconfig: Path,
    kubectl_binary: Path,
    verb: str,
    resource: str,
    subresource: str,
    namespace: str | None,
) -> bool:
    """The API server's answer to `kubectl auth can-i` for the kubeconfig's user."""
    args = [str(kubectl_binary), "--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["--all-namespaces"] if namespace is None else ["--namespace", namespace]
    try:
        answer = await run_command(args, timeout_seconds=30)
    except CommandError as error:
        # can-i exits 1 for "no"; anything else (no token, unreachable server) is a failure.
        assert error.stdout.strip().startswith("no"), error
        return False
    assert answer.strip() == "yes", answer
    return True


def describe(verb: str, resource: str, subresource: str, namespace: str | None) -> str:
    target = f"{resource}/{subresource}" if subresource else resource
    return f"{verb} {target} in {namespace or 'all namespaces'}"


async def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(await kubectl("get", *args, "-o", "json"))


# --- the install ---------------------------------------------------------------------------------


async def test_install_establishes_the_crd_and_runs_operator_and_nats(
    ponder_release: ChartRelease, kubectl: Kubectl
) -> None:
    for name in (CRD_NAME, *PEERING_CRD_NAMES):
        crd = await get_json(kubectl, "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", name
    await kubectl("get", "rsvc", "--all-namespaces")  # the short name and the kind resolve
    namespace = ponder_release.namespace
    deployment = await get_json(kubectl, "deployment", ponder_release.name, "-n", namespace)
    assert deployment["status"]["readyReplicas"] == 1
    nats = await get_json(kubectl, "statefulset", f"{ponder_release.name}-nats", "-n", namespace)
    assert nats["status"]["readyReplicas"] == 1
    pods = await get_json(
        kubectl, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={ponder_release.name}"
    )
    assert sorted(p["status"]["phase"] for p in pods["items"]) == ["Running", "Running"]
    # The admission chain accepted the restricted pods; the operator is not on a GPU node.
    operator_pod = next(
        p
        for p in pods["items"]
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    )
    assert operator_pod["spec"]["nodeName"].startswith("cpu-node-")
    assert operator_pod["spec"]["serviceAccountName"] == ponder_release.service_account
    assert "kubectl apply -f" in ponder_release.install_output  # NOTES.txt


# --- RBAC, as the API server authorizes the ServiceAccount's token -------------------------------


async def test_token_authenticates_as_the_chart_service_account(
    operator_kubeconfig: Path, ponder_release: ChartRelease, kube_cluster: LocalCluster
) -> None:
    review = json.loads(
        await run_command(
            [
                str(kube_cluster.kubectl_binary),
                "--kubeconfig",
                str(operator_kubeconfig),
                "auth",
                "whoami",
                "-o",
                "json",
            ]
        )
    )
    assert review["status"]["userInfo"]["username"] == ponder_release.user


@pytest.mark.parametrize(
    ("verb", "resource", "subresource", "namespace"),
    ALLOWED,
    ids=[describe(*case) for case in ALLOWED],
)
async def test_operator_may(
    operator_kubeconfig: Path,
    kube_cluster: LocalCluster,
    verb: str,
    resource: str,
    subresource: str,
    namespace: str | None,
) -> None:
    allowed = await can_i(
        operator_kubeconfig, kube_cluster.kubectl_binary, verb, resource, subresource, namespace
    )
    assert allowed, f"the chart's RBAC denies {describe(verb, resource, subresource, namespace)}"


@pytest.mark.parametrize(
    ("verb", "resource", "subresource", "namespace"),
    DENIED,
    ids=[describe(*case) for case in DENIED],
)
async def test_operator_may_not(
    operator_kubeconfig: Path,
    kube_cluster: LocalCluster,
    verb: str,
    resource: str,
    subresource: str,
    namespace: str | None,
) -> None:
    allowed = await can_i(
        operator_kubeconfig, kube_cluster.kubectl_binary, verb, resource, subresource, namespace
    )
    assert not allowed, (
        f"the chart's RBAC allows {describe(verb, resource, subresource, namespace)}"
    )


@pytest_asyncio.fixture
async def namespace(kubectl: Kubectl) -> AsyncIterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", name)
    yield name
    await kubectl("delete", "namespace", name, "--wait=false")


async def test_token_applies_children_server_side_and_is_refused_secrets(
    operator_kubeconfig: Path, kube_cluster: LocalCluster, namespace: str
) -> None:
    operator = Kubectl(binary=kube_cluster.kubectl_binary, kubeconfig=operator_kubeconfig)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": namespace},
        "data": {"service.json": "{}"},
    }
    await operator(
        "apply",
        "--server-side",
        "--field-manager=ponder-operator",
        "-f",
        "-",
        stdin=json.dumps(config_map),
    )
    applied = json.loads(
        await operator(
            "get", "configmap", "probe", "-n", namespace, "-o", "json", "--show-managed-fields"
        )
    )
    managers = [field["manager"] for field in applied["metadata"]["managedFields"]]
    assert managers == ["ponder-operator"]
    await operator("delete", "configmap", "probe", "-n", namespace)
    with pytest.raises(CommandError) as refused:
        await operator("get", "secrets", "-n", namespace)
    assert "Forbidden" in refused.value.stderr
    assert 'cannot list resource "secrets"' in refused.value.stderr


# --- a release that serves chosen namespaces only ------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def scoped_release(
    kube_cluster: LocalCluster, kubectl: Kubectl
) -> AsyncIterator[ChartRelease]:
    """A second release serving only `team-a` (its RBAC through a RoleBinding there)."""
    suffix = secrets.token_hex(3)
    watched, unwatched = f"team-a-{suffix}", f"team-b-{suffix}"
    for name in (watched, unwatched):
        await kubectl("create", "namespace", name)
    release = await helm_install(
        kube_cluster,
        f"scoped-{suffix}",
        f"scoped-{suffix}",
        {
            **LOCAL_VALUES,
            "nats.enabled": "false",
            "nats.externalUrl": "nats://127.0.0.1:4222",
            "operator.watchNamespaces": f"{{{watched}}}",
        },
        # The CRD belongs to the session release; a second copy would only be skipped.
        extra_args=["--skip-crds"],
    )
    yield release
    await helm_uninstall(kube_cluster, release)
    for name in (watched, unwatched):
        await kubectl("delete", "namespace", name, "--wait=false")


async def test_scoped_release_may_act_only_in_its_watched_namespace(
    scoped_release: ChartRelease,
    kube_cluster: LocalCluster,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    kubeconfig = await write_token_kubeconfig(
        kube_cluster, kubectl, scoped_release, tmp_path / "kubeconfig"
    )
    suffix = scoped_release.name.removeprefix("scoped-")
    watched, unwatched = f"team-a-{suffix}", f"team-b-{suffix}"
    binary = kube_cluster.kubectl_binary

    async def may(verb: str, resource: str, namespace: str | None) -> bool:
        return await can_i(kubeconfig, binary, verb, resource, "", namespace)

    # RoleBindings appear asynchronously to the authorizer's cache.
    await eventually(
        lambda: may("patch", "deployments.apps", watched),
        bool,
        timeout_seconds=30,
        what=f"the RoleBinding in {watched} to take effect",
    )
    assert await may("watch", RSVC, watched)
    assert await may("list", "namespaces", None)  # kopf resolves --namespace against them
    assert await may("watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not await may("list", RSVC, unwatched)
    assert not await may("patch", "deployments.apps", unwatched)
    assert not await may("list", RSVC, None)
