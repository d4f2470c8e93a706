"""The ReasoningService CRD: generated from ponder.api.crd, structural, with defaults, bounds and
CEL rules where users rely on them. The API server's behaviour is tested in tests/e2e."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ponder.api import crd, crd_gen
from ponder.api.crd import ReasoningService, ReasoningServiceSpec, StrategyType
from ponder.api.strategy import StrategyName

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return crd_gen.crd_manifest()


@pytest.fixture(scope="module")
def schema(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a dotted path such as `spec.workers.minReplicas` (`[]` for items)."""
    current = schema
    for part in path.split("."):
        current = current["items"] if part == "[]" else current["properties"][part]
    return current


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_checked_in_crd_yaml_is_generated_from_the_types() -> None:
    stale = crd_gen.stale_targets(REPO_ROOT, crd_gen.render_yaml())
    assert stale == [], f"stale CRD copies {stale}: run `make crds`"


def test_check_mode_fails_on_a_stale_copy(tmp_path: Path) -> None:
    assert crd_gen.main(["--root", str(tmp_path)]) == 0
    assert crd_gen.main(["--check", "--root", str(tmp_path)]) == 0
    chart_copy = tmp_path / "charts/ponder/crds" / crd_gen.OUTPUT_NAME
    chart_copy.write_text(chart_copy.read_text().replace("minimum: 1", "minimum: 2"))
    assert crd_gen.main(["--check", "--root", str(tmp_path)]) == 1


def test_crd_names_group_version_and_short_name(manifest: dict[str, Any]) -> None:
    spec = manifest["spec"]
    assert manifest["metadata"]["name"] == "reasoningservices.ponder.dev"
    assert spec["group"] == "ponder.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ReasoningService"
    assert spec["names"]["plural"] == "reasoningservices"
    assert spec["names"]["shortNames"] == ["rsvc"]
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, entry in walk(schema):
        assert "$ref" not in entry, path
        assert "title" not in entry, path
        assert entry.get("additionalProperties") is not False, path
        assert "nullable" not in entry, path
        if "anyOf" in entry:
            assert entry.get("x-kubernetes-int-or-string") is True, path
        else:
            assert "type" in entry, path
        assert "exclusiveMinimum" not in entry and "exclusiveMaximum" not in entry, path


def test_schema_has_no_floats(schema: dict[str, Any]) -> None:
    assert [path for path, entry in walk(schema) if entry.get("type") == "number"] == []


def test_every_spec_field_is_documented(schema: dict[str, Any]) -> None:
    undocumented = [
        path for path, entry in walk(node(schema, "spec"), "spec") if not entry.get("description")
    ]
    undocumented = [p for p in undocumented if not p.endswith(("[]", "{}"))]
    assert undocumented == []


@pytest.mark.parametrize(
    ("path", "default"),
    [
        ("spec.workers.engineImage", "vllm/vllm-openai:v0.32.0"),
        ("spec.workers.gpusPerWorker", 1),
        ("spec.workers.minReplicas", 1),
        ("spec.workers.maxReplicas", 4),
        ("spec.workers.slotsPerWorker", 32),
        ("spec.scheduler.replicas", 1),
        ("spec.strategy.default", "AdaptiveConsistency"),
        ("spec.strategy.allowed", [member.value for member in StrategyType]),
        ("spec.strategy.branches", 8),
        ("spec.strategy.maxBranches", 32),
        ("spec.strategy.confidencePercent", 95),
        ("spec.strategy.temperature", "0.8"),
        ("spec.strategy.verifier.type", "None"),
        ("spec.strategy.beam.width", 4),
        ("spec.budget.defaultTokens", 4096),
        ("spec.budget.maxTokens", 32768),
        ("spec.slo.targetLatencyMilliseconds", 30000),
        ("spec.slo.attainmentPercent", 95),
        ("spec.slo.loadAdaptation", "Shrink"),
        ("spec.autoscaling.mode", "Builtin"),
        ("spec.autoscaling.targetUtilizationPercent", 80),
        ("spec.autoscaling.scaleDownStabilizationSeconds", 300),
        ("spec.autoscaling.scaleToZero.enabled", False),
        ("spec.autoscaling.scaleToZero.idleSeconds", 600),
        ("spec.autoscaling.scaleToZero.holdSeconds", 600),
    ],
)
def test_schema_defaults(schema: dict[str, Any], path: str, default: object) -> None:
    assert node(schema, path)["default"] == default


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("spec.workers", crd.WorkersSpec),
        ("spec.scheduler", crd.SchedulerSpec),
        ("spec.strategy", crd.StrategySpec),
        ("spec.strategy.verifier", crd.VerifierSpec),
        ("spec.budget", crd.BudgetSpec),
        ("spec.slo", crd.SloSpec),
        ("spec.autoscaling", crd.AutoscalingSpec),
    ],
)
def test_nested_objects_default_to_all_their_defaults(
    schema: dict[str, Any], path: str, model: type[crd.BaseModel]
) -> None:
    # The API server checks a default against the CEL rules before filling in nested defaults,
    # so `{}` would not do: the default of an object holds every field's default.
    default = node(schema, path)["default"]
    assert default == model().model_dump(mode="json", exclude_none=True)
    assert model.model_validate(default) == model()


