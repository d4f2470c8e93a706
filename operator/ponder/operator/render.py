"""Render a ReasoningService into the manifests of its children (pure: spec in, dicts out).

Children of ReasoningService `ns/name` (all owned by it, so deleting it garbage-collects them):
    ConfigMap `name-config`          service.json: the ServiceConfig scheduler and workers load
                                     (and nats-ca.crt, the NATS CA, when NATS requires TLS)
    Deployment `name-workers`        GPU pods: `vllm serve` engine + `python -m ponder.workers`
    PodDisruptionBudget `name-workers`
    Deployment `name-scheduler`      `python -m ponder.scheduler`, the OpenAI-compatible front
    Service `name`                   the scheduler's endpoint, http://name.ns.svc:8000/v1
    NetworkPolicy `name-scheduler`   ingress to the schedulers (network_policy.py)
    NetworkPolicy `name-workers`     ingress to the workers

The manifests are what server-side apply sends: only the fields the operator has an opinion on.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from ponder.api import crd
from ponder.api.crd import ReasoningServiceSpec, ResourceRequirements, Toleration
from ponder.api.nats_tls import NATS_CA_FILE
from ponder.api.service_config import ServiceConfig
from ponder.api.settings import NATS_CA, NATS_CREDS, SCHEDULER_ID, WORKER_ID
from ponder.operator.nats_trust import SCHEDULER_CREDS, WORKER_CREDS
from ponder.operator.network_policy import scheduler_network_policy, worker_network_policy
from ponder.operator.service_config import (
    KEYS_DIR,
    KEYS_FILE,
    served_model_name,
    service_config_from_spec,
)

Manifest = dict[str, Any]

CONFIG_DIR = "/etc/ponder"
CONFIG_FILE = "service.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
NATS_CREDS_DIR = "/etc/ponder-nats"
"""Where a pod mounts its role's NATS credentials (`ponder.operator.nats_credentials`)."""
ENGINE_PORT = 8000
WORKER_LOOP_PORT = 8081
SCHEDULER_PORT = 8000
SHM_PATH = "/dev/shm"
CONFIG_HASH_ANNOTATION = "ponder.dev/config-hash"
MANAGED_BY = "ponder-operator"
DRAIN_MARGIN_SECONDS = 30
HAND_BACK_SECONDS = 10
"""Of the grace period, what the worker loop keeps to hand unfinished jobs back to the stream."""

# Entry points of the Ponder image (the Dockerfile's test checks they agree).
WORKER_COMMAND = ["python", "-m", "ponder.workers"]
SCHEDULER_COMMAND = ["python", "-m", "ponder.scheduler"]
ENGINE_COMMAND = ["vllm", "serve"]

ENGINE_HEALTH_SCRIPT = (
    "import sys, urllib.request\n"
    f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{ENGINE_PORT}/health', timeout=4)"
    ".status != 200)\n"
)
"""The engine's probes: its /health on loopback answers 200 (urlopen raises on an error)."""

# The engine's preStop hook: wait until vLLM has nothing running or waiting (the worker loop got
# SIGTERM at the same moment, stops pulling and finishes what it holds), so removing a worker
# never kills an in-flight branch. Runs in the engine image, which has Python but maybe no curl.
ENGINE_DRAIN_SCRIPT = (
    "import time, urllib.request\n"
    "time.sleep(5)\n"
    "idle = 0\n"
    "while idle < 2:\n"
    "    try:\n"
    f"        page = urllib.request.urlopen('http://127.0.0.1:{ENGINE_PORT}/metrics', timeout=5)\n"
    "        text = page.read().decode()\n"
    "    except Exception:\n"
    "        break\n"
    "    busy = sum(float(line.split()[-1]) for line in text.splitlines()\n"
    "               if line.startswith(('vllm:num_requests_running',\n"
    "                                   'vllm:num_requests_waiting')))\n"
    "    idle = idle + 1 if busy == 0 else 0\n"
    "    time.sleep(2)\n"
)

