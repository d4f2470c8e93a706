"""One settings shape: every program's options, their `--help`, their precedence, the README.

Each option is declared once (`ponder.api.settings` for the shared ones, the program's config
module for its own); these tests hold the command lines, the environment variables and the
README's Settings table to those declarations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import ponder.operator.__main__ as operator_main
import ponder.scheduler.config as scheduler_config
import ponder.workers.config as workers_config
from ponder.api.service_config import ServiceConfig
from ponder.api.settings import (
    LOG_LEVEL,
    NATS_URL,
    Option,
    comma_list,
    log_level,
    switch,
)

README = Path(__file__).resolve().parents[2] / "README.md"

PROGRAMS: dict[str, tuple[Option[Any], ...]] = {
    "scheduler": scheduler_config.OPTIONS,
    "workers": workers_config.OPTIONS,
    "operator": operator_main.OPTIONS,
}
"""Every program and the options it takes, in the README's order."""

SERVICE = ServiceConfig(name="svc", model="m", nats_url="nats://config:4222", slots_per_worker=7)


def _settings_of(program: str, argv: Sequence[str], environ: Mapping[str, str]) -> Any:
    """What `program` makes of this command line and environment (without running it)."""
    if program == "scheduler":
        return scheduler_config.load_settings(argv, environ)[1]
    if program == "workers":
        return workers_config.load_settings(argv, environ)
    return operator_main.parse_args(argv, environ)


ATTRIBUTES: dict[str, dict[str, str]] = {
    "scheduler": {"port": "port", "stats_interval": "stats_interval_seconds"},
    "workers": {"host": "http_host", "port": "http_port"},
    "operator": {},
}
"""Where a program keeps an option's value, when not under the option's own name."""

SAMPLES: dict[str, tuple[str, object, str, object]] = {
    # dest: (environment text, its value, command-line text, its value)
    "host": ("10.0.0.1", "10.0.0.1", "127.0.0.2", "127.0.0.2"),
    "port": ("9001", 9001, "9002", 9002),
    "nats_url": ("nats://env:1", "nats://env:1", "nats://cli:2", "nats://cli:2"),
    "nats_creds": ("/env/a.creds", Path("/env/a.creds"), "/cli/b.creds", Path("/cli/b.creds")),
    "nats_ca": ("/env/ca.crt", Path("/env/ca.crt"), "/cli/ca.crt", Path("/cli/ca.crt")),
    "scheduler_id": ("env-id", "env-id", "cli-id", "cli-id"),
    "worker_id": ("env-id", "env-id", "cli-id", "cli-id"),
    "operator_id": ("env-id", "env-id", "cli-id", "cli-id"),
    "max_workers": ("3", 3, "4", 4),
    "stream_replicas": ("3", 3, "5", 5),
    "stats_interval": ("0.5", 0.5, "0.25", 0.25),
    "log_level": ("DEBUG", "debug", "warning", "warning"),
    "vllm_url": ("http://env:1", "http://env:1", "http://cli:2", "http://cli:2"),
    "slots": ("3", 3, "5", 5),
    "drain_seconds": ("1.5", 1.5, "2.5", 2.5),
    "engine_check_seconds": ("0.5", 0.5, "3", 3.0),
    "namespace": ("team-a, team-b", ["team-a", "team-b"], "team-c", ["team-c"]),
    "autoscale_interval_seconds": ("1", 1.0, "2", 2.0),
    "resync_seconds": ("10", 10.0, "20", 20.0),
    "liveness": ("", "", "http://0.0.0.0:9/healthz", "http://0.0.0.0:9/healthz"),
    "metrics_port": ("0", 0, "9100", 9100),
    "peering": ("env-peers", "env-peers", "cli-peers", "cli-peers"),
    "nats_trust_secret": ("ns-a/trust", "ns-a/trust", "ns-b/trust", "ns-b/trust"),
    "nats_creds_lifetime_hours": ("12", 12, "48", 48),
    "priority": ("-3", -3, "7", 7),
    "peering_lifetime_seconds": ("15", 15, "20", 20),
}
"""A value for every option that takes one; switches are on when set (see below)."""


