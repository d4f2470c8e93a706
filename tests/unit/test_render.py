"""Rendering a ReasoningService into its children (pure)."""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import ponder.scheduler.config as scheduler_config
import ponder.workers.config as workers_config
from ponder.api.crd import ReasoningServiceSpec
from ponder.api.service_config import (
    AnswerProbe,
    AuthMode,
    DeepConfConfig,
    DeepConfMode,
    EarlyExit,
    EarlyExitConfig,
    ExtractorKind,
    ServiceConfig,
    TokenConfidence,
    VerifierKind,
)
from ponder.api.settings import Option
from ponder.api.strategy import StrategyName
from ponder.operator import render
from ponder.operator.service_config import service_config_from_spec

OWNER = render.Owner(namespace="team-a", name="math", uid="1234-abcd")
NATS = "nats://nats.ponder-system:4222"


def spec_of(**overrides: Any) -> ReasoningServiceSpec:
    body: dict[str, Any] = {"model": {"name": "Qwen/Qwen2.5-1.5B-Instruct"}}
    body.update(overrides)
    return ReasoningServiceSpec.model_validate(body)


def children(spec: ReasoningServiceSpec, replicas: int = 2) -> dict[str, dict[str, Any]]:
    manifests = render.render_children(OWNER, spec, replicas, NATS)
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def test_children_are_named_after_the_service() -> None:
    assert sorted(children(spec_of())) == [
        "ConfigMap/math-config",
        "Deployment/math-scheduler",
        "Deployment/math-workers",
        "NetworkPolicy/math-scheduler",
        "NetworkPolicy/math-workers",
        "PodDisruptionBudget/math-workers",
        "Service/math",
    ]


def test_every_child_is_owned_by_the_service_and_labelled() -> None:
    for key, child in children(spec_of()).items():
        metadata = child["metadata"]
        assert metadata["namespace"] == "team-a", key
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "ponder.dev/v1alpha1",
                "kind": "ReasoningService",
                "name": "math",
                "uid": "1234-abcd",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], key
        assert metadata["labels"]["app.kubernetes.io/instance"] == "math", key
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "ponder-operator", key


def test_worker_pods_request_gpus_and_run_vllm_beside_the_worker_loop() -> None:
    workers = children(spec_of(workers={"gpusPerWorker": 2}), replicas=3)["Deployment/math-workers"]
    assert workers["spec"]["replicas"] == 3
    engine = container(workers, "engine")
    assert engine["image"] == "vllm/vllm-openai:v0.32.0"
    assert engine["command"] == ["vllm", "serve"]
    assert engine["args"][0] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert "--tensor-parallel-size" in engine["args"]
    worker = container(workers, "worker")
    assert worker["command"][:7] == [
        "python",
        "-m",
        "ponder.workers",
        "--config",
        "/etc/ponder/service.json",
        "--vllm-url",
        "http://127.0.0.1:8000",
    ]
    assert "nvidia.com/gpu" not in str(worker["resources"])


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_engine_probes_run_in_the_container_against_vllms_loopback_health(probe: str) -> None:
    engine = container(children(spec_of())["Deployment/math-workers"], "engine")
    # The engine listens on loopback only: no port is declared, the probes run inside it.
    assert "ports" not in engine
    assert engine[probe]["exec"]["command"] == ["python3", "-c", render.ENGINE_HEALTH_SCRIPT]
    assert f"http://127.0.0.1:{render.ENGINE_PORT}/health" in render.ENGINE_HEALTH_SCRIPT


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_the_engine_probe_passes_only_on_a_200(status: int, exit_code: int) -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        script = render.ENGINE_HEALTH_SCRIPT.replace(f":{render.ENGINE_PORT}/", f":{port}/")
        ran = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    finally:
        server.shutdown()
    assert ran.returncode == exit_code, ran.stderr


