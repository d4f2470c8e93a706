"""The faults the chaos scenarios inject."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from ponder.local.nats import NatsServer, nats_server
from ponder.local.processes import free_port


def sigkill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL `process` and its whole group (a crashed pod: no drain, no goodbye); reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


class RestartableNats:
    """A nats-server that can be SIGKILLed and started again on the same port and file store,
    as a NATS pod on a persistent volume comes back: clients reconnect to the same URL."""

    def __init__(self, log_dir: Path, store_dir: Path) -> None:
        self.log_dir = log_dir
        self.store_dir = store_dir
        self.port = free_port()
        self._stack = contextlib.AsyncExitStack()
        self._server: NatsServer | None = None

    @property
    def url(self) -> str:
        """The URL clients connect to, the same across restarts."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the server; return once it listens."""
        self._server = await self._stack.enter_async_context(
            nats_server(self.log_dir, port=self.port, store_dir=self.store_dir)
        )

    def kill(self) -> None:
        """SIGKILL the server."""
        if self._server is not None:
            sigkill(self._server.process)

    async def restart(self) -> None:
        """Start a fresh server on the same port and store (after `kill`)."""
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); the store stays."""
        await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()
        self._server = None
