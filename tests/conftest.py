"""Session-wide fixtures that start real parts once, with the launchers of `ponder.local`
(docs/architecture.md, "The local stack"): NATS, the vLLM server that the integration and
chaos tiers share (tests/integration/conftest.py says what it serves), and the local Kubernetes
control plane with the chart installed that the e2e and chaos tiers share.

`kube_cluster` is a ponder.local.cluster.local_cluster.LocalCluster (kubeconfig, server, bin_dir
with helm, env()); `kubectl` is an async callable: `await kubectl("get", "nodes")` returns stdout
and raises CommandError carrying kubectl's stderr. Missing tools fail the session with a message
to run `make tools`; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ponder.local import shipped
from ponder.local.cluster.commands import Kubectl
from ponder.local.cluster.local_cluster import LocalCluster, ToolsMissingError, local_cluster
from ponder.local.nats import NatsServer, nats_server
from ponder.local.vllm import VllmServer, vllm_server

# The chart installed once per session, and a kubeconfig with its ServiceAccount's token
# (registered here so that every module shares the one release).
from tests.e2e.chart_fixtures import operator_kubeconfig, ponder_release  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL_DIR = REPO_ROOT / shipped.MODEL_PATH
CHAT_TEMPLATE = REPO_ROOT / "bench" / "arith_chat_template.jinja"
"""Renders a user question as the task prompt and continues a final assistant message."""


def shipped_model_present() -> bool:
    return (SHIPPED_MODEL_DIR / "model.safetensors").is_file()


@pytest.fixture(scope="session")
def stack_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where launched processes write their logs (kept by pytest for a failed run)."""
    return tmp_path_factory.mktemp("stack-logs")


@pytest_asyncio.fixture(scope="session")
async def nats(stack_log_dir: Path) -> AsyncIterator[NatsServer]:
    """One real nats-server with JetStream for the whole session."""
    async with nats_server(stack_log_dir) as server:
        yield server


@pytest.fixture(scope="session")
def arith_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model, or its format with random weights when none is committed."""
    if shipped_model_present():
        return SHIPPED_MODEL_DIR
    from models.arith.model import save_untrained_model  # torch, only when it is needed

    return save_untrained_model(tmp_path_factory.mktemp("untrained-arith"))


@pytest_asyncio.fixture(scope="session")
async def vllm(arith_model_dir: Path, stack_log_dir: Path) -> AsyncIterator[VllmServer]:
    """One real vLLM server (OpenAI API) for the whole session."""
    async with vllm_server(
        arith_model_dir, log_dir=stack_log_dir, extra_args=["--chat-template", str(CHAT_TEMPLATE)]
    ) as server:
        yield server


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
