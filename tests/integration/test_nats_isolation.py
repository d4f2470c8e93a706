"""NATS isolation between services on a real nats-server with authentication (operator mode,
the trust and credentials of `ponder.operator.nats_trust`), two real data planes and vLLM.

Each service's scheduler and worker hold only their own credentials. With service A's worker
credentials a client is refused by the server, as a permissions violation, when it pulls B's
jobs, reads B's results or replies, publishes B's cancels or A's own stats (only schedulers
publish those); a client without credentials cannot connect at all. Both services answer
before and after.

Every test runs twice: on plain TCP, and on a server that also requires TLS (the chart's
`nats.tls.enabled`), where every program verifies the server with the CA (`--nats-ca`). There a
client without the CA is refused (certificate verify failed) and a plain-text one gets nothing
past the server's INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import pytest
import pytest_asyncio

from ponder.api.nats_tls import client_tls
from ponder.api.subjects import ServiceSubjects
from ponder.local.dataplane import Dataplane, local_dataplane
from ponder.local.nats import NatsServer, nats_server
from ponder.local.vllm import VllmServer
from ponder.operator.nats_trust import NatsTrust

pytestmark = pytest.mark.vllm

SETTLE_SECONDS = 60.0


@pytest_asyncio.fixture(scope="module", params=[False, True], ids=["plaintext", "tls"])
async def secured_nats(
    stack_log_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[NatsServer]:
    trust = NatsTrust.generate(int(time.time()))
    async with nats_server(stack_log_dir, trust=trust, tls=request.param) as server:
        yield server


TLS_ONLY = pytest.mark.parametrize("secured_nats", [True], ids=["tls"], indirect=True)
"""A test of what only a server that requires TLS does: run on the `tls` server alone."""


@pytest_asyncio.fixture(scope="module")
async def planes(
    secured_nats: NatsServer, vllm: VllmServer, stack_log_dir: Path
) -> AsyncIterator[tuple[Dataplane, Dataplane]]:
    async with contextlib.AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(
                local_dataplane(
                    name=name,
                    nats_url=secured_nats.url,
                    nats_auth=secured_nats.auth,
                    nats_ca=secured_nats.ca_file,
                    vllm_url=vllm.base_url,
                    served_name=vllm.served_name,
                    workers=1,
                    scheduler_id=f"{name}-scheduler",
                    log_dir=stack_log_dir,
                )
            )
            for name in ("tenant-a", "tenant-b")
        ]
        yield started[0], started[1]


async def answer(plane: Dataplane) -> dict[str, Any]:
    body = {
        "model": plane.config.model,
        "prompt": "Q:12+34 A:",
        "max_tokens": 8,
        "ponder": {"strategy": "self-consistency", "branches": 2},
    }
    timeout = aiohttp.ClientTimeout(total=SETTLE_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{plane.base_url}/v1/completions", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


class Violations:
    """The errors the server sends a connection (nats-py hands them to `error_cb`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, error: Exception) -> None:
        self.seen.append(str(error))

    async def wait_for(self, subject: str) -> str:
        async def named() -> str:
            while True:
                # nats-py hands on the server's -ERR line lower-cased.
                for text in self.seen:
                    said = text.lower()
                    if "permissions violation" in said and f'"{subject.lower()}"' in said:
                        return text
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(named(), SETTLE_SECONDS)


def worker_creds(plane: Dataplane) -> str:
    """The credentials file the plane's workers hold (what the operator's Secret would)."""
    args = plane.worker_extra_args
    return args[args.index("--nats-creds") + 1]


@pytest_asyncio.fixture
async def as_worker_of_a(
    planes: tuple[Dataplane, Dataplane], secured_nats: NatsServer
) -> AsyncIterator[tuple[nats.NATS, Violations]]:
    violations = Violations()
    client = await nats.connect(
        secured_nats.url,
        user_credentials=worker_creds(planes[0]),
        inbox_prefix=planes[0].subjects.inbox_prefix,
        error_cb=violations.record,
        allow_reconnect=False,
        tls=client_tls(secured_nats.ca_file),
    )
    yield client, violations
    await client.close()


