"""The operator against the local control plane and a real NATS.

The operator runs as a local process (`python -m ponder.operator`) with a token of the Helm
chart's ServiceAccount, so every call it makes is checked against the chart's RBAC. kwok plays
the kubelets: worker pods are scheduled by the real scheduler onto the fake GPU nodes and marked
Running and Ready, but nothing in them runs, so the job queue only moves when a test moves it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import pytest_asyncio
import yaml
from nats.js.errors import NotFoundError

from ponder.api.subjects import ServiceSubjects
from ponder.api.wire import BranchJob, SamplingParams
from ponder.local.cluster.commands import CommandError, Kubectl
from ponder.local.nats import NatsServer
from ponder.local.processes import free_port, stop_process, wait_for_port
from ponder.operator.handlers import RETRY_SECONDS
from tests.cluster.eventually import eventually

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "examples" / "reasoningservice.yaml"
TICK_SECONDS = 2.0
"""The operator's timer interval in these tests (PONDER_AUTOSCALE_INTERVAL_SECONDS)."""
SETTLE_SECONDS = 120.0
"""The longest a test waits for the cluster to converge: only a hang exceeds it on a busy
machine. The autoscaler's timing rules (a scale-up within two ticks, a scale-down only after the
window) are asserted on a simulated clock in tests/unit/test_policy.py; here, on real processes,
the order of events is."""
TICK_GAP_SLACK_SECONDS = 10.0
"""How much longer than TICK_SECONDS apart two timer ticks may come on a busy machine (each tick
calls NATS and the API server, and the timer's interval runs from the end of the last)."""


# --- the operator as a local process ------------------------------------------------------------


@dataclass
class OperatorProcess:
    """`python -m ponder.operator` that a test may stop, kill and start again."""

    kubeconfig: Path
    nats_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    metrics_port: int = 0
    liveness_port: int = 0
    extra_args: tuple[str, ...] = ()
    _log: Any = field(default=None, repr=False)

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ponder.operator",
                "--all-namespaces",
                "--nats-url",
                self.nats_url,
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
                "--metrics-port",
                str(self.metrics_port),
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "KUBECONFIG": str(self.kubeconfig),
                "PONDER_AUTOSCALE_INTERVAL_SECONDS": str(TICK_SECONDS),
                "PYTHONUNBUFFERED": "1",
            },
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    async def start(self) -> None:
        """Start the operator and wait for its liveness endpoint."""
        port = self.liveness_port = free_port()
        self.metrics_port = free_port()
        self.process = await asyncio.to_thread(self._spawn, port)
        self.starts += 1
        await wait_for_port(port, 60.0, self.process)

    async def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            if kill:
                os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.to_thread(self.process.wait, 10)
            else:
                await asyncio.to_thread(stop_process, self.process)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest_asyncio.fixture(scope="module")
async def operator(
    operator_kubeconfig: Path, nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OperatorProcess]:
    """One operator for the module, acting with the chart ServiceAccount's rights."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(operator_kubeconfig, nats.url, log_path)
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture
async def namespace(kubectl: Kubectl) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting: it frees the GPUs)."""
    name = f"op-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", name)
    yield name
    await kubectl("delete", "namespace", name, "--wait=false")


# --- helpers -------------------------------------------------------------------------------------


def sample() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return document


def service(name: str, **spec_changes: Any) -> dict[str, Any]:
    """The sample ReasoningService renamed, with parts of its spec replaced or merged."""
    body = sample()
    body["metadata"] = {"name": name}
    for key, value in spec_changes.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    return body


async def apply(kubectl: Kubectl, namespace: str, body: dict[str, Any]) -> None:
    await kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


async def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(await kubectl("get", *args, "-o", "json"))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for entry in obj.get("status", {}).get("conditions", []):
        if entry["type"] == kind:
            return dict(entry)
    return {}