@pytest.fixture
def config_argv(tmp_path: Path) -> Callable[[str], list[str]]:
    """The `--config` a program needs (none for the operator)."""
    path = tmp_path / "service.json"
    path.write_text(SERVICE.model_dump_json())
    return lambda program: [] if program == "operator" else ["--config", str(path)]


def _cases() -> list[tuple[str, Option[Any]]]:
    return [
        (program, option)
        for program, options in PROGRAMS.items()
        for option in options
        if option.dest != "config"
    ]


@pytest.mark.parametrize(("program", "option"), _cases(), ids=[f"{p}{o.flag}" for p, o in _cases()])
def test_the_environment_sets_an_option_and_the_command_line_beats_it(
    program: str, option: Option[Any], config_argv: Callable[[str], list[str]]
) -> None:
    attribute = ATTRIBUTES[program].get(option.dest, option.dest)
    base = config_argv(program)
    if option.type is switch:
        assert getattr(_settings_of(program, base, {option.env: "yes"}), attribute) is True
        assert getattr(_settings_of(program, base, {option.env: "0"}), attribute) is False
        on = _settings_of(program, [*base, option.flag], {option.env: "0"})
        assert getattr(on, attribute) is True
        return
    env_text, env_value, cli_text, cli_value = SAMPLES[option.dest]
    from_env = _settings_of(program, base, {option.env: env_text})
    assert getattr(from_env, attribute) == env_value
    from_cli = _settings_of(program, [*base, f"{option.flag}={cli_text}"], {option.env: env_text})
    assert getattr(from_cli, attribute) == cli_value


@pytest.mark.parametrize("program", ["scheduler", "workers"])
def test_the_config_path_comes_from_the_command_line_else_the_environment(
    program: str, config_argv: Callable[[str], list[str]], tmp_path: Path
) -> None:
    config_path = config_argv(program)[1]
    from_env = _settings_of(program, [], {"PONDER_CONFIG": config_path})
    assert from_env.nats_url == "nats://config:4222"
    missing = str(tmp_path / "absent.json")
    from_cli = _settings_of(program, ["--config", config_path], {"PONDER_CONFIG": missing})
    assert from_cli.nats_url == "nats://config:4222"


@pytest.mark.parametrize("program", ["scheduler", "workers"])
def test_nats_url_falls_back_to_the_config_file_then_the_default(
    program: str, config_argv: Callable[[str], list[str]]
) -> None:
    settings = _settings_of(program, config_argv(program), {})
    assert settings.nats_url == SERVICE.nats_url


def test_the_operator_defaults_watch_everything_on_the_local_nats() -> None:
    args = operator_main.parse_args([], {})
    assert args.namespace == []
    assert args.nats_url == NATS_URL.default
    assert args.log_level == LOG_LEVEL.default
    assert args.liveness == operator_main.LIVENESS.default
    assert args.operator_id
    assert args.peer is None  # standalone unless --peering names the peering object


def test_all_namespaces_overrides_the_namespace_variable() -> None:
    args = operator_main.parse_args(["--all-namespaces"], {"PONDER_NAMESPACES": "team-a"})
    assert args.namespace == []


