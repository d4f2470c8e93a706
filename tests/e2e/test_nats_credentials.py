"""NATS credentials issued by the operator, on the local control plane and a real nats-server.

The chart is installed with `nats.auth.enabled`; the operator runs with a token of that
release's ServiceAccount (so it has only the chart's rights: create Secrets, read its own trust
by name) and `--nats-trust-secret`. On its first start it creates the trust and the NATS
server's part of it; a nats-server is then started in operator mode on that trust, as the
chart's NATS pod would mount it. Each ReasoningService gets its own credentials Secret, owned
by it, mounted by its pods, and the users in it are confined to the service's own subjects.
The Secret says when its users expire; a pass that has nothing to renew writes nothing, one
deleted by hand is back at the next pass with the same users, and one the API server refuses
(a quota of no Secrets) is reported: Degraded, reason NatsCredentialsFailed, and a Warning.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import nats
import pytest
import pytest_asyncio

from ponder.api.subjects import ServiceSubjects
from ponder.local.cluster.commands import CommandError, Kubectl
from ponder.local.cluster.local_cluster import LocalCluster
from ponder.local.nats import NatsServer, nats_server
from ponder.local.processes import free_port
from ponder.operator.nats_credentials import EXPIRES_AT_ANNOTATION, ISSUED_AT_ANNOTATION
from ponder.operator.nats_trust import SCHEDULER_CREDS, WORKER_CREDS, NatsTrust
from tests.cluster.eventually import eventually
from tests.e2e.chart_fixtures import (
    LOCAL_VALUES,
    ChartRelease,
    chart_fullname,
    helm_install,
    helm_uninstall,
    write_token_kubeconfig,
)
from tests.e2e.test_operator import (
    SETTLE_SECONDS,
    TICK_SECONDS,
    OperatorProcess,
    apply,
    condition,
    get_json,
    service,
    wait_ready,
    warnings_about,
)

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def auth_release(kube_cluster: LocalCluster) -> AsyncIterator[ChartRelease]:
    name = f"na-{secrets.token_hex(3)}"
    values = {**LOCAL_VALUES, "nats.auth.enabled": "true"}
    release = await helm_install(kube_cluster, name, f"{name}-system", values)
    yield release
    await helm_uninstall(kube_cluster, release)


def trust_secret(release: ChartRelease) -> str:
    return f"{chart_fullname(release.name)}-nats-trust"


async def secret_data(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    """The Secret's data decoded; empty while it does not exist."""
    try:
        secret = json.loads(await kubectl("get", "secret", name, "-n", namespace, "-o", "json"))
    except CommandError as error:
        if "NotFound" in error.stderr:
            return {}
        raise
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


@pytest_asyncio.fixture(scope="module")
async def secured(
    auth_release: ChartRelease,
    kube_cluster: LocalCluster,
    kubectl: Kubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[OperatorProcess, Path, NatsServer, NatsTrust]]:
    """The operator (which creates the trust), then a NATS server on that trust."""
    folder = tmp_path_factory.mktemp("nats-credentials")
    kubeconfig = await write_token_kubeconfig(
        kube_cluster, kubectl, auth_release, folder / "kubeconfig"
    )
    namespace, name = auth_release.namespace, trust_secret(auth_release)
    port = free_port()
    operator = OperatorProcess(
        kubeconfig,
        f"nats://127.0.0.1:{port}",
        folder / "operator.log",
        extra_args=("--nats-trust-secret", f"{namespace}/{name}"),
    )
    await operator.start()
    try:
        data = await eventually(
            lambda: secret_data(kubectl, namespace, name),
            bool,
            timeout_seconds=SETTLE_SECONDS,
            what=f"the trust Secret {namespace}/{name}",
        )
        trust = NatsTrust.from_data(data)
        server_config = await secret_data(kubectl, namespace, f"{name}-server")
        assert server_config == {"trust.conf": trust.server_config()}
        async with nats_server(folder, port=port, trust=trust) as server:
            yield operator, kubeconfig, server, trust
    finally:
        await operator.stop()


