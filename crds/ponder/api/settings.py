"""The programs' settings, declared once: each option's flag, environment variable, default, help.

The scheduler, the workers and the operator build their command lines from `Option`s: the
shared ones below and their own, declared the same way in their config module. So every
`--help` line shows the option's environment variable and default, and the README's Settings
table lists exactly these declarations (a unit test holds the two together).

Precedence: the command line beats the environment, which beats the ServiceConfig file (for
the options the file also holds, such as the NATS URL), which beats the default. An empty
environment variable counts as unset.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from ponder.api.service_config import DEFAULT_NATS_URL, ServiceConfig

T = TypeVar("T")

TRUE_WORDS = ("1", "true", "yes")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

DEFAULT_HTTP_HOST = "0.0.0.0"
"""Every interface: a pod is reached through its Service; local runs pass 127.0.0.1."""

DEFAULT_MAX_WORKERS = 16
"""Worker pool size a local `--ensure-stream` run sizes the consumer for when not told."""


def switch(text: str) -> bool:
    """An on/off value from the environment: 1, true or yes (any case) is on, all else off."""
    return text.strip().lower() in TRUE_WORDS


def comma_list(text: str) -> list[str]:
    """A comma-separated value as its non-empty items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def log_level(text: str) -> str:
    """A log level name, lower case; raises ValueError naming the levels allowed."""
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def default_component_id() -> str:
    """`<host>-<pid>`: unique per process, and the pod's name in Kubernetes."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting of a program, as the command line, the environment and `--help` see it."""

    flag: str
    """The long command-line flag, e.g. `--nats-url`; its parsed name is `nats_url`."""
    env: str
    """The environment variable read when the flag is absent."""
    default: T | None
    """The value when neither is given; None when the program derives it (`default_text`)."""
    help: str
    """What the option sets, for `--help` and the README's Settings table."""
    type: Callable[[str], T]
    """Parses the flag's or the variable's text: `str`, `int`, `float`, `Path`, `log_level`,
    `switch` (an on/off flag) or `comma_list` (a repeatable flag; the variable lists items)."""
    default_text: str | None = None
    """How `--help` shows a default the program derives, e.g. `host-pid`."""
    short: str | None = None
    """A one-letter alias of the flag, e.g. `-n`."""
    empty_is_value: bool = False
    """An empty flag or variable is a value ("none"), not an absent one."""

    @property
    def dest(self) -> str:
        """The option's key in the parsed command line: `--nats-url` -> `nats_url`."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def shown_default(self) -> str:
        """The default as `--help` and the README show it."""
        if self.default_text is not None:
            return self.default_text
        if self.type is switch:
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    @property
    def help_line(self) -> str:
        """`help [ENV; default]`, the line `--help` prints."""
        env = f"{self.env}=1" if self.type is switch else self.env
        return f"{self.help} [{env}; {self.shown_default}]"

    def with_default(self, default: T | None, default_text: str | None = None) -> Option[T]:
        """The same option with this program's own default (e.g. its HTTP port)."""
        return replace(self, default=default, default_text=default_text)

    def from_config(self, field: str) -> Option[T]:
        """The same option when the ServiceConfig `field` comes before the default."""
        return replace(self, default=None, default_text=f"config's {field}")

    def add_to(self, parser: argparse._ActionsContainer) -> None:
        """Declare the option on `parser` (or one of its groups)."""
        names = [self.flag] if self.short is None else [self.short, self.flag]
        # No argparse default: an absent flag must fall through to the environment.
        if self.type is switch:
            parser.add_argument(
                *names, dest=self.dest, action="store_true", default=None, help=self.help_line
            )
        elif self.type is comma_list:
            parser.add_argument(
                *names, dest=self.dest, action="append", default=None, help=self.help_line
            )
        else:
            parser.add_argument(
                *names, dest=self.dest, type=self.type, default=None, help=self.help_line
            )

    def given(self, options: Mapping[str, object], environ: Mapping[str, str]) -> T | None:
        """The command-line value, else the environment's, else None; raises ValueError for an
        environment value that does not parse."""
        value = options.get(self.dest)
        if value is not None and (value != "" or self.empty_is_value):
            return cast(T, value)
        text = environ.get(self.env)
        if text is None or (text == "" and not self.empty_is_value):
            return None
        try:
            return self.type(text)
        except ValueError as error:
            raise ValueError(f"{self.env}={text!r} is not a valid {self.flag}: {error}") from None

    def resolve(self, options: Mapping[str, object], environ: Mapping[str, str]) -> T | None:
        """`given`, else the default (None when the program derives it)."""
        given = self.given(options, environ)
        return self.default if given is None else given

    def value(self, options: Mapping[str, object], environ: Mapping[str, str]) -> T:
        """`resolve` for an option that has a default; raises ValueError when it has none."""
        value = self.resolve(options, environ)
        if value is None:
            raise ValueError(f"{self.flag} (or {self.env}) is required")
        return value


