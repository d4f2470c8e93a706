"""Where `python -m ponder.local up` and `config` get the ServiceConfig the programs read.

Three sources: a ServiceConfig JSON file (what the operator writes into a service's ConfigMap),
a ReasoningService YAML (turned into a ServiceConfig by the operator's own translation,
`ponder.operator.service_config`, so the local stack runs what the cluster would), or the
defaults for a model directory (the shipped model's settings for the shipped model). Each
failure is a ConfigError whose message is one line that says what to change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ponder.api.crd import API_VERSION, KIND, ReasoningServiceSpec
from ponder.api.service_config import ServiceConfig
from ponder.local import shipped
from ponder.operator.service_config import service_config_from_spec

DEFAULT_NATS_URL = ServiceConfig.model_fields["nats_url"].default
DEFAULT_SERVICE_NAME = "local"
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(ValueError):
    """A config source that cannot be used; the message is one line for the user."""


def validation_summary(error: ValidationError, prefix: str = "") -> str:
    """pydantic's errors on one line: `prefix.loc.ation: message; ...`."""
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        parts.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
    return "; ".join(parts)


def read_text(path: Path) -> str:
    """The file's text; ConfigError when it cannot be read."""
    try:
        return path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from error


def parse_service_config(text: str, source: str) -> ServiceConfig:
    """A ServiceConfig from its JSON text (pure)."""
    try:
        return ServiceConfig.model_validate_json(text)
    except ValidationError as error:
        summary = validation_summary(error)
        raise ConfigError(f"{source}: not a valid ServiceConfig: {summary}") from error


def load_service_config(path: Path) -> ServiceConfig:
    """A ServiceConfig JSON file."""
    return parse_service_config(read_text(path), str(path))


def reasoning_service_config(document: Any, source: str, nats_url: str) -> ServiceConfig:
    """The ServiceConfig the operator would render for the ReasoningService `document` (a
    parsed YAML object), with `nats_url` unless the spec names its own NATS (pure)."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a ReasoningService object, got {_kind_of(document)}")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if (api_version, kind) != (API_VERSION, KIND):
        raise ConfigError(
            f"{source}: expected apiVersion {API_VERSION} and kind {KIND}, "
            f"got apiVersion {api_version!r} and kind {kind!r}"
        )
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ConfigError(f"{source}: metadata.name is missing")
    try:
        spec = ReasoningServiceSpec.model_validate(document.get("spec") or {})
    except ValidationError as error:
        raise ConfigError(f"{source}: {validation_summary(error, 'spec')}") from error
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata["name"])
    try:
        return service_config_from_spec(namespace, name, spec, nats_url)
    except ValidationError as error:
        raise ConfigError(f"{source}: metadata: {validation_summary(error)}") from error


def load_reasoning_service(path: Path, nats_url: str = DEFAULT_NATS_URL) -> ServiceConfig:
    """The ServiceConfig of the one ReasoningService in the YAML file `path`."""
    text = read_text(path)
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from error
    if len(documents) != 1:
        raise ConfigError(f"{path}: expected one ReasoningService, found {len(documents)} objects")
    return reasoning_service_config(documents[0], str(path), nats_url)


def model_service_config(model_dir: Path) -> ServiceConfig:
    """The defaults for serving `model_dir`: the shipped model's settings for the shipped
    model, else ServiceConfig's defaults under the directory's name."""
    if shipped.is_shipped_model(model_dir):
        return shipped.shipped_service_config()
    served_name = model_dir.resolve().name
    return ServiceConfig(name=service_name_for(served_name), model=served_name)


def service_name_for(served_name: str) -> str:
    """A valid service name (lower-case DNS label, at most 40) derived from a model name."""
    candidate = re.sub(r"[^a-z0-9-]+", "-", served_name.lower()).strip("-")[:40].strip("-")
    return candidate if _SERVICE_NAME.match(candidate) else DEFAULT_SERVICE_NAME


def check_model_dir(model_dir: Path) -> None:
    """ConfigError unless `model_dir` looks like a Hugging Face model folder."""
    if not model_dir.is_dir():
        raise ConfigError(f"--model {model_dir}: no such directory")
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"--model {model_dir}: no config.json; give a Hugging Face model folder")


def _kind_of(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what the YAML parser found wrong, on one line."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())
