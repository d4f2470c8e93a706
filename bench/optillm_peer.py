"""The peer: optillm (PyPI) as its own OpenAI proxy in front of the same vLLM.

optillm lives in `.venv-optillm` (`bench/setup_optillm.sh`; its transformers pin conflicts with
vLLM's). Its proxy is started as

    optillm --base-url <vLLM>/v1 --host 127.0.0.1 --port P --best-of-n N

with `OPENAI_API_KEY` set to a dummy (vLLM checks none), so it talks to vLLM through the OpenAI
client. An approach is chosen per request by a model prefix: `bon-ponder-arith`,
`self_consistency-ponder-arith`, `majority_voting-ponder-arith` (a plugin; `k` and `temperature`
ride in the request body). optillm speaks chat completions only, so vLLM serves the model with
`bench/arith_chat_template.jinja`. Its responses report `usage.completion_tokens`: the tokens of
every call it made to vLLM for the request (samples and, for `bon`, the self-ratings).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stack import REPO_ROOT
from ponder.local.http_ready import wait_http_ok
from ponder.local.processes import free_port, running

OPTILLM_VENV = REPO_ROOT / ".venv-optillm"
SETUP_SCRIPT = REPO_ROOT / "bench" / "setup_optillm.sh"
READY_TIMEOUT_SECONDS = 60.0
SETUP_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class PeerSpec:
    """One optillm approach as a benchmark row."""

    label: str
    approach: str
    branches: int
    """Samples the approach draws (for the table; optillm does not report it)."""
    temperature: float | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def model(self, served_name: str) -> str:
        return f"{self.approach}-{served_name}"


@dataclass(frozen=True)
class OptillmProxy:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"


async def ensure_optillm() -> Path:
    """The `optillm` executable, creating `.venv-optillm` first when it is missing."""
    binary = OPTILLM_VENV / "bin" / "optillm"
    if binary.exists():
        return binary
    print(f"Creating {OPTILLM_VENV} with {SETUP_SCRIPT} ...", file=sys.stderr)
    process = await asyncio.create_subprocess_exec("bash", str(SETUP_SCRIPT), cwd=REPO_ROOT)
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_SECONDS):
            code = await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if code != 0 or not binary.exists():
        raise RuntimeError(f"{SETUP_SCRIPT} failed with exit code {code}")
    return binary


@contextlib.asynccontextmanager
async def optillm_proxy(
    vllm_url: str, *, best_of_n: int, log_dir: Path | None = None
) -> AsyncIterator[OptillmProxy]:
    """optillm's proxy in front of the vLLM at `vllm_url` until the block exits."""
    binary = await ensure_optillm()
    port = free_port()
    args = [
        str(binary),
        "--base-url",
        f"{vllm_url}/v1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--best-of-n",
        str(best_of_n),
        "--log",
        "warning",
    ]
    # OPTILLM_API_KEY would switch optillm to its local-inference engine: keep it empty.
    env = {"OPENAI_API_KEY": "sk-unused", "OPTILLM_API_KEY": "", "OPTILLM_APPROACH": "auto"}
    log_path = (log_dir / f"optillm-{port}.log") if log_dir else None
    async with running(
        args,
        port=port,
        ready_timeout_seconds=READY_TIMEOUT_SECONDS,
        log_path=log_path,
        env=env,
        cwd=REPO_ROOT,
    ) as process:
        base_url = f"http://127.0.0.1:{port}"
        await wait_http_ok(
            f"{base_url}/health",
            process,
            what="optillm",
            timeout_seconds=READY_TIMEOUT_SECONDS,
        )
        yield OptillmProxy(base_url=base_url, port=port, process=process)
