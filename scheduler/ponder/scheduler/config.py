"""The scheduler's settings: the service's `ServiceConfig` file plus per-process options.

The options shared with the workers and the operator are declared in `ponder.api.settings`;
the scheduler's own are declared below in the same shape. Precedence: command line, then
environment (`PONDER_*`), then the config file, then defaults. The operator mounts the
ServiceConfig JSON from a ConfigMap.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.api.service_config import ServiceConfig
from ponder.api.settings import (
    CONFIG,
    DEFAULT_HTTP_HOST,
    DEFAULT_MAX_WORKERS,
    ENSURE_STREAM,
    HTTP_HOST,
    HTTP_PORT,
    LOG_LEVEL,
    MAX_WORKERS,
    NATS_CA,
    NATS_CREDS,
    NATS_URL,
    SCHEDULER_ID,
    Option,
    add_options,
    default_component_id,
    service_config_from,
    switch,
)
from ponder.api.wire import STATS_INTERVAL_SECONDS

DEFAULT_PORT = 8000
_NOT_A_SUBJECT_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")

PORT = HTTP_PORT.with_default(DEFAULT_PORT)
SCHEDULER_NATS_URL = NATS_URL.from_config("nats_url")
STATS_INTERVAL: Option[float] = Option(
    "--stats-interval",
    "PONDER_STATS_INTERVAL",
    STATS_INTERVAL_SECONDS,
    "Seconds between the stats messages the autoscaler reads",
    float,
)
ACCESS_LOG: Option[bool] = Option(
    "--access-log", "PONDER_ACCESS_LOG", False, "Log every HTTP request", switch
)

OPTIONS: tuple[Option[Any], ...] = (
    CONFIG,
    HTTP_HOST,
    PORT,
    SCHEDULER_NATS_URL,
    NATS_CREDS,
    NATS_CA,
    SCHEDULER_ID,
    ENSURE_STREAM,
    MAX_WORKERS,
    STATS_INTERVAL,
    LOG_LEVEL,
    ACCESS_LOG,
)
"""Every option `python -m ponder.scheduler` takes, in `--help` order."""


@dataclass(frozen=True)
class SchedulerSettings:
    """What one scheduler process needs besides the ServiceConfig."""

    nats_url: str
    scheduler_id: str
    """Names this replica's results inbox `results.<scheduler_id>`: unique per replica."""
    host: str = DEFAULT_HTTP_HOST
    port: int = DEFAULT_PORT
    nats_creds: Path | None = None
    """This service's scheduler credentials, when NATS requires them."""
    nats_ca: Path | None = None
    """The CA bundle the NATS server's certificate is verified with, when NATS requires TLS."""
    ensure_stream: bool = False
    """Create or update the stream and consumer at start (local runs; the operator does it in
    Kubernetes)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    """Pool size the consumer's MaxAckPending is sized for, with `ensure_stream`."""
    stats_interval_seconds: float = STATS_INTERVAL_SECONDS
    log_level: str = "info"
    access_log: bool = False


def subject_token(text: str) -> str:
    """`text` made safe as one NATS subject token (no dots, wildcards or spaces)."""
    return _NOT_A_SUBJECT_TOKEN.sub("-", text).strip("-") or "scheduler"


def default_scheduler_id() -> str:
    """This process's scheduler id when none is given: `<host>-<pid>` as a subject token."""
    return subject_token(default_component_id())


def build_parser() -> argparse.ArgumentParser:
    """The scheduler's command line: every option in `OPTIONS`, with its variable and default."""
    parser = argparse.ArgumentParser(
        prog="python -m ponder.scheduler",
        description="Ponder scheduler: OpenAI-compatible API that fans queries out as branch "
        "jobs over NATS JetStream.",
    )
    add_options(parser, OPTIONS)
    return parser


def load_settings(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[ServiceConfig, SchedulerSettings]:
    """Settings from the command line and environment; exits with usage on bad input."""
    parser = build_parser()
    options = vars(parser.parse_args(list(argv)))
    service = service_config_from(parser, options, environ)
    try:
        return service, settings_from(service, options, environ)
    except ValueError as error:
        parser.error(str(error))


def settings_from(
    service: ServiceConfig, options: Mapping[str, object], environ: Mapping[str, str]
) -> SchedulerSettings:
    """Merge command-line `options` (None when absent) over `environ` over `service` (pure)."""
    scheduler_id = SCHEDULER_ID.given(options, environ)
    settings = SchedulerSettings(
        nats_url=SCHEDULER_NATS_URL.given(options, environ) or service.nats_url,
        scheduler_id=subject_token(scheduler_id) if scheduler_id else default_scheduler_id(),
        host=HTTP_HOST.value(options, environ),
        port=PORT.value(options, environ),
        nats_creds=NATS_CREDS.given(options, environ),
        nats_ca=NATS_CA.given(options, environ),
        ensure_stream=ENSURE_STREAM.value(options, environ),
        max_workers=MAX_WORKERS.value(options, environ),
        stats_interval_seconds=STATS_INTERVAL.value(options, environ),
        log_level=LOG_LEVEL.value(options, environ),
        access_log=ACCESS_LOG.value(options, environ),
    )
    if not 0 < settings.port < 65536:
        raise ValueError(f"port={settings.port} must be within 1..65535")
    if settings.max_workers < 1:
        raise ValueError(f"max_workers={settings.max_workers} must be at least 1")
    if settings.stats_interval_seconds <= 0:
        raise ValueError(f"stats_interval={settings.stats_interval_seconds} must be positive")
    return settings
