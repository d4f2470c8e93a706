"""The operator's NATS pool: one unreachable server never holds up another, a first connect is
bounded, and an unreachable URL is reported at once until it may be tried again (real
nats-server on loopback, and a TCP server that accepts and never speaks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from ponder.local.nats import NatsServer
from ponder.operator.runtime import NatsPool, NatsUnreachable

WAIT_SECONDS = 60.0
"""Bounds every wait here; only a hang comes near it."""


@dataclass
class SilentServer:
    """Accepts TCP connections and never sends NATS's INFO: a client waits on it forever."""

    url: str
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0


@pytest_asyncio.fixture
async def silent() -> AsyncIterator[SilentServer]:
    writers: list[asyncio.StreamWriter] = []
    server_box: list[SilentServer] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        server_box[0].connections += 1
        server_box[0].accepted.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server_box.append(SilentServer(f"nats://127.0.0.1:{port}"))
    try:
        yield server_box[0]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def no_subscription(client: NatsClient) -> Subscription:
    return await client.subscribe("ponder.test.nothing")


async def test_a_hanging_server_never_holds_up_another_url(
    silent: SilentServer, nats: NatsServer
) -> None:
    pool = NatsPool(on_connect=no_subscription, first_connect_seconds=WAIT_SECONDS * 2)
    hanging = asyncio.create_task(pool.jetstream(silent.url))
    try:
        await asyncio.wait_for(silent.accepted.wait(), WAIT_SECONDS)
        # The silent server's connect is in progress (and cannot end for minutes): another URL
        # connects all the same.
        js = await asyncio.wait_for(pool.jetstream(nats.url), WAIT_SECONDS)
        await js.account_info()
        assert not hanging.done()
    finally:
        hanging.cancel()
        with contextlib.suppress(asyncio.CancelledError, NatsUnreachable):
            await hanging
        await pool.close()


async def test_a_first_connect_is_bounded_then_refused_at_once_until_retry(
    silent: SilentServer,
) -> None:
    pool = NatsPool(
        on_connect=no_subscription, first_connect_seconds=1.0, retry_after_seconds=WAIT_SECONDS
    )
    with pytest.raises(NatsUnreachable, match="no connection within 1 s"):
        await asyncio.wait_for(pool.jetstream(silent.url), WAIT_SECONDS)
    tried = silent.connections
    assert tried >= 1
    # Within the retry period the pool answers from what it learnt: no new connection.
    with pytest.raises(NatsUnreachable, match=silent.url):
        await asyncio.wait_for(pool.jetstream(silent.url), WAIT_SECONDS)
    assert silent.connections == tried
    await pool.close()
