"""Where the scheduler's and workers' settings come from: the command line beats the
environment, which beats the ServiceConfig file the operator renders into a ConfigMap."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from ponder.api.service_config import ServiceConfig

TRUE_WORDS = ("1", "true", "yes")


def service_config_from(
    parser: argparse.ArgumentParser, config_path: str | None, environ: Mapping[str, str]
) -> ServiceConfig:
    """The ServiceConfig at `--config` (or PONDER_CONFIG); exits with usage when missing or bad."""
    path = config_path or environ.get("PONDER_CONFIG")
    if not path:
        parser.error("--config (or PONDER_CONFIG) is required")
    try:
        return ServiceConfig.model_validate_json(Path(path).read_text())
    except (OSError, ValueError) as error:
        parser.error(f"cannot load ServiceConfig from {path}: {error}")


def option_value(
    options: Mapping[str, object], environ: Mapping[str, str], option: str, env: str
) -> str | None:
    """The command-line `option` (None when absent), else the environment variable `env`."""
    value = options.get(option)
    if value is not None:
        return str(value)
    return environ.get(env)


def option_flag(
    options: Mapping[str, object], environ: Mapping[str, str], option: str, env: str
) -> bool:
    """A boolean switch: the command-line `option` when given, else `env` set to 1/true/yes."""
    value = options.get(option)
    if value is not None:
        return bool(value)
    return environ.get(env, "").lower() in TRUE_WORDS
