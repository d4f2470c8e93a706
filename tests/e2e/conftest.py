"""Fixtures for the e2e tier: one local Kubernetes control plane per session.

`kube_cluster` is a ponder.local.cluster.local_cluster.LocalCluster (kubeconfig, server, bin_dir
with helm, env()); `kubectl` is an async callable: `await kubectl("get", "nodes")` returns stdout
and raises CommandError carrying kubectl's stderr. Missing tools fail the session with a message
to run `make tools`; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ponder.local.cluster.commands import Kubectl
from ponder.local.cluster.local_cluster import LocalCluster, ToolsMissingError, local_cluster

# The chart installed once per session, and a kubeconfig with its ServiceAccount's token
# (registered here so that every module shares the one release).
from tests.e2e.chart_fixtures import operator_kubeconfig, ponder_release  # noqa: F401


@pytest_asyncio.fixture(scope="session")
async def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    """The local control plane with two 8-GPU nodes and one CPU node, shared by the session."""
    try:
        async with local_cluster(tmp_path_factory.mktemp("kube-cluster")) as cluster:
            yield cluster
    except ToolsMissingError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def kubectl(kube_cluster: LocalCluster) -> Kubectl:
    """kubectl bound to the session cluster's admin kubeconfig."""
    return kube_cluster.kubectl
