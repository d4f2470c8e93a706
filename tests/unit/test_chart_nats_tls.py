"""The chart's `nats.tls.enabled`: NATS requires TLS with a certificate for its Service's names,
from cert-manager when its CRDs exist (`helm template --api-versions cert-manager.io/v1`), else
generated at install; the operator gets only the CA and connects with `tls://`.

The generated certificate is checked the way a program uses it: an in-process TLS server
presents it and `ponder.api.nats_tls.client_tls` with the rendered CA verifies it under the
host name of the URL the operator is given.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from ponder.api.nats_tls import client_tls
from ponder.api.settings import NATS_CA
from tests.unit import test_chart
from tests.unit.test_chart import (
    CHART,
    EXTERNAL_NATS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Manifest,
    env_value,
    one,
    operator_container,
    run_helm,
    set_flags,
)

helm_binary = test_chart.helm_binary  # the chart tests' fixtures: the pinned helm, its homes
helm_env = test_chart.helm_env

NATS = f"{RELEASE}-nats"
TLS_SECRET = f"{NATS}-tls"
NATS_HOST = f"{NATS}.{NAMESPACE}.svc"
CERT_MANAGER = "cert-manager.io/v1"
HANDSHAKE_SECONDS = 30.0


def render_with(
    helm: Path, env: dict[str, str], values: dict[str, str], *extra: str
) -> list[Manifest]:
    result = run_helm(
        helm, env, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        *set_flags(values), *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def tls_sets(helm_binary: Path, helm_env: dict[str, str]) -> dict[str, list[Manifest]]:
    """TLS on: with auth and without, with cert-manager's API and without."""
    rendered = {}
    for name in ("nats-tls", "nats-tls-auth"):
        rendered[name] = render_with(helm_binary, helm_env, VALUE_SETS[name])
        rendered[f"{name}-cert-manager"] = render_with(
            helm_binary, helm_env, VALUE_SETS[name], "--api-versions", CERT_MANAGER
        )
    return rendered


def nats_pod(manifests: Sequence[Manifest]) -> Manifest:
    spec: Manifest = one(manifests, "StatefulSet", NATS)["spec"]["template"]["spec"]
    return spec


