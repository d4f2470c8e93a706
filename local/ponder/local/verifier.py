"""The arithmetic step verifier (`models.arith.verifier_server`) as a local HTTP server."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.stack.processes import VENV_BIN, free_port, running

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class VerifierServer:
    """`url` is `http://127.0.0.1:<port>`: POST `{url}/verify`, GET `{url}/healthz`."""

    url: str
    port: int
    process: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def verifier_server(log_dir: Path | None = None) -> AsyncIterator[VerifierServer]:
    """Serve the step verifier on a free port until the block exits."""
    port = free_port()
    args = [str(VENV_BIN / "python"), "-m", "models.arith.verifier_server", "--port", str(port)]
    log_path = (log_dir / f"verifier-{port}.log") if log_dir else None
    async with running(
        args, port=port, ready_timeout_seconds=30.0, log_path=log_path, cwd=REPO_ROOT
    ) as process:
        yield VerifierServer(url=f"http://127.0.0.1:{port}", port=port, process=process)