@pytest.mark.parametrize(
    "path",
    [
        "spec.model.servedName",
        "spec.model.maxModelLen",
        "spec.workers.replicas",
        "spec.workers.tolerations",
        "spec.nats.url",
        "spec.strategy.verifier.url",
    ],
)
def test_optional_fields_have_no_default(schema: dict[str, Any], path: str) -> None:
    assert "default" not in node(schema, path)


@pytest.mark.parametrize(
    ("path", "minimum", "maximum"),
    [
        ("spec.workers.gpusPerWorker", 1, 16),
        ("spec.workers.minReplicas", 0, 1000),
        ("spec.workers.maxReplicas", 1, 1000),
        ("spec.workers.slotsPerWorker", 1, 1024),
        ("spec.strategy.branches", 1, 256),
        ("spec.strategy.confidencePercent", 1, 99),
        ("spec.slo.attainmentPercent", 1, 100),
        ("spec.autoscaling.targetUtilizationPercent", 10, 100),
        ("spec.autoscaling.scaleToZero.idleSeconds", 30, 86400),
        ("spec.autoscaling.scaleToZero.holdSeconds", 0, 3600),
    ],
)
def test_schema_bounds(schema: dict[str, Any], path: str, minimum: int, maximum: int) -> None:
    entry = node(schema, path)
    assert (entry["minimum"], entry["maximum"]) == (minimum, maximum)


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("spec.strategy.default", [member.crd_value for member in StrategyName]),
        (
            "spec.strategy.verifier.type",
            ["None", "Logprob", "HTTP", "RewardModel", "ProcessRewardModel"],
        ),
        (
            "spec.strategy.extractor",
            ["Auto", "Boxed", "Hashes", "AnswerColon", "AnswerIs", "LastNumber", "Regex"],
        ),
        ("spec.autoscaling.mode", ["Builtin", "External"]),
        ("spec.slo.loadAdaptation", ["Static", "Shrink", "ShrinkAndGrow"]),
        ("spec.workers.tolerations.[].operator", ["Exists", "Equal"]),
    ],
)
def test_enums_are_camel_case(schema: dict[str, Any], path: str, values: list[str]) -> None:
    assert node(schema, path)["enum"] == values


