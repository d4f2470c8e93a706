"""Session fixtures that install the Helm chart into the local control plane.

The chart's ServiceAccount is what the operator runs as in a real cluster. Here the operator runs
as a local process, so `operator_kubeconfig` hands it a kubeconfig holding a token of that
ServiceAccount (`kubectl create token`): the operator then has exactly the chart's permissions,
and a missing rule fails the operator tests the way it would fail in production.

Use them from a test module or conftest of tests/e2e (they need `kube_cluster` and `kubectl`
from tests/e2e/conftest.py):

    from tests.e2e.chart_fixtures import operator_kubeconfig, ponder_release  # noqa: F401

    async def test_x(operator_kubeconfig: Path, ponder_release: ChartRelease) -> None:
        env = {"KUBECONFIG": str(operator_kubeconfig)}   # run the operator with this

`ponder_release` is installed once per session as release `ponder` in namespace `ponder-system`
with the chart's NATS on an emptyDir (kwok only pretends to run pods; nothing provisions volumes).
The operator's NATS URL comes from the test's own NATS, not from the release.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from ponder.local.cluster.commands import Kubectl, run_command
from ponder.local.cluster.local_cluster import LocalCluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "ponder"
RELEASE_NAME = "ponder"
RELEASE_NAMESPACE = "ponder-system"
# Values for the local control plane: no volume provisioner here, so NATS keeps JetStream on an
# emptyDir; everything else is the chart's defaults.
LOCAL_VALUES: dict[str, str] = {"nats.persistence.enabled": "false"}
INSTALL_TIMEOUT_SECONDS = 180
TOKEN_DURATION = "4h"


@dataclass(frozen=True)
class ChartRelease:
    """A helm release of charts/ponder in the local cluster."""

    name: str
    namespace: str
    service_account: str
    install_output: str  # what `helm install` printed, NOTES.txt included

    @property
    def user(self) -> str:
        """The ServiceAccount's user name, as RBAC and audit logs see it."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def chart_fullname(release: str) -> str:
    """`ponder.fullname` of _helpers.tpl: the ServiceAccount's and the RBAC objects' name."""
    fullname = release if "ponder" in release else f"{release}-ponder"
    return fullname[:63].rstrip("-")


def set_flags(values: Mapping[str, str]) -> list[str]:
    return [flag for key, value in values.items() for flag in ("--set", f"{key}={value}")]


async def helm_install(
    cluster: LocalCluster,
    name: str,
    namespace: str,
    values: Mapping[str, str],
    extra_args: Sequence[str] = (),
) -> ChartRelease:
    """`helm install --wait` the chart; return the release once its pods are ready."""
    output = await run_command(
        [
            str(cluster.bin_dir / "helm"),
            "install",
            name,
            str(CHART),
            "--namespace",
            namespace,
            "--create-namespace",
            "--wait",
            "--timeout",
            f"{INSTALL_TIMEOUT_SECONDS}s",
            *set_flags(values),
            *extra_args,
        ],
        env=cluster.env(),
        timeout_seconds=INSTALL_TIMEOUT_SECONDS + 30,
    )
    return ChartRelease(
        name=name,
        namespace=namespace,
        service_account=chart_fullname(name),
        install_output=output,
    )


async def helm_uninstall(cluster: LocalCluster, release: ChartRelease) -> None:
    await run_command(
        [
            str(cluster.bin_dir / "helm"),
            "uninstall",
            release.name,
            "--namespace",
            release.namespace,
            "--wait",
        ],
        env=cluster.env(),
        timeout_seconds=120,
    )


async def service_account_token(kubectl: Kubectl, release: ChartRelease) -> str:
    """A bound token of the release's ServiceAccount (TokenRequest API)."""
    token = await kubectl(
        "create",
        "token",
        release.service_account,
        "--namespace",
        release.namespace,
        f"--duration={TOKEN_DURATION}",
    )
    return token.strip()


def token_kubeconfig(admin_kubeconfig: Path, token: str, namespace: str) -> dict[str, Any]:
    """A kubeconfig for the same API server (and CA) that authenticates with `token` only."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context_name = admin["current-context"]
    context = next(c["context"] for c in admin["contexts"] if c["name"] == context_name)
    cluster = dict(next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"]))
    authority = cluster.get("certificate-authority")
    if authority and not Path(authority).is_absolute():
        cluster["certificate-authority"] = str(admin_kubeconfig.parent / authority)
    user = "ponder-operator"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context["cluster"], "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": context["cluster"], "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }


async def write_token_kubeconfig(
    cluster: LocalCluster, kubectl: Kubectl, release: ChartRelease, path: Path
) -> Path:
    """Write a kubeconfig acting as the release's ServiceAccount to `path`."""
    token = await service_account_token(kubectl, release)
    config = await asyncio.to_thread(token_kubeconfig, cluster.kubeconfig, token, "default")
    await asyncio.to_thread(path.write_text, yaml.safe_dump(config, sort_keys=False))
    await asyncio.to_thread(path.chmod, 0o600)
    return path


@pytest_asyncio.fixture(scope="session")
async def ponder_release(kube_cluster: LocalCluster) -> ChartRelease:
    """The chart installed once per session (release `ponder`, namespace `ponder-system`)."""
    return await helm_install(kube_cluster, RELEASE_NAME, RELEASE_NAMESPACE, LOCAL_VALUES)


@pytest_asyncio.fixture(scope="session")
async def operator_kubeconfig(
    kube_cluster: LocalCluster,
    kubectl: Kubectl,
    ponder_release: ChartRelease,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount: the operator's exact rights."""
    path = tmp_path_factory.mktemp("operator-credentials") / "kubeconfig"
    return await write_token_kubeconfig(kube_cluster, kubectl, ponder_release, path)