def add_options(parser: argparse._ActionsContainer, options: Iterable[Option[Any]]) -> None:
    """Declare every option on `parser`, in order."""
    for option in options:
        option.add_to(parser)


CONFIG: Option[Path] = Option(
    "--config",
    "PONDER_CONFIG",
    None,
    "ServiceConfig JSON file (the operator renders it into a ConfigMap)",
    Path,
    default_text="required",
)
NATS_URL: Option[str] = Option(
    "--nats-url",
    "PONDER_NATS_URL",
    DEFAULT_NATS_URL,
    "NATS server URL, or several comma-separated (a cluster); the operator's is for services "
    "without spec.nats.url",
    str,
)
NATS_CREDS: Option[Path] = Option(
    "--nats-creds",
    "PONDER_NATS_CREDS",
    None,
    "NATS user credentials (.creds file) when the NATS server requires them: this service's, "
    "for this program's role",
    Path,
    default_text="none",
)
NATS_CA: Option[Path] = Option(
    "--nats-ca",
    "PONDER_NATS_CA",
    None,
    "CA bundle (PEM) that verifies the NATS server's certificate and host name, when NATS "
    "requires TLS",
    Path,
    default_text="none (the system's CAs)",
)
HTTP_HOST: Option[str] = Option(
    "--host", "PONDER_HTTP_HOST", DEFAULT_HTTP_HOST, "HTTP bind address", str
)
HTTP_PORT: Option[int] = Option(
    "--port",
    "PONDER_HTTP_PORT",
    None,
    "HTTP port (the scheduler's API; the workers' /healthz and /metrics)",
    int,
)
"""Each program sets its own default port (`with_default`)."""
LOG_LEVEL: Option[str] = Option(
    "--log-level", "PONDER_LOG_LEVEL", "info", f"Log level: {', '.join(LOG_LEVELS)}", log_level
)
ENSURE_STREAM: Option[bool] = Option(
    "--ensure-stream",
    "PONDER_ENSURE_STREAM",
    False,
    "Create or update the job stream and consumer at start (the operator does it in Kubernetes)",
    switch,
)
MAX_WORKERS: Option[int] = Option(
    "--max-workers",
    "PONDER_MAX_WORKERS",
    DEFAULT_MAX_WORKERS,
    "Most workers the pool runs: sizes the consumer's MaxAckPending, with --ensure-stream",
    int,
)
SCHEDULER_ID: Option[str] = Option(
    "--scheduler-id",
    "PONDER_SCHEDULER_ID",
    None,
    "Names this scheduler's results inbox: unique per replica",
    str,
    default_text="host-pid",
)
WORKER_ID: Option[str] = Option(
    "--worker-id",
    "PONDER_WORKER_ID",
    None,
    "This worker's name in results and logs",
    str,
    default_text="host-pid",
)
OPERATOR_ID: Option[str] = Option(
    "--operator-id",
    "PONDER_OPERATOR_ID",
    None,
    "This operator's name in its logs and its peering record",
    str,
    default_text="host-pid",
)


def service_config_from(
    parser: argparse.ArgumentParser, options: Mapping[str, object], environ: Mapping[str, str]
) -> ServiceConfig:
    """The ServiceConfig at `--config` (or PONDER_CONFIG); exits with usage when missing or bad."""
    path = CONFIG.given(options, environ)
    if path is None:
        parser.error(f"{CONFIG.flag} (or {CONFIG.env}) is required")
    try:
        return ServiceConfig.model_validate_json(Path(path).read_text())
    except (OSError, ValueError) as error:
        parser.error(f"cannot load ServiceConfig from {path}: {error}")