@pytest.mark.parametrize(
    ("path", "rule_fragment"),
    [
        ("", "self.metadata.name.size() <= 40"),
        ("", "self.metadata.name.matches("),
        ("spec", "self.budget.maxTokensPerBranch < self.model.maxModelLen"),
        ("spec", "self.workers.ackWaitSeconds * 2000 <= self.slo.targetLatencyMilliseconds"),
        ("spec.model", "has(self.name) != has(self.path)"),
        ("spec.workers", "self.minReplicas <= self.maxReplicas"),
        ("spec.workers", "'nvidia.com/gpu' in self.resources.limits"),
        ("spec.strategy", "self.branches <= self.maxBranches"),
        ("spec.strategy", "self.default in self.allowed"),
        ("spec.strategy", "(self.extractor == 'Regex') == has(self.answerPattern)"),
        ("spec.strategy.verifier", "has(self.url)"),
        ("spec.budget", "self.defaultTokens <= self.maxTokens"),
        ("spec.slo", "self.targetLatencyMilliseconds <= self.maxDeadlineMilliseconds"),
        ("spec.autoscaling", "!self.scaleToZero.enabled"),
        ("spec.workers.tolerations.[]", "self.operator != 'Exists' || !has(self.value)"),
        # What admission refuses so that the operator never holds an object it cannot converge.
        ("spec", "!self.autoscaling.scaleToZero.enabled || self.workers.minReplicas == 0"),
        ("spec.strategy", "self.beam.width * self.beam.expansions <= self.maxBranches"),
        ("spec.model", "'--trust-remote-code', '--api-key']"),
        ("spec.model", "'-tp'"),
        ("spec.model", "arg.split('=')[0].replace('_', '-')"),
        ("spec.model", "!self.path.matches('(^|/)[.][.](/|$)')"),
        ("spec.workers", "self.nodeSelector.all(key, key.matches("),
        ("spec.workers.resources", "name.startsWith('hugepages-')"),
        ("spec.workers.resources", "!self.requests[name].startsWith('-')"),
        ("spec.workers.resources", "!self.limits[name].startsWith('-')"),
        ("spec.workers.resources", "add(int(self.requests[name]))).compareTo("),
        ("spec.workers.resources", "(has(self.limits) && name in self.limits)"),
        ("spec.scheduler.resources", "add(int(self.requests[name]))).compareTo("),
        ("spec.workers.tolerations.[]", "has(self.effect) && self.effect == 'NoExecute'"),
        ("spec.workers.tolerations.[]", "self.key.indexOf('/') <= 253"),
        ("spec.nats", "url(self.url).getHostname() != ''"),
        ("spec.strategy.verifier", "url(self.url).getHostname() != ''"),
    ],
)
def test_cel_rules_are_in_the_schema(schema: dict[str, Any], path: str, rule_fragment: str) -> None:
    entry = node(schema, path) if path else schema
    rules = entry.get("x-kubernetes-validations", [])
    matching = [rule for rule in rules if rule_fragment in rule["rule"]]
    assert matching, f"no CEL rule containing {rule_fragment!r} at {path or 'the root'}"
    assert all(rule["message"] for rule in matching)


def test_every_refused_engine_flag_is_in_the_extra_args_rule(schema: dict[str, Any]) -> None:
    rules = [rule["rule"] for rule in node(schema, "spec.model")["x-kubernetes-validations"]]
    extra_args_rule = next(rule for rule in rules if rule.startswith("self.extraArgs.all("))
    flags = set(crd.REFUSED_ENGINE_FLAGS)
    assert flags >= {"--port", "--host", "--served-model-name", "--max-model-len"}
    assert flags >= {"--tensor-parallel-size", "-tp", "--trust-remote-code", "--api-key"}
    assert all(f"'{flag}'" in extra_args_rule for flag in flags)


@pytest.mark.parametrize(
    ("path", "entries"),
    [
        ("spec.workers.nodeSelector", crd.MAX_NODE_SELECTOR_ENTRIES),
        ("spec.workers.resources.requests", crd.MAX_RESOURCE_ENTRIES),
        ("spec.workers.resources.limits", crd.MAX_RESOURCE_ENTRIES),
        ("spec.scheduler.resources.requests", crd.MAX_RESOURCE_ENTRIES),
        ("spec.scheduler.resources.limits", crd.MAX_RESOURCE_ENTRIES),
    ],
)
def test_maps_are_bounded(schema: dict[str, Any], path: str, entries: int) -> None:
    # An unbounded map is a denial of service on etcd and a CEL rule the API server cannot cost.
    assert node(schema, path)["maxProperties"] == entries
    assert 8 <= entries <= 64