def test_engine_has_shared_memory_at_dev_shm() -> None:
    workers = children(spec_of())["Deployment/math-workers"]
    volumes = {v["name"]: v for v in workers["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container(workers, "engine")["volumeMounts"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"


def test_removed_workers_drain_within_the_longest_deadline() -> None:
    spec = spec_of(slo={"maxDeadlineMilliseconds": 120_000, "targetLatencyMilliseconds": 60_000})
    workers = children(spec)["Deployment/math-workers"]
    pod = workers["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 150
    engine = container(workers, "engine")
    assert engine["lifecycle"]["preStop"]["exec"]["command"][:2] == ["python3", "-c"]
    compile(engine["lifecycle"]["preStop"]["exec"]["command"][2], "preStop", "exec")
    worker = container(workers, "worker")
    drain = worker["command"][worker["command"].index("--drain-seconds") + 1]
    assert 0 < int(drain) < 150
    assert workers["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_explicit_grace_period_wins() -> None:
    workers = children(spec_of(workers={"terminationGracePeriodSeconds": 45}))
    pod = workers["Deployment/math-workers"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 45


@pytest.mark.parametrize(
    ("workers", "tolerations", "node_selector"),
    [
        ({}, [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], None),
        (
            {"tolerations": [{"key": "dedicated", "value": "llm", "effect": "NoSchedule"}]},
            [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
            None,
        ),
        ({"tolerations": []}, [], None),
        (
            {"nodeSelector": {"nvidia.com/gpu.product": "H100"}},
            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            {"nvidia.com/gpu.product": "H100"},
        ),
    ],
)
def test_worker_placement(
    workers: dict[str, Any], tolerations: list[Any], node_selector: dict[str, str] | None
) -> None:
    pod = children(spec_of(workers=workers))["Deployment/math-workers"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == tolerations
    assert pod.get("nodeSelector") == node_selector


@pytest.mark.parametrize(
    ("model", "expected_args"),
    [
        (
            {"name": "org/m"},
            ["org/m", "--served-model-name", "org/m"],
        ),
        (
            {"name": "org/m", "servedName": "m", "maxModelLen": 2048, "extraArgs": ["--seed", "7"]},
            ["org/m", "--served-model-name", "m", "--max-model-len", "2048", "--seed", "7"],
        ),
        ({"path": "/models/m"}, ["/models/m", "--served-model-name", "/models/m"]),
    ],
)
def test_engine_arguments(model: dict[str, Any], expected_args: list[str]) -> None:
    args = render.engine_args(spec_of(model=model))
    fixed = {"--host", "127.0.0.1", "--port", "8000", "--tensor-parallel-size", "1"}
    assert [arg for arg in args if arg not in fixed] == expected_args


def test_scheduler_runs_the_image_entry_point_behind_a_service() -> None:
    rendered = children(spec_of(scheduler={"replicas": 2}))
    scheduler = rendered["Deployment/math-scheduler"]
    assert scheduler["spec"]["replicas"] == 2
    command = container(scheduler, "scheduler")["command"]
    assert command[:5] == [
        "python",
        "-m",
        "ponder.scheduler",
        "--config",
        "/etc/ponder/service.json",
    ]
    probes = container(scheduler, "scheduler")
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = rendered["Service/math"]
    assert service["spec"]["selector"] == scheduler["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert render.endpoint_url(OWNER) == "http://math.team-a.svc:8000/v1"


def test_disruption_budget_selects_the_workers() -> None:
    rendered = children(spec_of())
    pdb = rendered["PodDisruptionBudget/math-workers"]
    workers = rendered["Deployment/math-workers"]
    assert pdb["spec"]["selector"] == workers["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_config_map_holds_the_service_config() -> None:
    config_map = children(spec_of())["ConfigMap/math-config"]
    config = ServiceConfig.model_validate_json(config_map["data"]["service.json"])
    assert (config.namespace, config.name, config.nats_url) == ("team-a", "math", NATS)


def test_pods_roll_when_the_config_changes() -> None:
    def annotation(spec: ReasoningServiceSpec) -> str:
        workers = children(spec)["Deployment/math-workers"]
        return str(workers["spec"]["template"]["metadata"]["annotations"]["ponder.dev/config-hash"])

    assert annotation(spec_of()) == annotation(spec_of())
    assert annotation(spec_of()) != annotation(spec_of(strategy={"branches": 4}))


@pytest.mark.parametrize(
    ("overrides", "read", "expected"),
    [
        ({}, lambda c: c.model, "Qwen/Qwen2.5-1.5B-Instruct"),
        ({"model": {"name": "x", "servedName": "y"}}, lambda c: c.model, "y"),
        ({"model": {"name": "x", "maxModelLen": 4096}}, lambda c: c.max_model_len, 4096),
        ({}, lambda c: c.strategy.default, StrategyName.ADAPTIVE_CONSISTENCY),
        (
            {"strategy": {"default": "BestOfN", "allowed": ["BestOfN", "Single"]}},
            lambda c: (c.strategy.default, c.strategy.allowed),
            (StrategyName.BEST_OF_N, [StrategyName.BEST_OF_N, StrategyName.SINGLE]),
        ),
        ({"strategy": {"confidencePercent": 90}}, lambda c: c.strategy.confidence, 0.9),
        ({"strategy": {"temperature": "0.25"}}, lambda c: c.strategy.temperature, 0.25),
        ({"strategy": {"extractor": "Boxed"}}, lambda c: c.strategy.extractor, ExtractorKind.BOXED),
        (
            {"strategy": {"extractor": "LastNumber"}},
            lambda c: c.strategy.extractor,
            ExtractorKind.LAST_NUMBER,
        ),
        (
            {"strategy": {"extractor": "Regex", "answerPattern": "= *(-?[0-9]+)"}},
            lambda c: (c.strategy.extractor, c.strategy.answer_pattern),
            (ExtractorKind.REGEX, "= *(-?[0-9]+)"),
        ),
        (
            {"strategy": {"verifier": {"type": "HTTP", "url": "http://v:80"}}},
            lambda c: (c.strategy.verifier.kind, c.strategy.verifier.url),
            (VerifierKind.HTTP, "http://v:80"),
        ),
        (
            {"strategy": {"verifier": {"type": "RewardModel", "url": "http://r", "model": "prm"}}},
            lambda c: (c.strategy.verifier.kind, c.strategy.verifier.model),
            (VerifierKind.REWARD_MODEL, "prm"),
        ),
        (
            {
                "strategy": {
                    "verifier": {
                        "type": "ProcessRewardModel",
                        "url": "http://p",
                        "acceptScorePercent": 70,
                    }
                }
            },
            lambda c: (c.strategy.verifier.kind, c.strategy.verifier.accept_score),
            (VerifierKind.PROCESS_REWARD_MODEL, 0.7),
        ),
        ({"strategy": {"beam": {"width": 2, "expansions": 3}}}, lambda c: c.strategy.beam.width, 2),
        (
            {"strategy": {"budgetForcing": {"maxWaits": 5}}},
            lambda c: c.strategy.budget_forcing.max_waits,
            5,
        ),
        ({}, lambda c: c.strategy.give_up, 0.5),
        ({"strategy": {"giveUpPercent": 100}}, lambda c: c.strategy.give_up, 1.0),
        ({}, lambda c: c.strategy.stopping_rule, None),
        ({"strategy": {"stoppingRule": "Window"}}, lambda c: c.strategy.stopping_rule, "window"),
        (
            {"strategy": {"stoppingRule": "Confidence"}},
            lambda c: c.strategy.stopping_rule,
            "confidence",
        ),
        (
            {
                "strategy": {
                    "stoppingRule": "Verifier",
                    "verifier": {"type": "HTTP", "url": "http://v"},
                }
            },
            lambda c: c.strategy.stopping_rule,
            "verifier",
        ),
        ({}, lambda c: c.strategy.deep_conf, DeepConfConfig()),
        (
            {
                "strategy": {
                    "deepConf": {
                        "mode": "Offline",
                        "tokenConfidence": "TopK",
                        "topK": 8,
                        "windowTokens": 16,
                        "keepPercent": 90,
                        "consensusPercent": 80,
                    }
                }
            },
            lambda c: c.strategy.deep_conf,
            DeepConfConfig(
                mode=DeepConfMode.OFFLINE,
                token_confidence=TokenConfidence.TOP_K,
                top_k=8,
                window_tokens=16,
                keep_percent=90,
                consensus=0.8,
            ),
        ),
        ({}, lambda c: c.strategy.early_exit.default, EarlyExit.NONE),
        (
            {
                "strategy": {
                    "earlyExit": {
                        "default": "AnswerProbe",
                        "everyTokens": 16,
                        "window": 3,
                        "cue": " So the answer is",
                        "probeTokens": 4,
                    }
                }
            },
            lambda c: c.strategy.early_exit,
            EarlyExitConfig(
                default=EarlyExit.ANSWER_PROBE,
                probe=AnswerProbe(
                    every_tokens=16, window=3, cue=" So the answer is", probe_tokens=4
                ),
            ),
        ),
        ({"budget": {"defaultTokens": 100}}, lambda c: c.budget.default_tokens, 100),
        ({"budget": {"maxTokensPerBranch": 64}}, lambda c: c.budget.max_tokens_per_branch, 64),
        ({"slo": {"targetLatencyMilliseconds": 500}}, lambda c: c.slo.target_latency_ms, 500),
        ({"slo": {"attainmentPercent": 99}}, lambda c: c.slo.attainment, 0.99),
        ({}, lambda c: c.slo.usage_settle_ms, 200),
        ({"slo": {"usageSettleMilliseconds": 0}}, lambda c: c.slo.usage_settle_ms, 0),
        ({}, lambda c: c.slo.load_adaptation, "shrink"),
        ({"slo": {"loadAdaptation": "Static"}}, lambda c: c.slo.load_adaptation, "static"),
        (
            {"slo": {"loadAdaptation": "ShrinkAndGrow"}},
            lambda c: c.slo.load_adaptation,
            "shrink-and-grow",
        ),
        ({"workers": {"slotsPerWorker": 64}}, lambda c: c.slots_per_worker, 64),
        ({"workers": {"maxDeliveries": 5}}, lambda c: c.job_max_deliver, 5),
        ({"workers": {"ackWaitSeconds": 90}}, lambda c: c.job_ack_wait_seconds, 90.0),
        ({}, lambda c: c.nats_url, NATS),
        ({"nats": {"url": "nats://other:4222"}}, lambda c: c.nats_url, "nats://other:4222"),
    ],
)
def test_service_config_from_spec(overrides: dict[str, Any], read: Any, expected: object) -> None:
    config = service_config_from_spec("team-a", "math", spec_of(**overrides), NATS)
    assert read(config) == expected


def test_worker_selector_matches_the_pod_labels() -> None:
    workers = children(spec_of())["Deployment/math-workers"]
    labels = workers["spec"]["template"]["metadata"]["labels"]
    for pair in render.worker_selector("math").split(","):
        key, value = pair.split("=")
        assert labels[key] == value


@pytest.mark.parametrize(
    ("deployment", "name", "program_options", "parser", "command_prefix"),
    [
        (
            "Deployment/math-workers",
            "worker",
            workers_config.OPTIONS,
            workers_config.build_parser,
            render.WORKER_COMMAND,
        ),
        (
            "Deployment/math-scheduler",
            "scheduler",
            scheduler_config.OPTIONS,
            scheduler_config.build_parser,
            render.SCHEDULER_COMMAND,
        ),
    ],
)
def test_rendered_containers_take_their_pod_name_as_id_under_the_variable_their_program_reads(
    deployment: str,
    name: str,
    program_options: tuple[Option[Any], ...],
    parser: Callable[[], argparse.ArgumentParser],
    command_prefix: list[str],
) -> None:
    loop = container(children(spec_of())[deployment], name)
    id_variable = next(option.env for option in program_options if option.dest.endswith("_id"))
    assert loop["env"] == [
        {"name": id_variable, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    # Every flag the operator passes is one the program takes (argparse exits otherwise).
    parser().parse_args(loop["command"][len(command_prefix) :])


def test_every_rendered_pod_is_locked_down() -> None:
    # docs/architecture.md, "Pod security": no token, RuntimeDefault seccomp, and every
    # container non-root on a read-only root filesystem with no capability.
    deployments = [c for c in children(spec_of()).values() if c["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for each in pod["containers"]:
            security = each["securityContext"]
            assert security["runAsNonRoot"] is True, each["name"]
            assert security["readOnlyRootFilesystem"] is True, each["name"]
            assert security["allowPrivilegeEscalation"] is False, each["name"]
            assert security["capabilities"] == {"drop": ["ALL"]}, each["name"]
            # Whatever a container writes is an emptyDir of its pod.
            volumes = {v["name"]: v for v in pod["volumes"]}
            for mount in each["volumeMounts"]:
                volume = volumes[mount["name"]]
                assert "emptyDir" in volume or mount.get("readOnly") is True, mount


def test_the_engine_runs_as_a_user_with_a_writable_home() -> None:
    workers = children(spec_of())["Deployment/math-workers"]
    engine = container(workers, "engine")
    # The vLLM image declares no user: runAsNonRoot alone would refuse to start it.
    assert engine["securityContext"]["runAsUser"] == render.ENGINE_USER != 0
    assert {"name": "HOME", "value": render.ENGINE_HOME} in engine["env"]
    mounts = {m["mountPath"] for m in engine["volumeMounts"]}
    assert {render.ENGINE_HOME, "/tmp", render.SHM_PATH} <= mounts


def test_api_keys_mount_the_secret_into_the_schedulers_only() -> None:
    spec = spec_of(auth={"type": "ApiKeys", "secretName": "math-keys", "secretKey": "tenants"})
    rendered = children(spec)
    pod = rendered["Deployment/math-scheduler"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    # No subPath: the kubelet swaps an edited Secret in, and the scheduler reads it again.
    assert volume["secret"] == {
        "secretName": "math-keys",
        "items": [{"key": "tenants", "path": "keys.yaml"}],
    }
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
    assert mount == {"name": "api-keys", "mountPath": "/etc/ponder/auth", "readOnly": True}
    config = service_config_from_spec("team-a", "math", spec, NATS)
    assert (config.auth.mode, config.auth.keys_file) == (
        AuthMode.API_KEYS,
        "/etc/ponder/auth/keys.yaml",
    )
    workers = rendered["Deployment/math-workers"]["spec"]["template"]["spec"]
    assert all(v["name"] != "api-keys" for v in workers["volumes"])
    # Without keys nothing is mounted and the service is open (its status says so).
    open_pod = children(spec_of())["Deployment/math-scheduler"]["spec"]["template"]["spec"]
    assert all(v["name"] != "api-keys" for v in open_pod["volumes"])
    assert service_config_from_spec("team-a", "math", spec_of(), NATS).auth.mode is AuthMode.NONE