ALL_SETS = ("nats-tls", "nats-tls-auth", "nats-tls-cert-manager", "nats-tls-auth-cert-manager")


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_nats_requires_tls_with_the_certificate_beside_its_config(
    tls_sets: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = tls_sets[value_set]
    pod = nats_pod(manifests)
    (container,) = pod["containers"]
    assert "--config=/etc/nats/nats.conf" in container["args"]
    assert not any("trust.conf" in arg for arg in container["args"])
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount == {"name": "config", "mountPath": "/etc/nats", "readOnly": True}
    (volume,) = (v for v in pod["volumes"] if v["name"] == "config")
    sources = volume["projected"]["sources"]
    assert {"configMap": {"name": f"{NATS}-config"}} in sources
    keys = [{"key": key, "path": key} for key in ("tls.crt", "tls.key")]
    assert {"secret": {"name": TLS_SECRET, "items": keys}} in sources  # never ca.crt's key
    config = one(manifests, "ConfigMap", f"{NATS}-config")["data"]["nats.conf"]
    assert 'cert_file: "/etc/nats/tls.crt"' in config
    assert 'key_file: "/etc/nats/tls.key"' in config
    with_auth = "auth" in value_set
    assert ('include "trust.conf"' in config) is with_auth
    trust = {"secret": {"name": f"{NATS}-trust-server"}}
    assert (trust in sources) is with_auth


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_the_operator_mounts_only_the_ca_and_connects_with_tls(
    tls_sets: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = tls_sets[value_set]
    container = operator_container(manifests)
    assert env_value(container, "PONDER_NATS_URL") == f"tls://{NATS_HOST}:4222"
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "nats-ca")
    assert f"{NATS_CA.flag}={mount['mountPath']}/ca.crt" in container["args"]
    pod = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    (volume,) = (v for v in pod["volumes"] if v["name"] == "nats-ca")
    assert volume["secret"] == {
        "secretName": TLS_SECRET,
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }


@pytest.mark.parametrize("value_set", ["nats-tls", "nats-tls-auth"])
async def test_without_cert_manager_the_generated_certificate_verifies_as_the_url_names_it(
    tls_sets: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = tls_sets[value_set]
    assert not [m for m in manifests if m["apiVersion"] == CERT_MANAGER]
    secret = one(manifests, "Secret", TLS_SECRET)
    assert secret["type"] == "kubernetes.io/tls"
    pem = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    host = urlparse(env_value(operator_container(manifests), "PONDER_NATS_URL")).hostname
    assert host is not None
    with tempfile.TemporaryDirectory() as folder:
        files = {key: Path(folder) / key for key in pem}
        for key, path in files.items():
            path.write_bytes(pem[key])
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(files["tls.crt"], files["tls.key"])
        client = client_tls(files["ca.crt"])
        assert client is not None
        for name in (host, f"{host}.cluster.local", f"{NATS}-0.{host}"):
            assert await handshake(server, client, name) == b"ok\n"
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(server, client, "nats.elsewhere.svc")


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> bytes:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(reply, "127.0.0.1", 0, ssl=server)
    async with listener, asyncio.timeout(HANDSHAKE_SECONDS):
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=host
        )
        line = await reader.readline()
        writer.close()
        return line


@pytest.mark.parametrize("value_set", ["nats-tls-cert-manager", "nats-tls-auth-cert-manager"])
def test_with_cert_manager_a_release_ca_issues_the_server_certificate(
    tls_sets: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = tls_sets[value_set]
    assert not [m for m in manifests if m["kind"] == "Secret"]  # cert-manager writes it
    root = one(manifests, "Issuer", f"{NATS}-selfsigned")
    assert root["spec"] == {"selfSigned": {}}
    ca = one(manifests, "Certificate", f"{NATS}-ca")["spec"]
    assert ca["isCA"] is True
    assert ca["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "Issuer",
        "name": root["metadata"]["name"],
    }
    issuer = one(manifests, "Issuer", f"{NATS}-ca")
    assert issuer["spec"] == {"ca": {"secretName": ca["secretName"]}}
    server = one(manifests, "Certificate", f"{NATS}-server")["spec"]
    assert server["secretName"] == TLS_SECRET
    assert server["issuerRef"]["name"] == issuer["metadata"]["name"]
    assert "server auth" in server["usages"]
    assert {NATS_HOST, f"{NATS_HOST}.cluster.local", f"*.{NATS_HOST}"} <= set(server["dnsNames"])
    for certificate in (ca, server):
        assert certificate["issuerRef"]["kind"] == "Issuer"  # the release's own, namespaced


def test_tls_for_an_external_nats_is_refused_with_what_to_do(
    helm_binary: Path, helm_env: dict[str, str]
) -> None:
    values = {
        "nats.enabled": "false",
        "nats.externalUrl": EXTERNAL_NATS,
        "nats.tls.enabled": "true",
    }
    result = run_helm(helm_binary, helm_env, "template", RELEASE, str(CHART), *set_flags(values))
    assert result.returncode != 0
    assert "--nats-ca" in result.stderr and "nats.enabled" in result.stderr


def test_without_tls_nothing_mentions_it(helm_binary: Path, helm_env: dict[str, str]) -> None:
    for values in ({}, VALUE_SETS["nats-auth"]):
        manifests = render_with(helm_binary, helm_env, values, "--api-versions", CERT_MANAGER)
        assert TLS_SECRET not in str(manifests) and NATS_CA.flag not in str(manifests)
        assert env_value(operator_container(manifests), "PONDER_NATS_URL").startswith("nats://")