async def wait_ready(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = await eventually(
        lambda: get_json(kubectl, "rsvc", name, "-n", namespace),
        lambda obj: (
            condition(obj, "Ready").get("status") == "True"
            and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        ),
        timeout_seconds=SETTLE_SECONDS,
        what=f"ReasoningService {namespace}/{name} Ready",
    )
    return result


async def worker_replicas(kubectl: Kubectl, namespace: str, name: str) -> int:
    deployment = await get_json(kubectl, "deployment", f"{name}-workers", "-n", namespace)
    return int(deployment["spec"]["replicas"])


async def publish_jobs(url: str, subjects: ServiceSubjects, count: int) -> None:
    """`count` real BranchJobs (one branch each) onto the service's work-queue stream."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for index in range(count):
            job = BranchJob(
                query_id=f"e2e-{index}",
                job_id=f"e2e-{index}-0",
                branch_ids=[f"e2e-{index}-b0"],
                reply_subject=subjects.results("e2e"),
                model="qwen-math",
                prompt="Q: 2+2? A:",
                sampling=SamplingParams(max_tokens=8),
                deadline_at=time.time() + 600,
            )
            await js.publish(
                subjects.jobs, job.model_dump_json().encode(), headers={"Nats-Msg-Id": job.job_id}
            )
    finally:
        await client.close()


async def drain_jobs(url: str, subjects: ServiceSubjects) -> tuple[int, float]:
    """Pull and acknowledge every queued job, as workers would.

    Returns how many, and the monotonic time the last one was acknowledged.
    """
    client = await nats.connect(url)
    drained, last_ack_at = 0, time.monotonic()
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe_bind(subjects.consumer, subjects.stream)
        while True:
            try:
                messages = await subscription.fetch(200, timeout=1)
            except TimeoutError:
                return drained, last_ack_at
            for message in messages:
                await message.ack()
            await client.flush()
            drained += len(messages)
            last_ack_at = time.monotonic()
    finally:
        await client.close()


async def stream_exists(url: str, subjects: ServiceSubjects) -> bool:
    client = await nats.connect(url)
    try:
        await client.jetstream().stream_info(subjects.stream)
    except NotFoundError:
        return False
    finally:
        await client.close()
    return True


# --- the sample ----------------------------------------------------------------------------------


async def test_sample_becomes_ready_with_owned_children_on_gpu_nodes(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, nats: NatsServer
) -> None:
    await kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    ready = await wait_ready(kubectl, namespace, "math-solver")

    uid = ready["metadata"]["uid"]
    for kind, name in [
        ("deployment", "math-solver-workers"),
        ("deployment", "math-solver-scheduler"),
        ("service", "math-solver"),
        ("configmap", "math-solver-config"),
        ("poddisruptionbudget", "math-solver-workers"),
    ]:
        child = await get_json(kubectl, kind, name, "-n", namespace)
        owners = child["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [
            ("ReasoningService", uid, True)
        ], f"{kind}/{name}"

    pods = await get_json(
        kubectl, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=worker"
    )
    assert pods["items"], "no worker pods"
    for pod in pods["items"]:
        assert pod["spec"]["nodeName"].startswith("gpu-node-"), pod["spec"].get("nodeName")
        assert pod["status"]["phase"] == "Running"

    status = ready["status"]
    assert status["ready"] == "1/1"
    assert status["endpoint"] == f"http://math-solver.{namespace}.svc:8000/v1"
    assert condition(ready, "Degraded")["status"] == "False"
    assert await stream_exists(nats.url, ServiceSubjects(namespace, "math-solver"))

    table = await kubectl("get", "rsvc", "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "MODEL", "STRATEGY", "READY", "QUEUE", "P95", "SLO", "AGE"]
    assert row.split()[:5] == ["math-solver", "qwen-math", "AdaptiveConsistency", "1/1", "0"]
    wide = await kubectl("get", "rsvc", "-n", namespace, "-o", "wide")
    assert wide.splitlines()[0].split()[-3:] == ["AGE", "TOKENS", "EARLYSTOP"]

    # The operator's own metrics say the same as the status, on their own port.
    series = f'name="math-solver",namespace="{namespace}"'
    text = await operator_metrics(operator)
    assert sample_of(text, "ponder_desired_replicas", series) == status["desiredReplicas"] == 1
    assert sample_of(text, "ponder_ready_replicas", series) == status["readyReplicas"] == 1
    assert sample_of(text, "ponder_autoscaler_slo_target_seconds", series) == 20.0
    assert sample_of(text, "ponder_reconcile_seconds_count", 'trigger="change"') >= 1

    # Liveness runs the operator's own probe: no reconcile pass is stuck.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{operator.liveness_port}/healthz") as response,
    ):
        assert response.status == 200
        probes = await response.json()
    assert set(probes["reconcile-loop"]) == {"oldest_pass_seconds"}, probes


async def operator_metrics(operator: OperatorProcess) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(f"http://127.0.0.1:{operator.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def sample_of(text: str, name: str, labels: str) -> float:
    """The value of the one sample of `name` whose labels contain `labels`."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and labels in line
    ]
    assert len(values) == 1, (name, labels, values)
    return values[0]


