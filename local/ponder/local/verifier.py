"""A verifier or reward-model server as a local process, started from a command line.

    command = python_module_command("models.arith.verifier_server", cwd=checkout)
    async with verifier_server(command, log_dir) as server:
        server.url   # http://127.0.0.1:<port>; the arithmetic verifier answers POST {url}/verify

Ponder's HTTP verifier contract (`VerifierKind.HTTP`) is one POST route that takes
`{question, answer, steps}` and answers `{"score": float}`; a reward model is a vLLM server with
a score API (`VerifierKind.REWARD_MODEL`). Either is an HTTP server that listens on a port given
on its command line: that is all this launcher needs to know.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.local.processes import PYTHON, free_port, running

PORT_PLACEHOLDER = "{port}"
READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ServerCommand:
    """How to start a verifier server: `args` with `{port}` where its port goes.

    `cwd` is where it runs (None: here); `name` names its log file.
    """

    args: tuple[str, ...]
    cwd: Path | None = None
    name: str = "verifier"

    def argv(self, port: int) -> list[str]:
        """The command line for `port`."""
        return [arg.replace(PORT_PLACEHOLDER, str(port)) for arg in self.args]


def python_module_command(
    module: str,
    *,
    cwd: Path | None = None,
    extra_args: Sequence[str] = (),
    name: str = "verifier",
) -> ServerCommand:
    """`python -m module --port {port}` on this interpreter."""
    return ServerCommand(
        (PYTHON, "-m", module, "--port", PORT_PLACEHOLDER, *extra_args), cwd=cwd, name=name
    )


def command_line(line: str) -> ServerCommand:
    """A shell-style command line; `--port {port}` is appended when it names no `{port}`.

    Raises ValueError for an empty or badly quoted line.
    """
    args = shlex.split(line)
    if not args:
        raise ValueError("the verifier command line is empty")
    if not any(PORT_PLACEHOLDER in arg for arg in args):
        args += ["--port", PORT_PLACEHOLDER]
    return ServerCommand(tuple(args))


@dataclass(frozen=True)
class VerifierServer:
    """A running server: `url` is `http://127.0.0.1:<port>` (its routes go under it)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def verifier_server(
    command: ServerCommand,
    log_dir: Path | None = None,
    ready_timeout_seconds: float = READY_TIMEOUT_SECONDS,
) -> AsyncIterator[VerifierServer]:
    """Run `command` on a free port until the block exits; ready once the port accepts."""
    port = free_port()
    log_path = (log_dir / f"{command.name}-{port}.log") if log_dir else None
    async with running(
        command.argv(port),
        port=port,
        ready_timeout_seconds=ready_timeout_seconds,
        log_path=log_path,
        cwd=command.cwd,
    ) as process:
        yield VerifierServer(url=f"http://127.0.0.1:{port}", port=port, process=process)