DEFAULT_GPU_TOLERATION: Manifest = {
    "key": crd.GPU_RESOURCE,
    "operator": "Exists",
    "effect": "NoSchedule",
}
WORKER_LOOP_RESOURCES: Manifest = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
DEFAULT_SCHEDULER_RESOURCES: Manifest = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"memory": "2Gi"},
}
CONTAINER_SECURITY: Manifest = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
ENGINE_USER = 1000
"""vLLM's image has no USER (it would run as root); the engine runs as this uid instead."""
ENGINE_HOME = "/home/engine"
ENGINE_SECURITY: Manifest = {
    **CONTAINER_SECURITY,
    "runAsUser": ENGINE_USER,
    "runAsGroup": ENGINE_USER,
}
"""As restricted as the other containers (docs/architecture.md, "Pod security"): vLLM needs no
capability and no root, only a writable HOME (model downloads, compile caches) and /tmp, which
are emptyDirs; GPUs reach it through the device plugin, not through privileges."""
POD_SECURITY: Manifest = {"seccompProfile": {"type": "RuntimeDefault"}}


@dataclass(frozen=True)
class Owner:
    """The ReasoningService the children belong to."""

    namespace: str
    name: str
    uid: str

    @property
    def reference(self) -> Manifest:
        """Owner reference: the garbage collector deletes children with their owner."""
        return {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ChildNames:
    """Names of the children of ReasoningService `name`."""

    name: str

    @property
    def config_map(self) -> str:
        return f"{self.name}-config"

    @property
    def workers(self) -> str:
        return f"{self.name}-workers"

    @property
    def scheduler(self) -> str:
        return f"{self.name}-scheduler"

    @property
    def service(self) -> str:
        return self.name


def selector_labels(name: str, component: str) -> dict[str, str]:
    """The immutable selector of one component's pods."""
    return {
        "app.kubernetes.io/name": "ponder",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }


def labels(name: str, component: str) -> dict[str, str]:
    """Recommended labels (app.kubernetes.io/*) of a child and its pods."""
    return {
        **selector_labels(name, component),
        "app.kubernetes.io/part-of": "ponder",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def worker_selector(name: str) -> str:
    """The worker pods' label selector as a string (status.selector, the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(name, "worker").items())


def endpoint_url(owner: Owner) -> str:
    """The OpenAI base URL of the service inside the cluster."""
    service = ChildNames(owner.name).service
    return f"http://{service}.{owner.namespace}.svc:{SCHEDULER_PORT}/v1"


def termination_grace_seconds(spec: ReasoningServiceSpec) -> int:
    """How long a removed worker may drain: the longest deadline plus a margin, unless set."""
    if spec.workers.termination_grace_period_seconds is not None:
        return spec.workers.termination_grace_period_seconds
    return math.ceil(spec.slo.max_deadline_milliseconds / 1000) + DRAIN_MARGIN_SECONDS


def _metadata(owner: Owner, name: str, component: str) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner.name, component),
        "ownerReferences": [owner.reference],
    }


def _resources(requirements: ResourceRequirements) -> Manifest:
    return requirements.model_dump(mode="json", exclude_none=True)


def _tolerations(tolerations: list[Toleration] | None) -> list[Manifest]:
    if tolerations is None:
        return [DEFAULT_GPU_TOLERATION]
    return [toleration.model_dump(mode="json", exclude_none=True) for toleration in tolerations]


def config_map(owner: Owner, config: ServiceConfig, nats_ca: str | None = None) -> Manifest:
    """The ConfigMap holding service.json, and the NATS CA bundle `nats_ca` (PEM) when given:
    the operator's copy, in the service's namespace, where its pods can mount it."""
    names = ChildNames(owner.name)
    data = {CONFIG_FILE: config.model_dump_json(indent=2)}
    if nats_ca is not None:
        data[NATS_CA_FILE] = nats_ca
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, names.config_map, "config"),
        "data": data,
    }


def config_hash(config: ServiceConfig, nats_ca: str | None = None) -> str:
    """A short digest of service.json (and the NATS CA); in the pod templates, so a change of
    either rolls the pods (a program loads both once, at start)."""
    digest = hashlib.sha256(config.model_dump_json().encode())
    if nats_ca is not None:
        digest.update(nats_ca.encode())
    return digest.hexdigest()[:16]


def _config_volume(owner: Owner) -> Manifest:
    return {"name": "config", "configMap": {"name": ChildNames(owner.name).config_map}}


_CONFIG_MOUNT: Manifest = {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
# The root filesystem is read-only; Python and libraries may still want a scratch /tmp.
_TMP_MOUNT: Manifest = {"name": "tmp", "mountPath": "/tmp"}
_TMP_VOLUME: Manifest = {"name": "tmp", "emptyDir": {}}


def _nats_credentials(secret: str, key: str) -> tuple[Manifest, Manifest, Manifest]:
    """Volume, mount and environment for one role's NATS credentials: only `key` of the
    service's credentials Secret, so a scheduler pod never holds the workers' and back."""
    volume = {
        "name": "nats-creds",
        "secret": {"secretName": secret, "items": [{"key": key, "path": key}]},
    }
    mount = {"name": "nats-creds", "mountPath": NATS_CREDS_DIR, "readOnly": True}
    env = {"name": NATS_CREDS.env, "value": f"{NATS_CREDS_DIR}/{key}"}
    return volume, mount, env


_NATS_CA_ENV: Manifest = {"name": NATS_CA.env, "value": f"{CONFIG_DIR}/{NATS_CA_FILE}"}
"""Where a program finds the NATS CA: in the config volume it mounts anyway (`config_map`)."""


def _pod_name_env(variable: str) -> Manifest:
    """An environment variable holding the pod's name (a unique worker or scheduler id)."""
    return {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


ENGINE_SERVICE_NAME = "vllm"
"""`service.name` of the engine's spans (vLLM names itself nothing)."""


def tracing_env(spec: ReasoningServiceSpec, service_name: str | None = None) -> list[Manifest]:
    """The standard OTEL_* variables that turn a container's traces on (`spec.tracing`):
    OTLP/HTTP to the collector, parent-based ratio sampling; none when tracing is off.
    `service_name` names the container's spans (the scheduler and worker name their own)."""
    tracing = spec.tracing
    if tracing.endpoint is None:
        return []
    env = [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.endpoint.rstrip("/")},
        {"name": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "value": "http/protobuf"},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": f"{tracing.sample_percent / 100:g}"},
    ]
    if service_name is not None:
        env.append({"name": "OTEL_SERVICE_NAME", "value": service_name})
    return env


def engine_args(spec: ReasoningServiceSpec) -> list[str]:
    """`vllm serve` arguments: the model, the served name, the port, parallelism, extras."""
    model = spec.model.name or spec.model.path or ""
    args = [
        model,
        "--served-model-name",
        served_model_name(spec),
        # Loopback only: the worker loop beside it is its one client (its /metrics serves
        # vLLM's too), so no other pod can reach the engine, NetworkPolicy or not.
        "--host",
        "127.0.0.1",
        "--port",
        str(ENGINE_PORT),
        "--tensor-parallel-size",
        str(spec.workers.gpus_per_worker),
    ]
    if spec.model.max_model_len is not None:
        args += ["--max-model-len", str(spec.model.max_model_len)]
    if spec.tracing.endpoint is not None:
        # vLLM continues the worker's trace (its traceparent) with a span per request.
        args += ["--otlp-traces-endpoint", spec.tracing.endpoint.rstrip("/") + "/v1/traces"]
    return args + list(spec.model.extra_args)


def _engine_container(spec: ReasoningServiceSpec) -> Manifest:
    gpus = str(spec.workers.gpus_per_worker)
    resources = _resources(spec.workers.resources)
    resources["requests"] = {**resources.get("requests", {}), crd.GPU_RESOURCE: gpus}
    resources["limits"] = {**resources.get("limits", {}), crd.GPU_RESOURCE: gpus}
    # The engine listens on loopback, where the kubelet's HTTP probes cannot reach it: the
    # probes run in the container (its image has Python, maybe not curl).
    health = {"exec": {"command": ["python3", "-c", ENGINE_HEALTH_SCRIPT]}, "timeoutSeconds": 5}
    return {
        "name": "engine",
        "image": spec.workers.engine_image,
        "imagePullPolicy": spec.workers.image_pull_policy.value,
        "command": ENGINE_COMMAND,
        "args": engine_args(spec),
        "resources": resources,
        # Loading weights can take many minutes; liveness starts only after the first success.
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 6},
        "lifecycle": {"preStop": {"exec": {"command": ["python3", "-c", ENGINE_DRAIN_SCRIPT]}}},
        "env": [
            {"name": "HOME", "value": ENGINE_HOME},
            *tracing_env(spec, ENGINE_SERVICE_NAME),
        ],
        "securityContext": ENGINE_SECURITY,
        "volumeMounts": [
            {"name": "dshm", "mountPath": SHM_PATH},
            {"name": "engine-home", "mountPath": ENGINE_HOME},
            {"name": "engine-tmp", "mountPath": "/tmp"},
        ],
    }


def _worker_loop_container(spec: ReasoningServiceSpec) -> Manifest:
    # On SIGTERM the loop stops pulling and lets its branches finish for --drain-seconds, then
    # hands what is left back to the stream, all inside the pod's grace period.
    drain_seconds = max(termination_grace_seconds(spec) - HAND_BACK_SECONDS, 1)
    health = {"httpGet": {"path": "/healthz", "port": "metrics"}}
    return {
        "name": "worker",
        "image": spec.workers.image,
        "imagePullPolicy": spec.workers.image_pull_policy.value,
        "command": [
            *WORKER_COMMAND,
            "--config",
            CONFIG_PATH,
            "--vllm-url",
            f"http://127.0.0.1:{ENGINE_PORT}",
            "--port",
            str(WORKER_LOOP_PORT),
            "--drain-seconds",
            str(drain_seconds),
        ],
        "env": [_pod_name_env(WORKER_ID.env), *tracing_env(spec)],
        "ports": [{"name": "metrics", "containerPort": WORKER_LOOP_PORT, "protocol": "TCP"}],
        "resources": WORKER_LOOP_RESOURCES,
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [_CONFIG_MOUNT, _TMP_MOUNT],
    }


def worker_deployment(
    owner: Owner,
    spec: ReasoningServiceSpec,
    replicas: int,
    config: ServiceConfig,
    nats_credentials: str | None = None,
    nats_ca: str | None = None,
) -> Manifest:
    """The GPU worker pool with `replicas` pods; with `nats_credentials` (a Secret) the worker
    loop connects with the workers' credentials from it, with `nats_ca` (the CA's PEM, in the
    ConfigMap) it verifies the NATS server's certificate with it."""
    names = ChildNames(owner.name)
    worker_loop = _worker_loop_container(spec)
    pod_spec: Manifest = {
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        # Neither container calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY,
        "tolerations": _tolerations(spec.workers.tolerations),
        "containers": [_engine_container(spec), worker_loop],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            {"name": "engine-home", "emptyDir": {}},
            {"name": "engine-tmp", "emptyDir": {}},
            _config_volume(owner),
            _TMP_VOLUME,
        ],
    }
    if nats_credentials is not None:
        volume, mount, env = _nats_credentials(nats_credentials, WORKER_CREDS)
        pod_spec["volumes"].append(volume)
        worker_loop["volumeMounts"].append(mount)
        worker_loop["env"].append(env)
    if nats_ca is not None:
        worker_loop["env"].append(_NATS_CA_ENV)
    if spec.workers.node_selector:
        pod_spec["nodeSelector"] = dict(spec.workers.node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, names.workers, "worker"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(owner.name, "worker")},
            # Keep serving capacity during a rollout: a new pod first, then an old one drains.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels(owner.name, "worker"),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(config, nats_ca)},
                },
                "spec": pod_spec,
            },
        },
    }


