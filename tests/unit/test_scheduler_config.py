"""The scheduler's settings: command line over environment over the ServiceConfig (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ponder.api.service_config import ServiceConfig
from ponder.scheduler.config import load_settings, settings_from, subject_token

SERVICE = ServiceConfig(name="math", model="tiny", nats_url="nats://config:4222")
NO_OPTIONS: dict[str, Any] = {
    "nats_url": None,
    "scheduler_id": None,
    "host": None,
    "port": None,
    "ensure_stream": None,
    "max_workers": None,
    "stats_interval": None,
    "log_level": None,
    "access_log": None,
}


def test_defaults_come_from_the_service_config() -> None:
    settings = settings_from(SERVICE, NO_OPTIONS, {})
    assert settings.nats_url == "nats://config:4222"
    assert (settings.host, settings.port, settings.ensure_stream) == ("0.0.0.0", 8000, False)
    assert "." not in settings.scheduler_id


def test_command_line_wins_over_environment() -> None:
    environ = {
        "PONDER_NATS_URL": "nats://env:4222",
        "PONDER_HTTP_PORT": "9000",
        "PONDER_SCHEDULER_ID": "from-env",
        "PONDER_ENSURE_STREAM": "1",
    }
    from_env = settings_from(SERVICE, NO_OPTIONS, environ)
    assert (from_env.nats_url, from_env.port, from_env.scheduler_id) == (
        "nats://env:4222",
        9000,
        "from-env",
    )
    assert from_env.ensure_stream
    options = {**NO_OPTIONS, "nats_url": "nats://cli:4222", "port": 8123, "scheduler_id": "cli"}
    from_cli = settings_from(SERVICE, options, environ)
    assert (from_cli.nats_url, from_cli.port, from_cli.scheduler_id) == (
        "nats://cli:4222",
        8123,
        "cli",
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("port", 0, "port=0 must be within 1..65535"),
        ("max_workers", 0, "max_workers=0 must be at least 1"),
        ("stats_interval", -1.0, "stats_interval=-1.0 must be positive"),
    ],
)
def test_bad_values_are_refused_with_the_reason(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from(SERVICE, {**NO_OPTIONS, option: value}, {})


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("scheduler-0", "scheduler-0"),
        ("pod.ns.svc.cluster.local-12", "pod-ns-svc-cluster-local-12"),
        ("a b*c>d", "a-b-c-d"),
        ("...", "scheduler"),
    ],
)
def test_scheduler_ids_are_single_subject_tokens(text: str, token: str) -> None:
    assert subject_token(text) == token


def test_a_bad_answer_pattern_stops_the_scheduler_at_load_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "service.json"
    strategy = {"extractor": "regex", "answer_pattern": "Result: ([0-9]+"}
    config.write_text(json.dumps({"name": "math", "model": "tiny", "strategy": strategy}))
    with pytest.raises(SystemExit):
        load_settings(["--config", str(config)], {})
    error = capsys.readouterr().err
    assert "cannot load ServiceConfig" in error
    assert "answer pattern 'Result: ([0-9]+' is not a valid regular expression" in error


@pytest.mark.parametrize("namespace", ["default", "team-a", "1team", "2-team", "0", "a" * 63])
def test_any_kubernetes_namespace_is_a_service_namespace(namespace: str) -> None:
    config = ServiceConfig(namespace=namespace, name="svc", model="m")
    assert config.namespace == namespace


@pytest.mark.parametrize("namespace", ["", "-team", "team-", "Team", "team_a", "a" * 64])
def test_what_no_kubernetes_namespace_can_be_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        ServiceConfig(namespace=namespace, name="svc", model="m")