# --- validation by the API server ----------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "min above max replicas",
        {"workers": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.workers.minReplicas must not exceed spec.workers.maxReplicas",
    ),
    (
        "branches above maxBranches",
        {"strategy": {"branches": 64, "maxBranches": 32}},
        "spec.strategy.branches must not exceed spec.strategy.maxBranches",
    ),
    (
        "default budget above max",
        {"budget": {"defaultTokens": 50000, "maxTokens": 16384}},
        "spec.budget.defaultTokens must not exceed spec.budget.maxTokens",
    ),
    (
        "HTTP verifier without url",
        {"strategy": {"verifier": {"type": "HTTP"}}},
        "spec.strategy.verifier.url is required when the verifier type is HTTP",
    ),
    (
        "both model name and path",
        {"model": {"name": "org/m", "path": "/models/m"}},
        "set exactly one of spec.model.name or spec.model.path",
    ),
    ("no GPUs", {"workers": {"gpusPerWorker": 0}}, "spec.workers.gpusPerWorker"),
    (
        "GPUs through resources",
        {"workers": {"resources": {"limits": {"nvidia.com/gpu": 2}}}},
        "set GPUs with spec.workers.gpusPerWorker",
    ),
    ("confidence of 100 %", {"strategy": {"confidencePercent": 100}}, "confidencePercent"),
    ("a float temperature", {"strategy": {"temperature": 0.7}}, "spec.strategy.temperature"),
    ("a word temperature", {"strategy": {"temperature": "hot"}}, "spec.strategy.temperature"),
    ("an unknown strategy", {"strategy": {"default": "Vote"}}, 'Unsupported value: "Vote"'),
    ("an unknown mode", {"autoscaling": {"mode": "Auto"}}, "spec.autoscaling.mode"),
    (
        "scale to zero in External mode",
        {"autoscaling": {"mode": "External", "scaleToZero": {"enabled": True}}},
        "scaleToZero applies to mode Builtin",
    ),
    (
        "branch budget beyond the context",
        {"model": {"name": "org/m", "maxModelLen": 512}},
        "spec.budget.maxTokensPerBranch must be below spec.model.maxModelLen",
    ),
    (
        "vLLM port in extraArgs",
        {"model": {"name": "org/m", "extraArgs": ["--port", "9000"]}},
        "spec.model.extraArgs may not set --port",
    ),
    (
        "default strategy not allowed",
        {"strategy": {"default": "BeamSearch", "allowed": ["Single"]}},
        "spec.strategy.default must be one of spec.strategy.allowed",
    ),
    (
        "a memory quantity that is not one",
        {"workers": {"resources": {"requests": {"memory": "lots"}}}},
        "spec.workers.resources.requests.memory",
    ),
    ("an unknown field", {"workers": {"slotPerWorker": 8}}, 'unknown field "spec.workers.slot'),
    (
        "extractor Regex without a pattern",
        {"strategy": {"extractor": "Regex"}},
        "spec.strategy.answerPattern is required by extractor Regex and allowed with it alone",
    ),
    (
        "a pattern without extractor Regex",
        {"strategy": {"extractor": "LastNumber", "answerPattern": "Result: ([0-9]+)"}},
        "spec.strategy.answerPattern is required by extractor Regex and allowed with it alone",
    ),
]