def spec_with(path: str, value: str) -> dict[str, Any]:
    """A minimal spec with the string `value` at `path` (one of PATTERN_CASES' paths)."""
    spec: dict[str, Any] = {"model": {"name": "org/m"}}
    match path:
        case "spec.model.name":
            spec["model"] = {"name": value}
        case "spec.model.path":
            spec["model"] = {"path": value}
        case "spec.workers.engineImage" | "spec.workers.image" | "spec.scheduler.image":
            section, field = path.split(".")[1:]
            spec[section] = {field: value}
        case "spec.workers.tolerations.[].key":
            spec["workers"] = {"tolerations": [{"key": value, "operator": "Exists"}]}
        case "spec.workers.tolerations.[].value":
            spec["workers"] = {"tolerations": [{"key": "dedicated", "value": value}]}
        case "spec.workers.nodeSelector.{}":
            spec["workers"] = {"nodeSelector": {"nvidia.com/gpu.product": value}}
        case "spec.nats.url":
            spec["nats"] = {"url": value}
        case "spec.strategy.verifier.url":
            spec["strategy"] = {"verifier": {"type": "HTTP", "url": value}}
    return spec


DIGEST = "sha256:" + "0123456789abcdef" * 4
PATTERN_CASES: list[tuple[str, list[str], list[str]]] = [
    (
        "spec.model.name",
        ["Qwen/Qwen2.5-1.5B-Instruct", "gpt2", "org/m", "a_b/c.d-e", "_x/1.5"],
        [
            "--trust-remote-code",
            "../../etc",
            "org/../m",
            ".hidden",
            "-x/m",
            "org/-m",
            "a b",
            "org/m;rm -rf /",
            "org/m\nx",
            "a/b/c",
            "org/",
            "/m",
            "org/m.",
            "",
        ],
    ),
    (
        "spec.model.path",
        ["/models/qwen", "/", "/models/v1.5/..weights", "/a/.b"],
        [
            "models/qwen",
            "./models",
            "/models/a b",
            "/models/\tx",
            "/models/\nx",
            "/m\x00",
            "/m\x7f",
            "",
        ],
    ),
    (
        "spec.workers.engineImage",
        [
            "vllm/vllm-openai:v0.32.0",
            "nvcr.io/nvidia/vllm:25.01-py3",
            "localhost:5000/e",
            f"ghcr.io/a/b@{DIGEST}",
            f"a:b@{DIGEST}",
            "[::1]:5000/x:y",
            "Registry.Example/x",
        ],
        [
            "",
            " ",
            "vllm/vllm openai:v1",
            "vllm/vllm-openai:v1 ",
            "VLLM:v1",
            "a:",
            "a@sha256:x",
            "-a",
            "a//b",
            ":tag",
        ],
    ),
    ("spec.workers.image", ["ghcr.io/ponder-dev/ponder:0.1.0", "ponder"], ["", "a b"]),
    ("spec.scheduler.image", ["registry.example.com/me/ponder:dev"], ["", "ponder dev"]),
    (
        "spec.workers.tolerations.[].key",
        ["nvidia.com/gpu", "dedicated", "a.b-c_d", "example.com/A.b"],
        ["a b", "-x", "x-", "Example.com/x", "a/b/c", "/x", "x/", "a" * 64, ""],
    ),
    ("spec.workers.tolerations.[].value", ["llm", "", "A-1.b_c"], ["a b", "-x", "a" * 64]),
    (
        "spec.workers.nodeSelector.{}",
        ["H100", "", "NVIDIA-H100-80GB-HBM3"],
        ["H100 SXM", "x;y", "a" * 64, "-x"],
    ),
    (
        "spec.nats.url",
        ["nats://nats.ponder-system:4222", "tls://u:p@nats:4222", "wss://[::1]:443"],
        ["nats://", "http://nats:4222", "nats://a b", "nats.ponder-system:4222"],
    ),
    (
        "spec.strategy.verifier.url",
        ["http://verifier.default:8000/score", "https://rm.example.com"],
        ["http://", "ftp://x", "http://a b", "verifier:8000"],
    ),
]


