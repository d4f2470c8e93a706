"""TLS to NATS: `--nats-ca` makes a client trust only that CA and check the server's host name,
and the operator hands its CA to every pod it renders; without a CA nothing changes.

The handshakes run in-process (an asyncio TLS server on 127.0.0.1 with a throwaway CA's
certificate); tests/integration/test_nats_isolation.py runs them against a real nats-server.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import ponder.scheduler.config as scheduler_config
import ponder.workers.config as workers_config
from ponder.api.nats_tls import NATS_CA_FILE, client_tls
from ponder.api.settings import NATS_CA
from ponder.local.certificates import ServerCertificate, issue_server_certificate
from ponder.operator import render
from ponder.operator.service_config import service_config_from_spec
from tests.unit.test_render import NATS, OWNER, spec_of

HANDSHAKE_SECONDS = 30.0


@pytest.fixture
def certificate(tmp_path: Path) -> ServerCertificate:
    return issue_server_certificate(tmp_path)


@pytest_asyncio.fixture
async def tls_port(certificate: ServerCertificate) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 presenting `certificate`; it says hello and hangs up."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def greeting(port: int, context: ssl.SSLContext | None, host: str) -> bytes:
    """The first line from the TLS server, checked as `host` (what the client's URL names)."""
    async with asyncio.timeout(HANDSHAKE_SECONDS):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context or ssl.create_default_context(), server_hostname=host
        )
        line = await reader.readline()
        writer.close()
        return line


def test_without_a_ca_there_is_no_tls_context() -> None:
    assert client_tls(None) is None


def test_a_ca_bundle_makes_a_verifying_context(certificate: ServerCertificate) -> None:
    context = client_tls(certificate.ca_file)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    (ca,) = context.get_ca_certs()  # that CA alone, not the system's
    assert ca["subject"] == ca["issuer"]


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_missing_or_bad_ca_file_is_named(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "ca.crt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=rf"--nats-ca {path}: cannot load a PEM CA bundle"):
        client_tls(path)


async def test_a_client_with_the_ca_verifies_the_server(
    certificate: ServerCertificate, tls_port: int
) -> None:
    assert await greeting(tls_port, client_tls(certificate.ca_file), "127.0.0.1") == b"hello\n"
    assert await greeting(tls_port, client_tls(certificate.ca_file), "localhost") == b"hello\n"


async def test_a_client_without_the_ca_is_refused(tls_port: int) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await greeting(tls_port, None, "127.0.0.1")


async def test_a_name_the_certificate_does_not_hold_is_refused(
    certificate: ServerCertificate, tls_port: int
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)hostname mismatch"):
        await greeting(tls_port, client_tls(certificate.ca_file), "nats.elsewhere.svc")


async def test_another_ca_does_not_verify_the_server(tmp_path: Path, tls_port: int) -> None:
    other = tmp_path / "other"
    other.mkdir()
    stranger = issue_server_certificate(other)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await greeting(tls_port, client_tls(stranger.ca_file), "127.0.0.1")


def test_the_server_key_is_readable_by_its_owner_only(certificate: ServerCertificate) -> None:
    assert certificate.key_file.stat().st_mode & 0o077 == 0


# --- what the operator renders -----------------------------------------------------------------

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def children(nats_ca: str | None) -> dict[str, dict[str, Any]]:
    spec = spec_of()
    config = service_config_from_spec(OWNER.namespace, OWNER.name, spec, NATS)
    rendered = render.render_children_of_config(OWNER, spec, 2, config, None, nats_ca)
    return {f"{child['kind']}/{child['metadata']['name']}": child for child in rendered}


def container_of(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    (found,) = (c for c in pod["containers"] if c["name"] == name)
    return found


def test_the_service_configmap_carries_the_ca() -> None:
    data = children(CA_PEM)["ConfigMap/math-config"]["data"]
    assert data[NATS_CA_FILE] == CA_PEM
    assert render.CONFIG_FILE in data


@pytest.mark.parametrize(
    ("deployment", "container", "options"),
    [
        ("Deployment/math-scheduler", "scheduler", scheduler_config.OPTIONS),
        ("Deployment/math-workers", "worker", workers_config.OPTIONS),
    ],
)
def test_each_nats_client_finds_the_ca_in_its_config_mount(
    deployment: str, container: str, options: tuple[Any, ...]
) -> None:
    found = container_of(children(CA_PEM)[deployment], container)
    env = {e["name"]: e.get("value") for e in found["env"]}
    (mount,) = (m for m in found["volumeMounts"] if m["name"] == "config")
    assert env[NATS_CA.env] == f"{mount['mountPath']}/{NATS_CA_FILE}"
    assert NATS_CA in options  # the program reads that variable


def test_the_engine_does_not_talk_to_nats() -> None:
    engine = container_of(children(CA_PEM)["Deployment/math-workers"], "engine")
    assert NATS_CA.env not in str(engine.get("env", []))


def test_a_new_ca_rolls_the_pods() -> None:
    def hashes(nats_ca: str | None) -> set[str]:
        return {
            child["spec"]["template"]["metadata"]["annotations"][render.CONFIG_HASH_ANNOTATION]
            for child in children(nats_ca).values()
            if child["kind"] == "Deployment"
        }

    assert len(hashes(CA_PEM)) == 1
    assert hashes(CA_PEM) != hashes(CA_PEM.replace("MIIB", "MIIC")) != hashes(None)


def test_without_a_ca_no_child_mentions_it() -> None:
    for child in children(None).values():
        assert NATS_CA_FILE not in str(child) and NATS_CA.env not in str(child)