def worker_disruption_budget(owner: Owner) -> Manifest:
    """Voluntary evictions (node drains) take one worker at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, ChildNames(owner.name).workers, "worker"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(owner.name, "worker")},
        },
    }


def scheduler_deployment(
    owner: Owner,
    spec: ReasoningServiceSpec,
    config: ServiceConfig,
    nats_credentials: str | None = None,
    nats_ca: str | None = None,
) -> Manifest:
    """The scheduler pods (`python -m ponder.scheduler`); with `nats_credentials` (a Secret)
    they connect with the schedulers' credentials from it, with `nats_ca` (the CA's PEM, in
    the ConfigMap) they verify the NATS server's certificate with it."""
    names = ChildNames(owner.name)
    resources = _resources(spec.scheduler.resources) or DEFAULT_SCHEDULER_RESOURCES
    container: Manifest = {
        "name": "scheduler",
        "image": spec.scheduler.image or spec.workers.image,
        "imagePullPolicy": spec.workers.image_pull_policy.value,
        "command": [
            *SCHEDULER_COMMAND,
            "--config",
            CONFIG_PATH,
            "--host",
            "0.0.0.0",
            "--port",
            str(SCHEDULER_PORT),
        ],
        "env": [_pod_name_env(SCHEDULER_ID.env), *tracing_env(spec)],
        "ports": [{"name": "http", "containerPort": SCHEDULER_PORT, "protocol": "TCP"}],
        "resources": resources,
        # Ready once NATS is connected and the job stream exists; alive while it serves HTTP.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [_CONFIG_MOUNT, _TMP_MOUNT],
    }
    volumes = [_config_volume(owner), _TMP_VOLUME]
    if spec.auth.type is crd.AuthType.API_KEYS:
        # A Secret volume without subPath: the kubelet swaps in an edited Secret, and the
        # scheduler reads the keys again (ponder.scheduler.access).
        keys_mount = {"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True}
        container["volumeMounts"].append(keys_mount)
        volumes.append(
            {
                "name": "api-keys",
                "secret": {
                    "secretName": spec.auth.secret_name,
                    "items": [{"key": spec.auth.secret_key, "path": KEYS_FILE}],
                },
            }
        )
    if nats_credentials is not None:
        volume, mount, env = _nats_credentials(nats_credentials, SCHEDULER_CREDS)
        volumes.append(volume)
        container["volumeMounts"].append(mount)
        container["env"].append(env)
    if nats_ca is not None:
        container["env"].append(_NATS_CA_ENV)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, names.scheduler, "scheduler"),
        "spec": {
            "replicas": spec.scheduler.replicas,
            "selector": {"matchLabels": selector_labels(owner.name, "scheduler")},
            "template": {
                "metadata": {
                    "labels": labels(owner.name, "scheduler"),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(config, nats_ca)},
                },
                "spec": {
                    # The scheduler does not call the Kubernetes API.
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY,
                    # A scheduler's in-flight queries finish within the longest deadline.
                    "terminationGracePeriodSeconds": termination_grace_seconds(spec),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def scheduler_service(owner: Owner, spec: ReasoningServiceSpec) -> Manifest:
    """The Service in front of the schedulers: the endpoint clients call."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, ChildNames(owner.name).service, "scheduler"),
        "spec": {
            "type": spec.scheduler.service_type.value,
            "selector": selector_labels(owner.name, "scheduler"),
            "ports": [
                {"name": "http", "port": SCHEDULER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def render_children(
    owner: Owner, spec: ReasoningServiceSpec, worker_replicas: int, nats_url: str
) -> list[Manifest]:
    """Every child of the service, in apply order (config before the pods that mount it)."""
    config = service_config_from_spec(owner.namespace, owner.name, spec, nats_url)
    return render_children_of_config(owner, spec, worker_replicas, config)


def render_children_of_config(
    owner: Owner,
    spec: ReasoningServiceSpec,
    worker_replicas: int,
    config: ServiceConfig,
    nats_credentials: str | None = None,
    nats_ca: str | None = None,
) -> list[Manifest]:
    """`render_children` for a caller that has built the service's ServiceConfig already;
    `nats_credentials`: the Secret of the service's NATS credentials, when NATS requires them;
    `nats_ca`: the PEM of the CA that signed the NATS server's certificate, when NATS
    requires TLS."""
    names = ChildNames(owner.name)
    return [
        config_map(owner, config, nats_ca),
        scheduler_deployment(owner, spec, config, nats_credentials, nats_ca),
        scheduler_service(owner, spec),
        worker_deployment(owner, spec, worker_replicas, config, nats_credentials, nats_ca),
        worker_disruption_budget(owner),
        # Last: a cluster whose RBAC predates them still gets every other child.
        scheduler_network_policy(
            _metadata(owner, names.scheduler, "scheduler"),
            selector_labels(owner.name, "scheduler"),
            SCHEDULER_PORT,
            spec.scheduler.client_namespace_selector,
        ),
        worker_network_policy(
            _metadata(owner, names.workers, "worker"),
            selector_labels(owner.name, "worker"),
            WORKER_LOOP_PORT,
            spec.workers.metrics_namespace_selector,
        ),
    ]
