"""A real Ponder scheduler process (`python -m ponder.scheduler`), for tests, benchmarks, demos."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.api.service_config import ServiceConfig
from ponder.local.http_ready import wait_http_ok
from ponder.local.processes import PYTHON, free_port, running

READY_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class SchedulerProcess:
    """A running scheduler: `base_url` serves the API (`/v1/...`), `/readyz`, `/metrics`."""

    scheduler_id: str
    port: int
    base_url: str
    process: subprocess.Popen[bytes]
    config_path: Path

    @property
    def openai_base_url(self) -> str:
        """What the `openai` client takes as `base_url`."""
        return f"{self.base_url}/v1"


def scheduler_args(
    config_path: Path,
    *,
    port: int,
    nats_url: str | None = None,
    scheduler_id: str | None = None,
    ensure_stream: bool = False,
    max_workers: int | None = None,
    stats_interval_seconds: float | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The scheduler's command line."""
    args = [
        PYTHON,
        "-m",
        "ponder.scheduler",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if nats_url is not None:
        args += ["--nats-url", nats_url]
    if scheduler_id is not None:
        args += ["--scheduler-id", scheduler_id]
    if ensure_stream:
        args.append("--ensure-stream")
    if max_workers is not None:
        args += ["--max-workers", str(max_workers)]
    if stats_interval_seconds is not None:
        args += ["--stats-interval", str(stats_interval_seconds)]
    return [*args, *extra_args]


def write_config(path: Path, config: ServiceConfig) -> None:
    """Write `config` where the scheduler reads it (small: a blocking write is fine here)."""
    path.write_text(config.model_dump_json(indent=2))


@contextlib.asynccontextmanager
async def scheduler_process(
    config: ServiceConfig | Path,
    *,
    nats_url: str | None = None,
    scheduler_id: str = "scheduler-1",
    ensure_stream: bool = False,
    max_workers: int | None = None,
    stats_interval_seconds: float | None = None,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[SchedulerProcess]:
    """A scheduler until the block exits; ready (`/readyz` 200) on entry.

    `config` is a ServiceConfig (written to a temporary file, as the operator's ConfigMap would
    be) or the path of one. On exit the scheduler gets SIGTERM, then SIGKILL after a grace.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ponder-scheduler-") as scratch:
        if isinstance(config, Path):
            config_path = config
        else:
            config_path = Path(scratch) / "service.json"
            write_config(config_path, config)
        args = scheduler_args(
            config_path,
            port=port,
            nats_url=nats_url,
            scheduler_id=scheduler_id,
            ensure_stream=ensure_stream,
            max_workers=max_workers,
            stats_interval_seconds=stats_interval_seconds,
            extra_args=extra_args,
        )
        log_path = (log_dir / f"scheduler-{scheduler_id}-{port}.log") if log_dir else None
        async with running(args, port=port, log_path=log_path, env=env) as process:
            base_url = f"http://127.0.0.1:{port}"
            await wait_http_ok(
                f"{base_url}/readyz",
                process,
                what="the scheduler",
                timeout_seconds=READY_TIMEOUT_SECONDS,
                poll_seconds=0.1,
            )
            yield SchedulerProcess(
                scheduler_id=scheduler_id,
                port=port,
                base_url=base_url,
                process=process,
                config_path=config_path,
            )