@pytest.mark.parametrize(
    ("program", "environ", "message"),
    [
        ("scheduler", {"PONDER_HTTP_PORT": "eighty"}, "PONDER_HTTP_PORT='eighty'"),
        ("workers", {"PONDER_SLOTS": "many"}, "PONDER_SLOTS='many'"),
        ("operator", {"PONDER_LOG_LEVEL": "loud"}, "PONDER_LOG_LEVEL='loud'"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    program: str,
    environ: dict[str, str],
    message: str,
    config_argv: Callable[[str], list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _settings_of(program, config_argv(program), environ)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_help_lists_every_option_with_its_variable_and_default(
    program: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _settings_of(program, ["--help"], {})
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for option in PROGRAMS[program]:
        assert option.flag in help_text
        assert f"[{option.env}" in help_text
        assert f"{option.shown_default}]" in help_text


@pytest.mark.parametrize(
    ("option", "options", "environ", "given"),
    [
        (NATS_URL, {}, {}, None),
        (NATS_URL, {}, {"PONDER_NATS_URL": ""}, None),  # empty is unset
        (NATS_URL, {"nats_url": ""}, {"PONDER_NATS_URL": "nats://env:1"}, "nats://env:1"),
        (
            NATS_URL,
            {"nats_url": "nats://cli:2"},
            {"PONDER_NATS_URL": "nats://env:1"},
            "nats://cli:2",
        ),
        (operator_main.LIVENESS, {}, {"PONDER_LIVENESS": ""}, ""),  # '' turns liveness off
    ],
)
def test_given_takes_the_command_line_then_the_environment(
    option: Option[Any], options: dict[str, object], environ: dict[str, str], given: object
) -> None:
    assert option.given(options, environ) == given


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (switch, "1", True),
        (switch, "TRUE", True),
        (switch, "yes", True),
        (switch, "0", False),
        (switch, "off", False),
        (comma_list, "a, b,,c", ["a", "b", "c"]),
        (log_level, " Warning ", "warning"),
    ],
)
def test_environment_text_parses_to_the_option_type(
    parse: Callable[[str], object], text: str, value: object
) -> None:
    assert parse(text) == value


def test_an_unknown_log_level_names_the_ones_allowed() -> None:
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        log_level("loud")


def test_a_flag_means_one_variable_in_every_program() -> None:
    variables: dict[str, set[str]] = {}
    for options in PROGRAMS.values():
        for option in options:
            variables.setdefault(option.flag, set()).add(option.env)
    assert {flag: envs for flag, envs in variables.items() if len(envs) > 1} == {}
    envs = [env for envs in variables.values() for env in envs]
    assert len(envs) == len(set(envs)), "two flags share an environment variable"


def _expected_rows() -> list[list[str]]:
    """The Settings table as the declarations say it: one row per flag, first seen first."""
    by_flag: dict[str, dict[str, Option[Any]]] = {}
    for program, options in PROGRAMS.items():
        for option in options:
            by_flag.setdefault(option.flag, {})[program] = option
    rows = []
    for flag, per_program in by_flag.items():
        first = next(iter(per_program.values()))
        programs_by_default: dict[str, list[str]] = {}
        for program, option in per_program.items():
            programs_by_default.setdefault(option.shown_default, []).append(program)
        if len(programs_by_default) == 1:
            default = next(iter(programs_by_default))
        else:
            default = ", ".join(
                f"{shown} ({', '.join(programs)})"
                for shown, programs in programs_by_default.items()
            )
        flags = flag if first.short is None else f"{flag}, {first.short}"
        rows.append([first.help, flags, first.env, default, ", ".join(per_program)])
    return rows


def _readme_rows() -> list[list[str]]:
    """The rows of the README's Settings table, code marks removed."""
    section = re.search(r"^## Settings\n(.*?)(?=^## )", README.read_text(), re.S | re.M)
    assert section, "README.md has no '## Settings' section"
    lines = [line for line in section.group(1).splitlines() if line.startswith("|")]
    rows = [
        [cell.strip().replace("`", "") for cell in line.strip("|").split(" | ")] for line in lines
    ]
    return rows[2:]  # after the header and its underline


def test_readme_settings_table_lists_exactly_the_declared_options() -> None:
    expected = _expected_rows()
    table = "\n".join(
        f"| {row[0]} | `{row[1]}` | `{row[2]}` | {row[3]} | {row[4]} |" for row in expected
    )
    assert _readme_rows() == expected, f"README.md's Settings rows should be:\n{table}"