@pytest.mark.parametrize(
    ("case", "changes", "message"), INVALID, ids=[case for case, _, _ in INVALID]
)
async def test_api_server_rejects_invalid_service(
    kubectl: Kubectl, operator_kubeconfig: Path, case: str, changes: dict[str, Any], message: str
) -> None:
    body = sample()
    for key, value in changes.items():
        body["spec"][key] = (
            value if key == "model" else {**body["spec"].get(key, {}), **copy.deepcopy(value)}
        )
    with pytest.raises(CommandError) as rejected:
        await kubectl(
            "create",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            "default",
            "-f",
            "-",
            stdin=json.dumps(body),
        )
    assert message in rejected.value.stderr, rejected.value.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 41, "metadata.name must be at most 40 characters"),
        ("math.solver", "metadata.name must be a DNS-1035 label"),
        ("9math", "metadata.name must be a DNS-1035 label"),
    ],
)
async def test_api_server_rejects_names_unfit_for_nats_subjects(
    kubectl: Kubectl, operator_kubeconfig: Path, name: str, message: str
) -> None:
    body = sample()
    body["metadata"]["name"] = name
    with pytest.raises(CommandError) as rejected:
        await kubectl(
            "create", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(body)
        )
    assert message in rejected.value.stderr, rejected.value.stderr


# --- a spec that only the operator can refuse ----------------------------------------------------

BAD_PATTERN = "Result: ([0-9]+"
"""Admitted (CEL cannot compile a Python regex), refused by the operator's model."""
BAD_PATTERN_PROBLEM = (
    "spec.strategy.answerPattern: answer pattern 'Result: ([0-9]+' is not a valid regular "
    "expression: missing ), unterminated subpattern at position 8"
)
GOOD_PATTERN = "Result: ([0-9]+)"


def with_pattern(name: str, pattern: str) -> dict[str, Any]:
    return service(name, strategy={"extractor": "Regex", "answerPattern": pattern})


