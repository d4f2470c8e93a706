"""A real Ponder worker process (`python -m ponder.workers`), for tests, benchmarks and demos."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.api.service_config import ServiceConfig
from ponder.local.processes import PYTHON, free_port, running


@dataclass(frozen=True)
class WorkerProcess:
    """A running worker: `http_url` serves `/healthz` and `/metrics`."""

    worker_id: str
    port: int
    http_url: str
    process: subprocess.Popen[bytes]
    config_path: Path


def worker_args(
    config_path: Path,
    *,
    nats_url: str,
    vllm_url: str,
    worker_id: str,
    port: int,
    slots: int | None = None,
    drain_seconds: float | None = None,
    ensure_stream: bool = False,
    max_workers: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The worker's command line."""
    args = [
        PYTHON,
        "-m",
        "ponder.workers",
        "--config",
        str(config_path),
        "--nats-url",
        nats_url,
        "--vllm-url",
        vllm_url,
        "--worker-id",
        worker_id,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if slots is not None:
        args += ["--slots", str(slots)]
    if drain_seconds is not None:
        args += ["--drain-seconds", str(drain_seconds)]
    if ensure_stream:
        args.append("--ensure-stream")
    if max_workers is not None:
        args += ["--max-workers", str(max_workers)]
    return [*args, *extra_args]


@contextlib.asynccontextmanager
async def worker_process(
    config: ServiceConfig,
    *,
    nats_url: str,
    vllm_url: str,
    worker_id: str = "worker-1",
    slots: int | None = None,
    drain_seconds: float | None = None,
    ensure_stream: bool = False,
    max_workers: int | None = None,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[WorkerProcess]:
    """A worker for `config` until the block exits; ready (connected, subscribed) on entry.

    The config is written where the worker reads it, as the operator's ConfigMap would be.
    On exit the worker gets SIGTERM (it drains), then SIGKILL after a grace period.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ponder-worker-") as scratch:
        config_path = Path(scratch) / "service.json"
        config_path.write_text(config.model_dump_json(indent=2))
        args = worker_args(
            config_path,
            nats_url=nats_url,
            vllm_url=vllm_url,
            worker_id=worker_id,
            port=port,
            slots=slots,
            drain_seconds=drain_seconds,
            ensure_stream=ensure_stream,
            max_workers=max_workers,
            extra_args=extra_args,
        )
        log_path = (log_dir / f"worker-{worker_id}-{port}.log") if log_dir else None
        async with running(args, port=port, log_path=log_path, env=env) as process:
            yield WorkerProcess(
                worker_id=worker_id,
                port=port,
                http_url=f"http://127.0.0.1:{port}",
                process=process,
                config_path=config_path,
            )