async def test_each_service_gets_its_own_credentials_confined_to_its_subjects(
    secured: tuple[OperatorProcess, Path, NatsServer, NatsTrust],
    kubectl: Kubectl,
    kube_cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    _, operator_kubeconfig, server, _ = secured
    namespace = f"na-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", namespace)
    try:
        for name in ("alpha", "beta"):
            await apply(kubectl, namespace, service(name))
        ready = {name: await wait_ready(kubectl, namespace, name) for name in ("alpha", "beta")}

        creds: dict[str, dict[str, str]] = {}
        for name in ("alpha", "beta"):
            secret = json.loads(
                await kubectl("get", "secret", f"{name}-nats", "-n", namespace, "-o", "json")
            )
            owners = secret["metadata"]["ownerReferences"]
            assert [(o["kind"], o["uid"]) for o in owners] == [
                ("ReasoningService", ready[name]["metadata"]["uid"])
            ]
            creds[name] = {
                key: base64.b64decode(value).decode() for key, value in secret["data"].items()
            }
            assert set(creds[name]) == {SCHEDULER_CREDS, WORKER_CREDS}
        assert creds["alpha"][WORKER_CREDS] != creds["beta"][WORKER_CREDS]

        # Each pod mounts only its own role's key and finds it through PONDER_NATS_CREDS.
        for deployment, key in (
            ("alpha-workers", WORKER_CREDS),
            ("alpha-scheduler", SCHEDULER_CREDS),
        ):
            pod = json.loads(
                await kubectl("get", "deployment", deployment, "-n", namespace, "-o", "json")
            )["spec"]["template"]["spec"]
            volume = next(v for v in pod["volumes"] if v["name"] == "nats-creds")
            assert volume["secret"]["items"] == [{"key": key, "path": key}]

        # The operator's own user set up both streams (Ready needs them), and the server
        # confines the services' users: alpha's worker may hear alpha's cancels only.
        path = tmp_path / WORKER_CREDS
        path.write_text(creds["alpha"][WORKER_CREDS])
        alpha, beta = ServiceSubjects(namespace, "alpha"), ServiceSubjects(namespace, "beta")
        errors: list[str] = []

        async def record(error: Exception) -> None:
            errors.append(str(error).lower())

        client = await nats.connect(
            server.url,
            user_credentials=str(path),
            inbox_prefix=alpha.inbox_prefix,
            error_cb=record,
            allow_reconnect=False,
        )
        try:
            await client.subscribe(alpha.cancel)
            await client.subscribe(beta.results_wildcard)
            await client.flush()
            refused = f'permissions violation for subscription to "{beta.results_wildcard}"'
            await eventually(
                lambda: asyncio.sleep(0, errors),
                lambda seen: any(refused in text for text in seen),
                timeout_seconds=SETTLE_SECONDS,
                what="the server refusing beta's results to alpha's worker",
            )
            assert not any(alpha.cancel in text for text in errors)
        finally:
            await client.close()

        # The operator's token may create Secrets here but read none.
        as_operator = Kubectl(binary=kube_cluster.kubectl_binary, kubeconfig=operator_kubeconfig)
        with pytest.raises(CommandError) as forbidden:
            await as_operator("get", "secret", "alpha-nats", "-n", namespace)
        assert "Forbidden" in forbidden.value.stderr
    finally:
        await kubectl("delete", "namespace", namespace, "--wait=false")


async def test_a_deleted_secret_comes_back_and_a_refused_one_is_reported(
    secured: tuple[OperatorProcess, Path, NatsServer, NatsTrust], kubectl: Kubectl
) -> None:
    namespace = f"nc-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", namespace)
    try:
        await apply(kubectl, namespace, service("gamma"))
        await wait_ready(kubectl, namespace, "gamma")
        first = await get_json(kubectl, "secret", "gamma-nats", "-n", namespace)
        annotations = first["metadata"]["annotations"]
        issued = datetime.fromisoformat(annotations[ISSUED_AT_ANNOTATION])
        expires = datetime.fromisoformat(annotations[EXPIRES_AT_ANNOTATION])
        assert (expires - issued).total_seconds() == 24 * 3600  # the default lifetime

        # Passes with nothing to renew write the Secret unchanged: the API server stores nothing.
        await asyncio.sleep(4 * TICK_SECONDS)
        again = await get_json(kubectl, "secret", "gamma-nats", "-n", namespace)
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

        # Deleted by hand: back at a following pass, with the same users (no restart).
        await kubectl("delete", "secret", "gamma-nats", "-n", namespace)
        back = await eventually(
            lambda: secret_data(kubectl, namespace, "gamma-nats"),
            bool,
            timeout_seconds=SETTLE_SECONDS,
            what="the deleted credentials Secret back",
        )
        assert back == {k: base64.b64decode(v).decode() for k, v in first["data"].items()}

        # Refused (no Secrets allowed here): reported, then written once allowed.
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-secrets"},
            "spec": {"hard": {"count/secrets": "0"}},
        }
        await apply(kubectl, namespace, quota)
        await eventually(
            lambda: get_json(kubectl, "resourcequota", "no-secrets", "-n", namespace),
            lambda obj: "count/secrets" in obj.get("status", {}).get("hard", {}),
            timeout_seconds=SETTLE_SECONDS,
            what="the quota in force",
        )
        await kubectl("delete", "secret", "gamma-nats", "-n", namespace)
        reported = await eventually(
            lambda: get_json(kubectl, "rsvc", "gamma", "-n", namespace),
            lambda obj: condition(obj, "Degraded").get("reason") == "NatsCredentialsFailed",
            timeout_seconds=SETTLE_SECONDS,
            what="Degraded=NatsCredentialsFailed",
        )
        degraded = condition(reported, "Degraded")
        assert degraded["status"] == "True" and "quota" in degraded["message"], degraded
        await eventually(
            lambda: warnings_about(kubectl, namespace, "gamma"),
            lambda found: any(reason == "NatsCredentialsFailed" for reason, _ in found),
            timeout_seconds=SETTLE_SECONDS,
            what="a NatsCredentialsFailed Warning",
        )
        await kubectl("delete", "resourcequota", "no-secrets", "-n", namespace)
        await eventually(
            lambda: secret_data(kubectl, namespace, "gamma-nats"),
            bool,
            timeout_seconds=SETTLE_SECONDS,
            what="the credentials Secret written once allowed",
        )
        healed = await eventually(
            lambda: get_json(kubectl, "rsvc", "gamma", "-n", namespace),
            lambda obj: condition(obj, "Degraded").get("status") == "False",
            timeout_seconds=SETTLE_SECONDS,
            what="Degraded=False again",
        )
        assert condition(healed, "Degraded")["reason"] == "AsExpected"
    finally:
        await kubectl("delete", "namespace", namespace, "--wait=false")
