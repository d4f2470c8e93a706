"""The scheduler's settings: the service's `ServiceConfig` file plus per-process overrides.

Precedence: command line, then environment (`PONDER_*`), then the config file, then defaults
(the same as the workers'). The operator mounts the ServiceConfig JSON from a ConfigMap.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.api.service_config import ServiceConfig
from ponder.api.settings_sources import option_flag, option_value, service_config_from

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8000
DEFAULT_MAX_WORKERS = 16
DEFAULT_STATS_INTERVAL_SECONDS = 2.0
_NOT_A_SUBJECT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SchedulerSettings:
    """What one scheduler process needs besides the ServiceConfig."""

    nats_url: str
    scheduler_id: str
    """Names this replica's results inbox `results.<scheduler_id>`: unique per replica."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    ensure_stream: bool = False
    """Create or update the stream and consumer at start (local runs; the operator does it in
    Kubernetes)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    """Pool size the consumer's MaxAckPending is sized for, with `ensure_stream`."""
    stats_interval_seconds: float = DEFAULT_STATS_INTERVAL_SECONDS
    log_level: str = "info"
    access_log: bool = False


def subject_token(text: str) -> str:
    """`text` made safe as one NATS subject token (no dots, wildcards or spaces)."""
    return _NOT_A_SUBJECT_TOKEN.sub("-", text).strip("-") or "scheduler"


def default_scheduler_id() -> str:
    return subject_token(f"{socket.gethostname()}-{os.getpid()}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ponder.scheduler",
        description="Ponder scheduler: OpenAI-compatible API that fans queries out as branch "
        "jobs over NATS JetStream.",
    )
    parser.add_argument(
        "--config", type=Path, help="ServiceConfig JSON file [PONDER_CONFIG] (required)"
    )
    parser.add_argument("--host", help=f"HTTP bind address [PONDER_HOST; {DEFAULT_HOST}]")
    parser.add_argument("--port", type=int, help=f"HTTP port [PONDER_PORT; {DEFAULT_PORT}]")
    parser.add_argument("--nats-url", help="NATS server [PONDER_NATS_URL; config's nats_url]")
    parser.add_argument(
        "--scheduler-id",
        help="Results inbox name, unique per replica [PONDER_SCHEDULER_ID; host-pid]",
    )
    parser.add_argument(
        "--ensure-stream",
        action="store_true",
        default=None,
        help="Create/update the stream and consumer at start [PONDER_ENSURE_STREAM=1]",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        help=f"Pool size for the consumer's MaxAckPending, with --ensure-stream "
        f"[PONDER_MAX_WORKERS; {DEFAULT_MAX_WORKERS}]",
    )
    parser.add_argument(
        "--stats-interval",
        type=float,
        help=f"Seconds between stats messages [PONDER_STATS_INTERVAL; "
        f"{DEFAULT_STATS_INTERVAL_SECONDS}]",
    )
    parser.add_argument("--log-level", help="debug, info, warning [PONDER_LOG_LEVEL; info]")
    parser.add_argument(
        "--access-log", action="store_true", default=None, help="Log every HTTP request"
    )
    return parser


def load_settings(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[ServiceConfig, SchedulerSettings]:
    """Settings from the command line and environment; exits with usage on bad input."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    service = service_config_from(parser, args.config, environ)
    try:
        return service, settings_from(service, vars(args), environ)
    except ValueError as error:
        parser.error(str(error))


def settings_from(
    service: ServiceConfig, options: Mapping[str, object], environ: Mapping[str, str]
) -> SchedulerSettings:
    """Merge command-line `options` (None when absent) over `environ` over `service` (pure)."""

    def pick(option: str, env: str) -> str | None:
        return option_value(options, environ, option, env)

    def flag(option: str, env: str) -> bool:
        return option_flag(options, environ, option, env)

    port = pick("port", "PONDER_PORT")
    max_workers = pick("max_workers", "PONDER_MAX_WORKERS")
    interval = pick("stats_interval", "PONDER_STATS_INTERVAL")
    scheduler_id = pick("scheduler_id", "PONDER_SCHEDULER_ID")
    settings = SchedulerSettings(
        nats_url=pick("nats_url", "PONDER_NATS_URL") or service.nats_url,
        scheduler_id=subject_token(scheduler_id) if scheduler_id else default_scheduler_id(),
        host=pick("host", "PONDER_HOST") or DEFAULT_HOST,
        port=int(port) if port else DEFAULT_PORT,
        ensure_stream=flag("ensure_stream", "PONDER_ENSURE_STREAM"),
        max_workers=int(max_workers) if max_workers else DEFAULT_MAX_WORKERS,
        stats_interval_seconds=float(interval) if interval else DEFAULT_STATS_INTERVAL_SECONDS,
        log_level=(pick("log_level", "PONDER_LOG_LEVEL") or "info").lower(),
        access_log=flag("access_log", "PONDER_ACCESS_LOG"),
    )
    if not 0 < settings.port < 65536:
        raise ValueError(f"port={settings.port} must be within 1..65535")
    if settings.max_workers < 1:
        raise ValueError(f"max_workers={settings.max_workers} must be at least 1")
    if settings.stats_interval_seconds <= 0:
        raise ValueError(f"stats_interval={settings.stats_interval_seconds} must be positive")
    return settings
