"""Fixtures of the chaos tier: a NATS server, and a three-node NATS cluster, that a scenario may
SIGKILL and start again. The vLLM server is the session's (tests/conftest.py), shared with the
integration tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from ponder.local.nats import NatsCluster, nats_cluster
from tests.chaos.faults import RestartableNats


@pytest_asyncio.fixture(scope="module")
async def chaos_nats(
    stack_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RestartableNats]:
    """A nats-server with JetStream of this module's own, on a store kept across restarts."""
    server = RestartableNats(stack_log_dir, tmp_path_factory.mktemp("chaos-nats-store"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module")
async def chaos_cluster(
    stack_log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[NatsCluster]:
    """Three nats-servers with JetStream routed as one cluster, of this module's own; a member
    may be SIGKILLed and started again on its store."""
    store = tmp_path_factory.mktemp("chaos-nats-cluster")
    async with nats_cluster(3, stack_log_dir, store_root=store) as cluster:
        yield cluster


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with no timeout of its own: the load bounds every query."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session
