"""`python -m ponder.local config`: the ServiceConfig the programs read, from each source.

The sample `examples/service-config.json` (the README's "Run it without Kubernetes") stays a
valid ServiceConfig and is exactly what `config` prints for the shipped model; a ReasoningService
goes through the operator's own translation; a bad source is one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ponder.api.crd import ReasoningServiceSpec
from ponder.api.service_config import ServiceConfig, VerifierKind
from ponder.local import shipped
from ponder.local.cli import main
from ponder.local.config_sources import (
    load_reasoning_service,
    model_service_config,
    reasoning_service_config,
    service_name_for,
)
from ponder.operator.service_config import service_config_from_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = REPO_ROOT / "examples" / "service-config.json"
SAMPLE_RSVC = REPO_ROOT / "examples" / "reasoningservice.yaml"
SHIPPED_MODEL = REPO_ROOT / shipped.MODEL_PATH


def run_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["config", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_sample_service_config_is_a_valid_service_config() -> None:
    config = ServiceConfig.model_validate_json(SAMPLE_CONFIG.read_text())
    assert config.model == shipped.SERVED_NAME
    assert config.strategy.verifier.kind is VerifierKind.HTTP
    assert config.strategy.verifier.url == shipped.VERIFIER_URL


def test_the_sample_service_config_is_what_config_prints_for_the_shipped_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run_config(["--model", str(SHIPPED_MODEL)], capsys)
    assert status == 0, err
    assert json.loads(out) == json.loads(SAMPLE_CONFIG.read_text()), (
        "regenerate it: python -m ponder.local config -o examples/service-config.json"
    )


def test_config_defaults_to_the_shipped_model_in_a_checkout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run_config([], capsys)
    assert status == 0
    assert ServiceConfig.model_validate_json(out) == shipped.shipped_service_config()


def test_a_reasoning_service_goes_through_the_operators_translation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run_config(["--from-rsvc", str(SAMPLE_RSVC)], capsys)
    assert status == 0, err
    document = yaml.safe_load(SAMPLE_RSVC.read_text())
    expected = service_config_from_spec(
        "default",
        document["metadata"]["name"],
        ReasoningServiceSpec.model_validate(document["spec"]),
        "nats://127.0.0.1:4222",
    )
    assert ServiceConfig.model_validate_json(out) == expected
    assert expected.model == "qwen-math"


def test_nats_url_replaces_the_default_and_yields_to_the_specs_own() -> None:
    assert load_reasoning_service(SAMPLE_RSVC, "nats://nats:4222").nats_url == "nats://nats:4222"
    document = yaml.safe_load(SAMPLE_RSVC.read_text())
    document["spec"]["nats"] = {"url": "nats://theirs:4222"}
    config = reasoning_service_config(document, "x.yaml", "nats://nats:4222")
    assert config.nats_url == "nats://theirs:4222"


def test_output_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "service.json"
    status, out, _ = run_config(["--from-rsvc", str(SAMPLE_RSVC), "-o", str(out_file)], capsys)
    assert status == 0 and out == ""
    assert ServiceConfig.model_validate_json(out_file.read_text()).name == "math-solver"


def _rsvc(**changes: object) -> dict[str, object]:
    document: dict[str, object] = yaml.safe_load(SAMPLE_RSVC.read_text())
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not valid YAML: line 1, column 5: expected the node content"),
        ("- 1\n- 2\n", "expected a ReasoningService object, got list"),
        ("kind: Pod\napiVersion: v1\n", "expected apiVersion ponder.dev/v1alpha1 and kind"),
        (yaml.safe_dump(_rsvc(metadata={})), "metadata.name is missing"),
        (
            yaml.safe_dump(_rsvc(spec={"model": {"name": "m"}, "strategy": {"branches": 300}})),
            "spec.strategy.branches: Input should be less than or equal to 256",
        ),
        (
            yaml.safe_dump(_rsvc(metadata={"name": "Upper_Case"})),
            "metadata: name: String should match pattern",
        ),
        ("", "expected one ReasoningService, found 0 objects"),
        (yaml.safe_dump(_rsvc()) + "---\n" + yaml.safe_dump(_rsvc()), "found 2 objects"),
    ],
)
def test_a_bad_reasoning_service_is_a_one_line_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "rsvc.yaml"
    path.write_text(text)
    status, out, err = run_config(["--from-rsvc", str(path)], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"python -m ponder.local config: error: {path}: "), err
    assert message in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": "x"}', "not a valid ServiceConfig: model: Field required"),
        ("{", "not a valid ServiceConfig: Invalid JSON"),
        ('{"name": "x", "model": "m", "slots": 4}', "slots: Extra inputs are not permitted"),
    ],
)
def test_a_bad_service_config_file_is_a_one_line_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "service.json"
    path.write_text(text)
    status, _, err = run_config(["--config", str(path)], capsys)
    assert status == 2
    assert err.count("\n") == 1 and message in err, err


def test_a_missing_file_and_two_sources_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_config(["--from-rsvc", str(tmp_path / "nope.yaml")], capsys)
    assert status == 2 and "nope.yaml: No such file or directory" in err
    status, _, err = run_config(["--model", str(SHIPPED_MODEL), "--config", "x.json"], capsys)
    assert status == 2 and "give one of --model, --config and --from-rsvc" in err


def test_python_dash_m_ponder_local_config_exits_2_on_a_bad_spec(tmp_path: Path) -> None:
    path = tmp_path / "rsvc.yaml"
    path.write_text("a: [")
    result = subprocess.run(
        [sys.executable, "-m", "ponder.local", "config", "--from-rsvc", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"python -m ponder.local config: error: {path}: not valid YAML: "
        "line 1, column 5: expected the node content, but found '<stream end>'"
    ]


def test_a_model_folder_other_than_the_shipped_one_gets_the_defaults(tmp_path: Path) -> None:
    model = tmp_path / "Qwen2.5-0.5B"
    model.mkdir()
    (model / "config.json").write_text("{}")
    config = model_service_config(model)
    assert config == ServiceConfig(name="qwen2-5-0-5b", model="Qwen2.5-0.5B")
    assert model_service_config(SHIPPED_MODEL) == shipped.shipped_service_config()


@pytest.mark.parametrize(
    ("served_name", "service_name"),
    [
        ("ponder-arith", "ponder-arith"),
        ("Qwen2.5-1.5B-Instruct", "qwen2-5-1-5b-instruct"),
        ("7b", "local"),  # a DNS label that starts with a digit is no service name
        ("___", "local"),
        ("x" * 50, "x" * 40),
    ],
)
def test_service_name_for_a_model_name(served_name: str, service_name: str) -> None:
    assert service_name_for(served_name) == service_name