@pytest.mark.parametrize(
    ("path", "accepted", "refused"), PATTERN_CASES, ids=[path for path, _, _ in PATTERN_CASES]
)
def test_patterns_accept_valid_and_refuse_unsafe_values(
    schema: dict[str, Any], path: str, accepted: list[str], refused: list[str]
) -> None:
    # The schema's pattern (what the API server checks) and the pydantic type (what the operator
    # reads) must agree; `..` segments and URL hosts are CEL's (tested in tests/e2e).
    head, _, tail = path.rpartition(".")
    entry = node(schema, head)["additionalProperties"] if tail == "{}" else node(schema, path)
    pattern = re.compile(entry["pattern"])
    for value in accepted:
        assert pattern.search(value), (path, value)
        ReasoningServiceSpec.model_validate(spec_with(path, value))
    for value in refused:
        if pattern.search(value):  # refused by minLength or a CEL rule instead
            assert value == "" or path in {"spec.nats.url", "spec.strategy.verifier.url"}, value
            continue
        with pytest.raises(ValidationError):
            ReasoningServiceSpec.model_validate(spec_with(path, value))


def test_scale_subresource_points_at_worker_replicas(manifest: dict[str, Any]) -> None:
    version = manifest["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.workers.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns(manifest: dict[str, Any], schema: dict[str, Any]) -> None:
    columns = manifest["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == [
        "Model",
        "Strategy",
        "Ready",
        "Queue",
        "P95",
        "SLO",
        "Age",
        "Tokens",
        "EarlyStop",
    ]
    # What test-time compute spends and saves, under `kubectl get rsvc -o wide` only.
    assert [c["name"] for c in columns if c.get("priority") == 1] == ["Tokens", "EarlyStop"]
    for column in columns:
        if column["name"] != "Age":
            assert node(schema, column["jsonPath"].lstrip(".")), column


def test_status_conditions_are_a_map_keyed_by_type(schema: dict[str, Any]) -> None:
    conditions = node(schema, "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(node(schema, "status.conditions.[]")["properties"]) >= {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def test_crd_strategy_names_are_the_camel_case_of_the_request_names() -> None:
    assert [member.value for member in StrategyType] == [m.crd_value for m in StrategyName]
    assert [StrategyName.from_crd(member) for member in StrategyType] == list(StrategyName)


@pytest.mark.parametrize("example", sorted((REPO_ROOT / "examples").glob("*.yaml")))
def test_examples_are_valid_reasoning_services(example: Path) -> None:
    for document in yaml.safe_load_all(example.read_text()):
        if document and document.get("kind") == crd.KIND:
            ReasoningService.model_validate(document)


def test_spec_round_trips_in_camel_case() -> None:
    spec = ReasoningServiceSpec.model_validate(
        {"model": {"name": "m", "maxModelLen": 2048}, "workers": {"slotsPerWorker": 8}}
    )
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["model"] == {"name": "m", "maxModelLen": 2048, "extraArgs": []}
    assert dumped["workers"]["slotsPerWorker"] == 8
    assert ReasoningServiceSpec.model_validate(dumped) == spec


def test_spec_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="slotPerWorker"):
        ReasoningServiceSpec.model_validate(
            {"model": {"name": "m"}, "workers": {"slotPerWorker": 8}}
        )


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(unclosed", "spec.strategy.answerPattern: answer pattern '(unclosed' is not a valid"),
        ("x" * 257, "at most 256 characters"),
    ],
)
def test_spec_rejects_an_answer_pattern_that_is_no_regex(pattern: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ReasoningServiceSpec.model_validate(
            {"model": {"name": "m"}, "strategy": {"extractor": "Regex", "answerPattern": pattern}}
        )


def test_generated_yaml_parses_back_to_the_manifest() -> None:
    assert yaml.safe_load(crd_gen.render_yaml()) == crd_gen.crd_manifest()
