"""NATS over TLS with the operator, on the local control plane and a real nats-server that
requires TLS (`nats_server(tls=True)`, as the chart's NATS runs with `nats.tls.enabled`).

The operator is given the `tls://` URL and the CA (`--nats-ca`), as the chart gives them: it
sets up a service's stream over TLS (Ready needs it), copies the CA into the service's ConfigMap,
and points the scheduler and the worker loop at that copy.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from ponder.api.nats_tls import NATS_CA_FILE, client_tls
from ponder.api.settings import NATS_CA
from ponder.api.subjects import ServiceSubjects
from ponder.local.cluster.commands import Kubectl
from ponder.local.nats import NatsServer, nats_server
from tests.e2e.test_operator import OperatorProcess, apply, get_json, service, wait_ready

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def tls_operator(
    operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[OperatorProcess, NatsServer]]:
    """A nats-server that requires TLS, and an operator that trusts its CA."""
    folder = tmp_path_factory.mktemp("nats-tls")
    async with nats_server(folder, tls=True) as server:
        assert server.ca_file is not None and server.url.startswith("tls://")
        operator = OperatorProcess(
            operator_kubeconfig,
            server.url,
            folder / "operator.log",
            extra_args=(NATS_CA.flag, str(server.ca_file)),
        )
        await operator.start()
        try:
            yield operator, server
        finally:
            await operator.stop()


async def test_a_service_is_ready_over_tls_and_its_pods_verify_nats_with_the_ca(
    tls_operator: tuple[OperatorProcess, NatsServer], kubectl: Kubectl
) -> None:
    _, server = tls_operator
    assert server.ca_file is not None
    namespace = f"tls-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", namespace)
    try:
        await apply(kubectl, namespace, service("gamma"))
        await wait_ready(kubectl, namespace, "gamma")

        config = await get_json(kubectl, "configmap", "gamma-config", "-n", namespace)
        assert config["data"][NATS_CA_FILE] == server.ca_file.read_text()
        for deployment, container_name in (
            ("gamma-scheduler", "scheduler"),
            ("gamma-workers", "worker"),
        ):
            pod = (await get_json(kubectl, "deployment", deployment, "-n", namespace))["spec"][
                "template"
            ]["spec"]
            container = next(c for c in pod["containers"] if c["name"] == container_name)
            mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env[NATS_CA.env] == f"{mount['mountPath']}/{NATS_CA_FILE}"

        # The operator set the stream up over TLS; a client with the same CA finds it.
        client = await nats.connect(
            server.url, tls=client_tls(server.ca_file), allow_reconnect=False
        )
        try:
            stream = ServiceSubjects(namespace, "gamma").stream
            info = await client.jetstream(timeout=10).stream_info(stream)
            assert info.config.name == stream
        finally:
            await client.close()
    finally:
        await kubectl("delete", "namespace", namespace, "--wait=false")
