"""Session-wide fixtures that start real parts once, with the launchers of `ponder.local`
(docs/architecture.md, "The local stack")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ponder.local.nats import NatsServer, nats_server


@pytest.fixture(scope="session")
def stack_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where launched processes write their logs (kept by pytest for a failed run)."""
    return tmp_path_factory.mktemp("stack-logs")


@pytest_asyncio.fixture(scope="session")
async def nats(stack_log_dir: Path) -> AsyncIterator[NatsServer]:
    """One real nats-server with JetStream for the whole session."""
    async with nats_server(stack_log_dir) as server:
        yield server
