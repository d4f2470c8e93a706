"""Run the cluster's command-line tools (kubectl, helm, kwokctl) without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class CommandError(RuntimeError):
    """A command exited non-zero; the message carries its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_run = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{' '.join(args)} exited with {returncode}: {stderr.strip()}")


async def run_command(
    args: Sequence[str],
    *,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_seconds: float = 120.0,
) -> str:
    """Run `args` to completion and return stdout; raise CommandError on a non-zero exit.

    The process is killed when `timeout_seconds` pass or the caller is cancelled.
    """
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(timeout_seconds):
            out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if process.returncode != 0:
        raise CommandError(args, process.returncode or 0, stdout, stderr)
    return stdout


@dataclass(frozen=True)
class Kubectl:
    """`await kubectl("get", "nodes", "-o", "json")` runs kubectl against one kubeconfig.

    Returns stdout; raises CommandError (with kubectl's stderr) when kubectl fails. `stdin` feeds
    manifests to `apply -f -`.
    """

    binary: Path
    kubeconfig: Path

    async def __call__(
        self, *args: str, stdin: str | None = None, timeout_seconds: float = 120.0
    ) -> str:
        command = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        return await run_command(command, stdin=stdin, timeout_seconds=timeout_seconds)
