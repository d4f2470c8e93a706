"""Admission of ReasoningServices by the API server alone, against the local control plane.

Every object is sent with `kubectl create --dry-run=server --validate=strict` to the CRD the
chart installs: OpenAPI bounds, patterns and CEL rules, no webhook. Each bad object is one the
operator could not converge or should not run (a contradiction, an unbounded map, a model name
that is a flag or a path, an image, quantity, toleration or URL the Pod API or a client would
refuse later, an engine flag that fights Ponder's) and must be refused with a message on the
field to change. Each valid edge case (every minimum, every maximum, defaults only, the shipped
example, the largest maps) must be admitted, so the rules refuse no more than they should.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ponder.local.cluster.commands import CommandError, Kubectl
from tests.e2e.chart_fixtures import ChartRelease

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "examples" / "reasoningservice.yaml"
CHART_CRD = REPO_ROOT / "charts" / "ponder" / "crds" / "ponder.dev_reasoningservices.yaml"
ABSENT = object()
"""A change that removes the key (e.g. model.name, to set model.path instead)."""


def sample() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return document


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in: dicts recursively, other values replaced, ABSENT removed."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ABSENT:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def service(spec_changes: dict[str, Any]) -> dict[str, Any]:
    """The shipped example with `spec_changes` merged into its spec."""
    body = sample()
    body["spec"] = merged(body["spec"], spec_changes)
    return body


async def create_dry_run(kubectl: Kubectl, body: dict[str, Any]) -> str:
    return await kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        "default",
        "-f",
        "-",
        stdin=json.dumps(body),
    )


# --- what admission refuses ----------------------------------------------------------------------

NAME_MISMATCH = "spec.model.name in body should match"
PATH_MISMATCH = "spec.model.path in body should match"
EXTRA_ARGS_REFUSED = "spec.model.extraArgs may not set --port, --host"
LONG_PREFIX = ".".join(["a" * 50] * 5) + "x" * 4  # a DNS subdomain of 258 characters


def labels(count: int) -> dict[str, str]:
    return {f"example.com/label-{index}": "x" for index in range(count)}


def resources(count: int) -> dict[str, str]:
    return {f"example.com/device-{index}": "1" for index in range(count)}


def extra_args(*args: str) -> dict[str, Any]:
    return {"model": {"extraArgs": list(args)}}


def model_name(name: str) -> dict[str, Any]:
    return {"model": {"name": name}}


def model_path(path: str) -> dict[str, Any]:
    return {"model": {"name": ABSENT, "path": path}}


def workers(**fields: Any) -> dict[str, Any]:
    return {"workers": fields}


def worker_resources(**fields: Any) -> dict[str, Any]:
    return {"workers": {"resources": fields}}


def toleration(**fields: Any) -> dict[str, Any]:
    return {"workers": {"tolerations": [fields]}}


REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, spec changes, the field the refusal names, what it says)
    # contradictions
    (
        "scale to zero with minReplicas 1",
        {"autoscaling": {"scaleToZero": {"enabled": True}}},
        "spec.workers.minReplicas",
        "spec.workers.minReplicas must be 0 when spec.autoscaling.scaleToZero is enabled",
    ),
    (
        "beam of 8 x 8 above maxBranches 32",
        {"strategy": {"beam": {"width": 8, "expansions": 8}}},
        "spec.strategy.beam",
        "spec.strategy.beam.width x spec.strategy.beam.expansions must not exceed "
        "spec.strategy.maxBranches",
    ),
    (
        "stopping rule Verifier without a verifier",
        {"strategy": {"stoppingRule": "Verifier"}},
        "spec.strategy.stoppingRule",
        "spec.strategy.stoppingRule Verifier needs a verifier",
    ),
    # unbounded maps
    (
        "a nodeSelector of 65 labels",
        workers(nodeSelector=labels(65)),
        "spec.workers.nodeSelector",
        "must have at most 64 items",
    ),
    (
        "a nodeSelector of 5000 labels",
        workers(nodeSelector=labels(5000)),
        "spec.workers.nodeSelector",
        "must have at most 64 items",
    ),
    (
        "9 resource requests",
        worker_resources(requests=resources(9), limits=resources(8)),
        "spec.workers.resources.requests",
        "must have at most 8 items",
    ),
    (
        "9 scheduler resource limits",
        {"scheduler": {"resources": {"limits": resources(9)}}},
        "spec.scheduler.resources.limits",
        "must have at most 8 items",
    ),
    # model names that are arguments or paths
    ("model name a flag", model_name("--trust-remote-code"), "spec.model.name", NAME_MISMATCH),
    ("model name a relative path", model_name("../../etc"), "spec.model.name", NAME_MISMATCH),
    ("model name with ..", model_name("org/../m"), "spec.model.name", NAME_MISMATCH),
    ("model name a dot file", model_name(".hidden/m"), "spec.model.name", NAME_MISMATCH),
    ("model name a short flag", model_name("-m"), "spec.model.name", NAME_MISMATCH),
    ("model name with a space", model_name("my model"), "spec.model.name", NAME_MISMATCH),
    ("model name with ;", model_name("org/m;rm -rf /"), "spec.model.name", NAME_MISMATCH),
    ("model name with a newline", model_name("org/m\n--x"), "spec.model.name", NAME_MISMATCH),
    ("model name of three parts", model_name("a/b/c"), "spec.model.name", NAME_MISMATCH),
    ("model name an absolute path", model_name("/models/m"), "spec.model.name", NAME_MISMATCH),
    ("model path relative", model_path("models/m"), "spec.model.path", PATH_MISMATCH),
    ("model path with a space", model_path("/models/m x"), "spec.model.path", PATH_MISMATCH),
    ("model path with a tab", model_path("/models/\tm"), "spec.model.path", PATH_MISMATCH),
    ("model path with a newline", model_path("/models/m\n"), "spec.model.path", PATH_MISMATCH),
    ("model path with DEL", model_path("/models/m\x7f"), "spec.model.path", PATH_MISMATCH),
    *[
        (
            f"model path {path}",
            model_path(path),
            "spec.model.path",
            "spec.model.path must not contain a '..' segment",
        )
        for path in ("/models/../etc", "/..", "/models/..")
    ],
    # images
    *[
        (
            f"{field} {image!r}",
            {section: {field: image}},
            f"spec.{section}.{field}",
            f"spec.{section}.{field} in body should",
        )
        for section, field, image in [
            ("workers", "engineImage", ""),
            ("workers", "engineImage", "vllm/vllm-openai:v0.32.0 --entrypoint sh"),
            ("workers", "engineImage", " vllm/vllm-openai"),
            ("workers", "image", ""),
            ("workers", "image", "ghcr.io/ponder dev/ponder"),
            ("scheduler", "image", ""),
            ("scheduler", "image", "ponder:dev\n"),
        ]
    ],
    # resources the Pod API refuses
    (
        "a negative CPU request",
        worker_resources(requests={"cpu": "-1"}),
        "spec.workers.resources.requests",
        "resources.requests must not be negative",
    ),
    (
        "a negative integer CPU request",
        worker_resources(requests={"cpu": -2}),
        "spec.workers.resources.requests",
        "resources.requests must not be negative",
    ),
    (
        "a negative memory limit",
        worker_resources(limits={"memory": "-16Gi"}),
        "spec.workers.resources.limits",
        "resources.limits must not be negative",
    ),
    (
        "a negative scheduler request",
        {"scheduler": {"resources": {"requests": {"memory": "-1Mi"}}}},
        "spec.scheduler.resources.requests",
        "resources.requests must not be negative",
    ),
    (
        "memory requests above limits",
        worker_resources(requests={"memory": "32Gi"}, limits={"memory": "16Gi"}),
        "spec.workers.resources.requests",
        "resources.requests must not exceed resources.limits",
    ),
    (
        "an integer CPU request above a string limit",
        worker_resources(requests={"cpu": 4}, limits={"cpu": "2"}),
        "spec.workers.resources.requests",
        "resources.requests must not exceed resources.limits",
    ),
    (
        "millicores above an integer limit",
        {"scheduler": {"resources": {"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}}},
        "spec.scheduler.resources.requests",
        "resources.requests must not exceed resources.limits",
    ),
    (
        "hugepages requested below their limit",
        worker_resources(
            requests={"memory": "1Gi", "hugepages-2Mi": "2Mi"},
            limits={"memory": "16Gi", "hugepages-2Mi": "4Mi"},
        ),
        "spec.workers.resources.requests",
        "must equal them for hugepages and extended resources",
    ),
    (
        "an extended resource requested without a limit",
        worker_resources(requests={"example.com/fpga": 1}),
        "spec.workers.resources.limits",
        "resources.limits must be set for every hugepages or extended resource",
    ),
    *[
        (
            f"resource name {name!r} in {field}",
            worker_resources(**{field: {name: "1"}}),
            f"spec.workers.resources.{field}",
            f"resources.{field} may name cpu, memory, ephemeral-storage, hugepages-<size> or "
            "an extended resource",
        )
        for name, field in [
            ("cpus", "requests"),
            ("memroy", "limits"),
            ("gpu", "limits"),
            ("hugepages-big", "limits"),
            ("kubernetes.io/widget", "limits"),
            ("example.com/my fpga", "limits"),
        ]
    ],
    # tolerations and node selectors the Pod API refuses
    (
        "tolerationSeconds with NoSchedule",
        toleration(key="dedicated", value="llm", effect="NoSchedule", tolerationSeconds=30),
        "spec.workers.tolerations[0].tolerationSeconds",
        "tolerationSeconds applies to effect NoExecute only",
    ),
    (
        "tolerationSeconds without an effect",
        toleration(key="dedicated", operator="Exists", tolerationSeconds=30),
        "spec.workers.tolerations[0].tolerationSeconds",
        "tolerationSeconds applies to effect NoExecute only",
    ),
    (
        "a toleration key with a space",
        toleration(key="gpu type", operator="Exists"),
        "spec.workers.tolerations[0].key",
        "spec.workers.tolerations[0].key in body should match",
    ),
    (
        "a toleration key with a prefix of 258 characters",
        toleration(key=f"{LONG_PREFIX}/gpu", operator="Exists"),
        "spec.workers.tolerations[0].key",
        "a toleration key's prefix (before '/') must be at most 253 characters",
    ),
    (
        "a toleration value with a space",
        toleration(key="dedicated", value="big llm"),
        "spec.workers.tolerations[0].value",
        "spec.workers.tolerations[0].value in body should match",
    ),
    *[
        (
            f"nodeSelector key {key!r}",
            workers(nodeSelector={key: "x"}),
            "spec.workers.nodeSelector",
            "spec.workers.nodeSelector keys must be label keys",
        )
        for key in ("gpu type", "-gpu", "gpu/", "a/b/c", "Example.com/gpu", f"{LONG_PREFIX}/g")
    ],
    (
        "a nodeSelector value with a space",
        workers(nodeSelector={"product": "H100 SXM"}),
        "spec.workers.nodeSelector.product",
        "spec.workers.nodeSelector.product in body should match",
    ),
    # URLs without a host
    *[
        (
            f"NATS URL {url!r}",
            {"nats": {"url": url}},
            "spec.nats.url",
            "spec.nats.url must be a URL with a host",
        )
        for url in ("nats://:4222", "nats:///jobs", "tls://user:pass@:4222")
    ],
    ("NATS URL nats://", {"nats": {"url": "nats://"}}, "spec.nats.url", "spec.nats.url in body"),
    *[
        (
            f"tracing endpoint {url!r}",
            {"tracing": {"endpoint": url}},
            "spec.tracing.endpoint",
            "spec.tracing.endpoint must be a URL with a host",
        )
        for url in ("http://:4318", "https:///v1/traces")
    ],
    (
        "tracing endpoint without a scheme",
        {"tracing": {"endpoint": "otel-collector:4318"}},
        "spec.tracing.endpoint",
        "spec.tracing.endpoint in body should match",
    ),
    (
        "tracing at 101 percent",
        {"tracing": {"endpoint": "http://otel:4318", "samplePercent": 101}},
        "spec.tracing.samplePercent",
        "spec.tracing.samplePercent in body should be less than or equal to 100",
    ),
    (
        "NATS URL with a space",
        {"nats": {"url": "nats://nats ponder:4222"}},
        "spec.nats.url",
        "spec.nats.url in body should match",
    ),
    *[
        (
            f"verifier URL {url!r}",
            {"strategy": {"verifier": {"type": "HTTP", "url": url}}},
            "spec.strategy.verifier.url",
            "spec.strategy.verifier.url must be an http(s) URL with a host",
        )
        for url in ("http://:8000/score", "http:///score", "https://?x=1")
    ],
    (
        "verifier URL http://",
        {"strategy": {"verifier": {"type": "HTTP", "url": "http://"}}},
        "spec.strategy.verifier.url",
        "spec.strategy.verifier.url in body should match",
    ),
    # engine flags that are dangerous or fight Ponder's own
    *[
        (f"extraArgs {args}", extra_args(*args), "spec.model.extraArgs", EXTRA_ARGS_REFUSED)
        for args in [
            ("--trust-remote-code",),
            ("--trust_remote_code",),
            ("--trust-remote-code=true",),
            ("--trust-remote",),  # argparse expands an unambiguous abbreviation
            ("--api-key", "secret"),
            ("--api-key=secret",),
            ("--api_key", "secret"),
            ("-tp", "2"),
            ("-tp=2",),
            ("--tensor-parallel-size", "2"),
            ("--tensor_parallel_size=2",),
            ("--max-model-len", "8192"),
            ("--max_model_len", "8192"),
            ("--max_model_len=8192",),
            ("--port=9000",),
            ("--host", "0.0.0.0"),
            ("--served_model_name", "other"),
            ("--gpu-memory-utilization", "0.9", "--trust-remote-code"),
        ]
    ],
]


@pytest.mark.parametrize(
    ("case", "changes", "field", "message"), REFUSED, ids=[case for case, *_ in REFUSED]
)
async def test_api_server_refuses_what_the_operator_cannot_converge(
    kubectl: Kubectl,
    ponder_release: ChartRelease,
    case: str,
    changes: dict[str, Any],
    field: str,
    message: str,
) -> None:
    with pytest.raises(CommandError) as refused:
        await create_dry_run(kubectl, service(changes))
    stderr = refused.value.stderr
    # The message must sit on the field's own line: one refusal per line, each `field: ...`.
    on_the_field = [line for line in stderr.splitlines() if f"{field}: " in line]
    assert any(message in line for line in on_the_field), stderr


# --- what admission must still accept ------------------------------------------------------------


def spec_schema() -> dict[str, Any]:
    """The spec's OpenAPI schema as the chart installs it."""
    crd: dict[str, Any] = yaml.safe_load(CHART_CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def integer_fields(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every integer field of the spec's objects (not inside lists or maps), with its path."""
    for name, child in schema.get("properties", {}).items():
        if child.get("type") == "integer":
            yield (*path, name), child
        elif child.get("type") == "object":
            yield from integer_fields(child, (*path, name))


def every_integer_at(bound: str, fixes: dict[str, Any]) -> dict[str, Any]:
    """A spec with every integer field at its `minimum` or `maximum`, then `fixes` merged in
    where two bounds contradict a cross-field rule (each fix says which)."""
    spec: dict[str, Any] = {"model": {"name": "org/m"}}
    for path, field in integer_fields(spec_schema()):
        if bound in field:
            spec = merged(spec, nested(path, field[bound]))
    return merged(spec, fixes)


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    result: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        result = {key: result}
    return result


EVERY_MINIMUM_FIXES: dict[str, Any] = {
    # ackWaitSeconds 1 needs a target latency of at least 2 s, and the deadline is at least that
    "slo": {"targetLatencyMilliseconds": 2000, "maxDeadlineMilliseconds": 2000},
}
EVERY_MAXIMUM_FIXES: dict[str, Any] = {
    # the branch cap must stay below the context; B x K within maxBranches; half the SLO ack wait
    "budget": {"maxTokensPerBranch": 1_048_575},
    "strategy": {"beam": {"width": 16, "expansions": 16}},
    "workers": {"ackWaitSeconds": 1800},
}
DIGEST = "sha256:" + "0123456789abcdef" * 4
FULL_RESOURCES = {
    "cpu": "2",
    "memory": "8Gi",
    "ephemeral-storage": "10Gi",
    "hugepages-2Mi": "64Mi",
    "hugepages-1Gi": "2Gi",
    "example.com/fpga": 1,
    "example.com/nic": "2",
    "rdma.example.org/hca": 1,
}


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("the shipped example", sample()),
    (
        "stopping rule Verifier with a verifier",
        service(
            {
                "strategy": {
                    "stoppingRule": "Verifier",
                    "verifier": {"type": "HTTP", "url": "http://verifier.default:8000"},
                }
            }
        ),
    ),
    ("stopping rule Window", service({"strategy": {"stoppingRule": "Window"}})),
    ("defaults only", {**sample(), "spec": {"model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"}}}),
    ("every minimum", {**sample(), "spec": every_integer_at("minimum", EVERY_MINIMUM_FIXES)}),
    ("every maximum", {**sample(), "spec": every_integer_at("maximum", EVERY_MAXIMUM_FIXES)}),
    (
        "every map and list at its largest",
        service(
            {
                "model": {"extraArgs": [f"--arg-{index}" for index in range(64)]},
                "workers": {
                    "nodeSelector": labels(64),
                    "tolerations": [{"key": f"taint-{i}", "operator": "Exists"} for i in range(32)],
                    "resources": {"requests": FULL_RESOURCES, "limits": FULL_RESOURCES},
                },
                "scheduler": {"resources": {"limits": FULL_RESOURCES}},
            }
        ),
    ),
    *[
        (f"model name {name}", service(model_name(name)))
        for name in ("gpt2", "meta-llama/Llama-3.1-8B-Instruct", "a_b/c.d-e", "x" * 253)
    ],
    *[
        (f"model path {path}", service(model_path(path)))
        for path in ("/models/qwen2.5-1.5b", "/", "/models/v1..2/..weights", "/a/.cache/m")
    ],
    (
        "images with registries, ports and digests",
        service(
            {
                "workers": {
                    "engineImage": f"nvcr.io/nvidia/vllm:25.01-py3@{DIGEST}",
                    "image": "localhost:5000/ponder:dev",
                },
                "scheduler": {"image": f"registry.example.com/me/ponder@{DIGEST}"},
            }
        ),
    ),
    (
        "requests equal to, below and without limits, integers and strings mixed",
        service(
            {
                "workers": {
                    "resources": {
                        "requests": {"cpu": "500m", "memory": 0, "hugepages-2Mi": "2Mi"},
                        "limits": {"cpu": 1, "memory": "1", "hugepages-2Mi": 2097152},
                    }
                },
                "scheduler": {
                    "resources": {"requests": {"cpu": 2}, "limits": {"example.com/fpga": "1"}}
                },
            }
        ),
    ),
    (
        "tolerations the Pod API takes",
        service(
            {
                "workers": {
                    "tolerations": [
                        {"operator": "Exists"},
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {
                            "key": "node.kubernetes.io/unreachable",
                            "operator": "Exists",
                            "effect": "NoExecute",
                            "tolerationSeconds": 0,
                        },
                        {"key": "dedicated", "value": "", "effect": "PreferNoSchedule"},
                        {"key": f"{'a' * 253}/{'b' * 63}", "operator": "Exists"},
                    ]
                }
            }
        ),
    ),
    (
        "node selectors the Pod API takes",
        service(
            {
                "workers": {
                    "nodeSelector": {
                        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                        "kubernetes.io/arch": "amd64",
                        "pool": "",
                        "A_b.c-D": "x" * 63,
                        f"{'a' * 253}/{'b' * 63}": "v",
                    }
                }
            }
        ),
    ),
    (
        "scale to zero with minReplicas 0",
        service({"workers": {"minReplicas": 0}, "autoscaling": {"scaleToZero": {"enabled": True}}}),
    ),
    (
        "a beam of exactly maxBranches",
        service({"strategy": {"beam": {"width": 4, "expansions": 8}, "maxBranches": 32}}),
    ),
    (
        "a wide beam while BeamSearch is not allowed",
        service(
            {
                "strategy": {
                    "beam": {"width": 64, "expansions": 64},
                    "allowed": ["AdaptiveConsistency", "SelfConsistency"],
                }
            }
        ),
    ),
    (
        "tracing to a collector, a tenth sampled",
        service(
            {
                "tracing": {
                    "endpoint": "http://otel-collector.observability:4318",
                    "samplePercent": 10,
                }
            }
        ),
    ),
    *[
        (f"NATS URL {url}", service({"nats": {"url": url}}))
        for url in (
            "nats://nats.ponder-system:4222",
            "tls://user:secret@nats.example.com:4222",
            "wss://[::1]:443/nats",
        )
    ],
    (
        "a verifier URL with a path",
        service(
            {
                "strategy": {
                    "verifier": {"type": "HTTP", "url": "http://verifier.default:8000/score"}
                }
            }
        ),
    ),
    (
        "engine flags Ponder leaves to the user",
        service(
            extra_args(
                "--gpu-memory-utilization=0.85",
                "--enable-prefix-caching",
                "--max-num-seqs",
                "64",
                "--max-num-batched-tokens",
                "8192",
                "--api-server-count",
                "2",
                "--max-logprobs",
                "-1",
                "--hf-overrides",
                '{"rope_scaling": {"type": "yarn"}}',
                "--",
            )
        ),
    ),
]


@pytest.mark.parametrize(("case", "body"), ACCEPTED, ids=[case for case, _ in ACCEPTED])
async def test_api_server_accepts_valid_edge_cases(
    kubectl: Kubectl, ponder_release: ChartRelease, case: str, body: dict[str, Any]
) -> None:
    output = await create_dry_run(kubectl, body)
    assert "created (server dry run)" in output, output