async def test_both_services_answer_with_only_their_own_credentials(
    planes: tuple[Dataplane, Dataplane],
) -> None:
    for plane in planes:
        reply = await answer(plane)
        assert reply["choices"][0]["text"], reply
        assert reply["usage"]["completion_tokens"] > 0


async def test_a_client_without_credentials_cannot_connect(secured_nats: NatsServer) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(
            secured_nats.url,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            tls=client_tls(secured_nats.ca_file),
        )


@TLS_ONLY
async def test_a_client_without_the_ca_is_refused(
    planes: tuple[Dataplane, Dataplane], secured_nats: NatsServer
) -> None:
    # The system's CAs (nats-py's default) do not know the server's throwaway CA.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await nats.connect(
            secured_nats.url,
            user_credentials=worker_creds(planes[0]),
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )


@TLS_ONLY
async def test_a_plain_text_client_gets_nothing_past_the_server_info(
    planes: tuple[Dataplane, Dataplane], secured_nats: NatsServer
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", secured_nats.port)
    try:
        async with asyncio.timeout(SETTLE_SECONDS):
            info = await reader.readline()
            assert info.startswith(b"INFO ")
            assert json.loads(info.removeprefix(b"INFO "))["tls_required"] is True
            # Credentials are beside the point: the server never reads a plain-text CONNECT.
            writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            await writer.drain()
            rest = await reader.read()  # until the server hangs up
    finally:
        writer.close()
    assert b"PONG" not in rest and b"+OK" not in rest
    # Refused, and the services on the same server are untouched.
    for plane in planes:
        reply = await answer(plane)
        assert reply["choices"][0]["text"], reply


Attempt = Callable[[nats.NATS, ServiceSubjects, ServiceSubjects], Awaitable[str]]


async def pull_b_jobs(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    subject = f"$JS.API.CONSUMER.MSG.NEXT.{other.stream}.{other.consumer}"
    await client.publish(subject, b'{"batch": 1, "expires": 1000000000}', reply=client.new_inbox())
    return subject


async def read_b_results(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    await client.subscribe(other.results_wildcard)
    return other.results_wildcard


async def read_b_replies(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    subject = f"{other.inbox_prefix}.>"
    await client.subscribe(subject)
    return subject


async def read_every_subject(
    client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects
) -> str:
    await client.subscribe("ponder.>")
    return "ponder.>"


async def cancel_b_queries(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    await client.publish(other.cancel, b'{"query_id": "q"}')
    return other.cancel


async def forge_own_stats(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    await client.publish(own.stats, b"{}")
    return own.stats


async def publish_b_jobs(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    await client.publish(other.jobs, b"{}")
    return other.jobs


async def delete_b_stream(client: nats.NATS, own: ServiceSubjects, other: ServiceSubjects) -> str:
    subject = f"$JS.API.STREAM.DELETE.{other.stream}"
    await client.publish(subject, b"", reply=client.new_inbox())
    return subject


@pytest.mark.parametrize(
    "attempt",
    [
        pull_b_jobs,
        read_b_results,
        read_b_replies,
        read_every_subject,
        cancel_b_queries,
        forge_own_stats,
        publish_b_jobs,
        delete_b_stream,
    ],
)
async def test_a_worker_of_one_service_is_refused_by_the_server(
    planes: tuple[Dataplane, Dataplane],
    as_worker_of_a: tuple[nats.NATS, Violations],
    attempt: Attempt,
) -> None:
    client, violations = as_worker_of_a
    subject = await attempt(client, planes[0].subjects, planes[1].subjects)
    await client.flush()
    await violations.wait_for(subject)
    # Refused, not disconnected, and the other service is untouched.
    assert client.is_connected
    reply = await answer(planes[1])
    assert reply["choices"][0]["text"], reply