async def children_of(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    listed = await get_json(
        kubectl,
        "deployments,services,configmaps,poddisruptionbudgets",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={name}",
    )
    return [f"{item['kind']}/{item['metadata']['name']}" for item in listed["items"]]


async def warnings_about(kubectl: Kubectl, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the Events other than Normal about the ReasoningService `name`."""
    events = await get_json(kubectl, "events", "-n", namespace)
    return [
        (event["reason"], event["message"])
        for event in events["items"]
        if event["involvedObject"].get("kind") == "ReasoningService"
        and event["involvedObject"].get("name") == name
        and event.get("type") != "Normal"
    ]


async def test_a_spec_the_operator_refuses_is_reported_in_status_until_it_is_fixed(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, nats: NatsServer
) -> None:
    name = "bad-pattern"
    await apply(kubectl, namespace, with_pattern(name, BAD_PATTERN))
    refused = await eventually(
        lambda: get_json(kubectl, "rsvc", name, "-n", namespace),
        lambda obj: condition(obj, "Degraded").get("reason") == "InvalidSpec",
        timeout_seconds=SETTLE_SECONDS,
        what="Degraded=InvalidSpec",
    )
    degraded = condition(refused, "Degraded")
    assert degraded["status"] == "True"
    assert BAD_PATTERN_PROBLEM in degraded["message"], degraded["message"]
    assert (condition(refused, "Ready")["status"], condition(refused, "Ready")["reason"]) == (
        "False",
        "InvalidSpec",
    )
    assert refused["status"]["observedGeneration"] == refused["metadata"]["generation"]

    # A permanent error: over several of kopf's retry periods and timer ticks, one Warning, no
    # child and no stream (a retried handler would post a Warning per attempt).
    await asyncio.sleep(3 * RETRY_SECONDS)
    assert await warnings_about(kubectl, namespace, name) == [("InvalidSpec", BAD_PATTERN_PROBLEM)]
    assert await children_of(kubectl, namespace, name) == []
    assert not await stream_exists(nats.url, ServiceSubjects(namespace, name))

    await apply(kubectl, namespace, with_pattern(name, GOOD_PATTERN))
    ready = await wait_ready(kubectl, namespace, name)
    assert condition(ready, "Degraded")["reason"] == "AsExpected"
    config = await get_json(kubectl, "configmap", f"{name}-config", "-n", namespace)
    assert GOOD_PATTERN in json.dumps(config["data"])

    # A running service given a spec the operator refuses keeps the children of the last good
    # one, untouched, and still reports them Ready.
    async def child_versions() -> tuple[str, int, int]:
        """What a change to the children would move: the ConfigMap's resourceVersion, the
        Deployments' generations."""
        config = await get_json(kubectl, "configmap", f"{name}-config", "-n", namespace)
        workers = await get_json(kubectl, "deployment", f"{name}-workers", "-n", namespace)
        scheduler = await get_json(kubectl, "deployment", f"{name}-scheduler", "-n", namespace)
        return (
            config["metadata"]["resourceVersion"],
            workers["metadata"]["generation"],
            scheduler["metadata"]["generation"],
        )

    before = await child_versions()
    await apply(kubectl, namespace, with_pattern(name, "(?P<answer"))
    broken = await eventually(
        lambda: get_json(kubectl, "rsvc", name, "-n", namespace),
        lambda obj: (
            condition(obj, "Degraded").get("reason") == "InvalidSpec"
            and condition(obj, "Degraded").get("observedGeneration")
            == obj["metadata"]["generation"]
        ),
        timeout_seconds=SETTLE_SECONDS,
        what="Degraded=InvalidSpec for the new generation",
    )
    assert (
        "'(?P<answer' is not a valid regular expression" in condition(broken, "Degraded")["message"]
    )
    assert condition(broken, "Ready")["status"] == "True"
    assert broken["status"]["ready"] == "1/1"
    assert await child_versions() == before

    # Nor does it hold up deletion: the finalizer removes the stream of the last good spec.
    await kubectl("delete", "rsvc", name, "-n", namespace, "--timeout=60s")
    assert not await stream_exists(nats.url, ServiceSubjects(namespace, name))


UNREACHABLE_NATS = "nats://127.0.0.1:1"
"""Nothing listens on port 1: every connect is refused, and the client would retry forever."""


async def test_a_service_whose_nats_is_unreachable_holds_up_no_other(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    lost = "lost-nats"
    await apply(kubectl, namespace, service(lost, nats={"url": UNREACHABLE_NATS}))
    # Applied after it, a healthy service still converges: no lock is held across a connect.
    await apply(kubectl, namespace, service("healthy"))
    await wait_ready(kubectl, namespace, "healthy")
    reported = await eventually(
        lambda: get_json(kubectl, "rsvc", lost, "-n", namespace),
        lambda obj: condition(obj, "Degraded").get("reason") == "NatsUnreachable",
        timeout_seconds=SETTLE_SECONDS,
        what="Degraded=NatsUnreachable",
    )
    degraded = condition(reported, "Degraded")
    assert degraded["status"] == "True" and UNREACHABLE_NATS in degraded["message"], degraded
    # Its Kubernetes side converges all the same ...
    children = await children_of(kubectl, namespace, lost)
    assert {f"Deployment/{lost}-workers", f"Deployment/{lost}-scheduler"} <= set(children)
    # ... a Warning says what is wrong, on the transition, not again at every tick ...
    warned = await eventually(
        lambda: warnings_about(kubectl, namespace, lost),
        lambda found: any(reason == "NatsUnreachable" for reason, _ in found),
        timeout_seconds=SETTLE_SECONDS,
        what="a NatsUnreachable Warning",
    )
    first = [reason for reason, _ in warned].count("NatsUnreachable")
    await asyncio.sleep(5 * TICK_SECONDS)
    later = await warnings_about(kubectl, namespace, lost)
    assert [reason for reason, _ in later].count("NatsUnreachable") == first, later
    # ... and it can be deleted: the finalizer leaves the stream and says so.
    await kubectl("delete", "rsvc", lost, "-n", namespace, "--timeout=60s")
    left = await warnings_about(kubectl, namespace, lost)
    assert any(reason == "StreamLeftBehind" for reason, _ in left), left


async def test_a_service_in_a_namespace_that_starts_with_a_digit_becomes_ready(
    operator: OperatorProcess, kubectl: Kubectl
) -> None:
    # Kubernetes namespaces are DNS-1123 labels, digits first too; the service's config once
    # demanded a letter, and such a service got no children, no condition and no Event.
    namespace = f"0-{secrets.token_hex(4)}"
    await kubectl("create", "namespace", namespace)
    try:
        await apply(kubectl, namespace, service("digits"))
        await wait_ready(kubectl, namespace, "digits")
        children = await children_of(kubectl, namespace, "digits")
        assert {"Deployment/digits-workers", "Deployment/digits-scheduler"} <= set(children)
    finally:
        await kubectl("delete", "namespace", namespace, "--wait=false")


async def test_children_the_api_server_refuses_are_reported_and_applied_once_allowed(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    # A quota of no Deployments in the namespace: the API server refuses both (403), as an
    # admission policy or a bad manifest would. The operator once only logged that, every tick.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-deployments"},
        "spec": {"hard": {"count/deployments.apps": "0"}},
    }
    await apply(kubectl, namespace, quota)
    await apply(kubectl, namespace, service("quota"))
    reported = await eventually(
        lambda: get_json(kubectl, "rsvc", "quota", "-n", namespace),
        lambda obj: condition(obj, "Degraded").get("reason") == "ApplyFailed",
        timeout_seconds=SETTLE_SECONDS,
        what="Degraded=ApplyFailed",
    )
    degraded = condition(reported, "Degraded")
    assert degraded["status"] == "True", degraded
    assert "Deployment/quota-" in degraded["message"], degraded
    assert "quota" in degraded["message"].split(":", 1)[1], degraded  # the API server's words
    # The children it may create are there all the same ...
    assert "ConfigMap/quota-config" in await children_of(kubectl, namespace, "quota")
    # ... a Warning says so ...
    await eventually(
        lambda: warnings_about(kubectl, namespace, "quota"),
        lambda found: any(reason == "ApplyFailed" for reason, _ in found),
        timeout_seconds=SETTLE_SECONDS,
        what="an ApplyFailed Warning",
    )
    # ... and once the quota is gone the next pass applies them.
    await kubectl("delete", "resourcequota", "no-deployments", "-n", namespace)
    ready = await wait_ready(kubectl, namespace, "quota")
    assert condition(ready, "Degraded")["status"] == "False", ready


# --- autoscaling on real NATS --------------------------------------------------------------------

SCALING: dict[str, Any] = {
    "workers": {"minReplicas": 1, "maxReplicas": 6, "slotsPerWorker": 8},
    "autoscaling": {
        "mode": "Builtin",
        "targetUtilizationPercent": 100,
        "scaleDownStabilizationSeconds": 20,
    },
}


async def test_queued_jobs_scale_workers_up_and_down_only_after_the_window(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, nats: NatsServer
) -> None:
    name = "burst"
    await apply(kubectl, namespace, service(name, **SCALING))
    await wait_ready(kubectl, namespace, name)
    assert await worker_replicas(kubectl, namespace, name) == 1
    subjects = ServiceSubjects(namespace, name)

    await publish_jobs(nats.url, subjects, 500)
    await eventually(
        lambda: worker_replicas(kubectl, namespace, name),
        lambda replicas: replicas > 1,
        timeout_seconds=SETTLE_SECONDS,
        interval_seconds=0.2,
        what="a scale-up after 500 queued jobs",
    )
    await eventually(
        lambda: worker_replicas(kubectl, namespace, name),
        lambda replicas: replicas == 6,
        timeout_seconds=SETTLE_SECONDS,
        what="the pool at maxReplicas",
    )
    busy = await get_json(kubectl, "rsvc", name, "-n", namespace)
    assert busy["status"]["queueDepth"] == 500
    assert busy["status"]["desiredReplicas"] == 6
    events = await get_json(
        kubectl, "events", "-n", namespace, "--field-selector", "reason=ScaledWorkers"
    )
    messages = [event["message"] for event in events["items"]]
    assert any(m.startswith("Scaled workers from 1 to ") for m in messages), messages
    assert any("500 branches queued or running" in m for m in messages), messages

    drained, drained_at = await drain_jobs(nats.url, subjects)
    assert drained == 500
    window = SCALING["autoscaling"]["scaleDownStabilizationSeconds"]
    # Until the window since the last busy tick has passed, the pool keeps its size. That tick
    # came at most a (stretched) tick before the drain ended.
    earliest_scale_down = window - TICK_SECONDS - TICK_GAP_SLACK_SECONDS
    hold_until = drained_at + earliest_scale_down
    while time.monotonic() < hold_until:
        assert await worker_replicas(kubectl, namespace, name) == 6, "scaled down too early"
        await asyncio.sleep(1)
    await eventually(
        lambda: worker_replicas(kubectl, namespace, name),
        lambda replicas: replicas == 1,
        timeout_seconds=window + SETTLE_SECONDS,
        what="the scale-down after the stabilisation window",
    )
    assert time.monotonic() - drained_at >= earliest_scale_down
    idle = await eventually(
        lambda: get_json(kubectl, "rsvc", name, "-n", namespace),
        lambda obj: obj["status"].get("queueDepth") == 0 and obj["status"]["ready"] == "1/1",
        timeout_seconds=SETTLE_SECONDS,
        what="an idle, ready status",
    )
    assert condition(idle, "Ready")["status"] == "True"


async def test_demand_beyond_gpu_capacity_leaves_pods_pending_and_status_says_so(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, nats: NatsServer
) -> None:
    name = "greedy"
    changes = copy.deepcopy(SCALING)
    changes["workers"].update({"gpusPerWorker": 4, "maxReplicas": 6})  # 24 GPUs; the nodes have 16
    await apply(kubectl, namespace, service(name, **changes))
    await wait_ready(kubectl, namespace, name)

    await publish_jobs(nats.url, ServiceSubjects(namespace, name), 200)
    # The pool grows in steps: Degraded may show at an intermediate size (5 workers of 4 GPUs
    # already exceed 16) before the next decision asks for all 6.
    degraded = await eventually(
        lambda: get_json(kubectl, "rsvc", name, "-n", namespace),
        lambda obj: (
            condition(obj, "Degraded").get("reason") == "InsufficientGPUCapacity"
            and obj["status"].get("desiredReplicas") == 6
        ),
        timeout_seconds=SETTLE_SECONDS,
        what="Degraded=InsufficientGPUCapacity at 6 desired workers",
    )
    message = condition(degraded, "Degraded")["message"]
    assert "worker pods are Pending: not enough nvidia.com/gpu capacity" in message
    assert "Insufficient nvidia.com/gpu" in message
    assert condition(degraded, "Ready")["status"] == "True"  # the scheduled workers still serve
    pods = await get_json(
        kubectl, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=worker"
    )
    pending = [p for p in pods["items"] if p["status"]["phase"] == "Pending"]
    assert len(pending) >= 2
    assert degraded["status"]["readyReplicas"] < degraded["status"]["desiredReplicas"] == 6


async def test_external_mode_follows_an_hpa_through_the_scale_subresource(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    name = "hpa-driven"
    body = service(
        name,
        workers={"minReplicas": 1, "maxReplicas": 8, "replicas": 1},
        autoscaling={"mode": "External"},
    )
    await apply(kubectl, namespace, body)
    await wait_ready(kubectl, namespace, name)
    raw = await kubectl(
        "get",
        "--raw",
        f"/apis/ponder.dev/v1alpha1/namespaces/{namespace}/reasoningservices/{name}/scale",
    )
    scale_object = json.loads(raw)
    assert scale_object["spec"]["replicas"] == 1
    assert "app.kubernetes.io/component=worker" in scale_object["status"]["selector"]

    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "ponder.dev/v1alpha1",
                "kind": "ReasoningService",
                "name": name,
            },
            "minReplicas": 3,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }
    await apply(kubectl, namespace, hpa)
    await eventually(
        lambda: worker_replicas(kubectl, namespace, name),
        lambda replicas: replicas == 3,
        timeout_seconds=SETTLE_SECONDS,
        interval_seconds=1,
        what="the worker Deployment at the HPA's minReplicas",
    )
    driven = await get_json(kubectl, "rsvc", name, "-n", namespace)
    assert driven["spec"]["workers"]["replicas"] == 3
    await eventually(
        lambda: get_json(kubectl, "rsvc", name, "-n", namespace),
        lambda obj: obj["status"].get("replicas") == 3 and obj["status"]["ready"] == "3/3",
        timeout_seconds=SETTLE_SECONDS,
        what="status.replicas following the HPA",
    )
    # The builtin autoscaler stays out of it: with nothing queued it would want 1.
    await asyncio.sleep(3 * TICK_SECONDS)
    assert await worker_replicas(kubectl, namespace, name) == 3


# --- deletion and restarts -----------------------------------------------------------------------


async def test_delete_garbage_collects_children_and_removes_the_stream(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, nats: NatsServer
) -> None:
    name = "short-lived"
    subjects = ServiceSubjects(namespace, name)
    await apply(kubectl, namespace, service(name))
    await wait_ready(kubectl, namespace, name)
    assert await stream_exists(nats.url, subjects)

    await kubectl("delete", "rsvc", name, "-n", namespace, "--timeout=60s")

    async def children() -> list[str]:
        listed = await get_json(
            kubectl,
            "deployments,services,configmaps,poddisruptionbudgets,pods",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={name}",
        )
        return [f"{item['kind']}/{item['metadata']['name']}" for item in listed["items"]]

    await eventually(
        children, lambda names: names == [], timeout_seconds=SETTLE_SECONDS, what="no children"
    )
    assert not await stream_exists(nats.url, subjects)


async def test_operator_killed_mid_reconcile_converges_without_duplicates(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    name = "restarted"
    await operator.stop()
    await apply(kubectl, namespace, service(name))
    await operator.start()

    async def children() -> list[str]:
        listed = await get_json(
            kubectl,
            "configmaps,deployments",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/instance=" + name,
        )
        return [item["metadata"]["name"] for item in listed["items"]]

    await eventually(
        children, bool, timeout_seconds=SETTLE_SECONDS, interval_seconds=0.05, what="a child"
    )
    await operator.stop(kill=True)  # in the middle of applying the children
    partial = await children()
    await operator.start()
    await wait_ready(kubectl, namespace, name)

    listed = await get_json(
        kubectl,
        "deployments,replicasets,services,configmaps,poddisruptionbudgets",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={name}",
    )
    kinds: dict[str, list[str]] = {}
    for item in listed["items"]:
        kinds.setdefault(item["kind"], []).append(item["metadata"]["name"])
    assert sorted(kinds["Deployment"]) == [f"{name}-scheduler", f"{name}-workers"], partial
    assert len(kinds["ReplicaSet"]) == 2, kinds["ReplicaSet"]  # no template churn
    assert kinds["ConfigMap"] == [f"{name}-config"]
    assert kinds["Service"] == [name]
    assert kinds["PodDisruptionBudget"] == [f"{name}-workers"]
    obj = await get_json(kubectl, "rsvc", name, "-n", namespace)
    assert obj["metadata"]["finalizers"] == ["ponder.dev/finalizer"]
    assert [c["type"] for c in obj["status"]["conditions"]] == [
        "Ready",
        "Progressing",
        "Degraded",
        "Authenticated",
    ]
