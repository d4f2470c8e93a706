"""How the operator copes with many ReasoningServices on the local control plane.

    python -m bench.operator_scale [--services 200] [--interval-seconds 15] [--steady-seconds 60]

Starts the local control plane (kwok, with enough fake GPU and CPU nodes for every pod), a real
NATS and `python -m ponder.operator`; creates N ReasoningServices (four `kubectl apply` at once) and
reports how long each took from creation to Ready (p50, p95), how long until all were Ready, and
the CPU seconds the operator spent getting there, then over a steady period where it only ticks.
Needs `make tools`. PONDER_BENCH_PROFILE=FILE runs the operator under cProfile into FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ponder.local.cluster.commands import Kubectl
from ponder.local.cluster.fake_nodes import GPUS_PER_NODE
from ponder.local.cluster.local_cluster import local_cluster
from ponder.local.nats import nats_server
from ponder.local.processes import free_port, stop_process, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD = REPO_ROOT / "crds" / "ponder.dev_reasoningservices.yaml"
NAMESPACE = "bench"
PODS_PER_CPU_NODE = 100  # fake nodes hold 110 pods; schedulers land on CPU nodes


@dataclass(frozen=True)
class Result:
    services: int
    interval_seconds: float
    ready: int
    p50_seconds: float
    p95_seconds: float
    status_lag_p50_seconds: float
    status_lag_p95_seconds: float
    create_seconds: float
    total_seconds: float
    operator_cpu_seconds_to_ready: float
    steady_seconds: float
    operator_cpu_seconds_steady: float


def manifest(index: int) -> dict[str, Any]:
    """A small service: one GPU worker, a light scheduler."""
    return {
        "apiVersion": "ponder.dev/v1alpha1",
        "kind": "ReasoningService",
        "metadata": {"name": f"svc-{index:04d}", "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
            "workers": {"minReplicas": 1, "maxReplicas": 2},
            "scheduler": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
        },
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def is_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


async def wait_all_ready(
    kubectl: Kubectl, count: int, timeout_seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Per service: seconds from its creation until it was first seen Ready, and the wall time
    (unix) it was."""
    ready_after: dict[str, float] = {}
    seen_ready_at: dict[str, float] = {}
    deadline = time.monotonic() + timeout_seconds
    while len(ready_after) < count and time.monotonic() < deadline:
        listed = json.loads(await kubectl("get", "rsvc", "-n", NAMESPACE, "-o", "json"))
        now = time.time()
        for obj in listed["items"]:
            name = obj["metadata"]["name"]
            if name not in ready_after and is_ready(obj):
                # creationTimestamp has whole seconds: count from the middle of that second.
                ready_after[name] = max(
                    0.0, now - stamp(obj["metadata"]["creationTimestamp"]) - 0.5
                )
                seen_ready_at[name] = now
        await asyncio.sleep(0.5)
    return ready_after, seen_ready_at


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def children_ready_at(kubectl: Kubectl) -> dict[str, float]:
    """When both Deployments of each service became Available (whole seconds, + 0.5)."""
    listed = json.loads(await kubectl("get", "deployments", "-n", NAMESPACE, "-o", "json"))
    ready_at: dict[str, float] = {}
    for deployment in listed["items"]:
        owner = deployment["metadata"]["labels"]["app.kubernetes.io/instance"]
        for condition in deployment.get("status", {}).get("conditions", []):
            if condition["type"] == "Available" and condition["status"] == "True":
                moment = stamp(condition["lastTransitionTime"]) + 0.5
                ready_at[owner] = max(ready_at.get(owner, 0.0), moment)
    return ready_at


async def create_services(kubectl: Kubectl, count: int, parallel: int) -> None:
    """Create the services with a few kubectl processes at once, like a busy CI would."""
    chunks = [list(range(start, count, parallel)) for start in range(parallel)]
    await asyncio.gather(
        *(
            kubectl(
                "apply",
                "--server-side",
                "-f",
                "-",
                stdin=yaml.safe_dump_all([manifest(i) for i in chunk]),
                timeout_seconds=600,
            )
            for chunk in chunks
            if chunk
        )
    )


def profiler_args() -> list[str]:
    profile = os.environ.get("PONDER_BENCH_PROFILE")
    return ["-m", "cProfile", "-o", profile] if profile else []


def start_operator(
    kubeconfig: Path, nats_url: str, interval: float, log: Path, port: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            *(
                ["-m", "cProfile", "-o", os.environ["PONDER_BENCH_PROFILE"]]
                if os.environ.get("PONDER_BENCH_PROFILE")
                else []
            ),
            "-m",
            "ponder.operator",
            "--all-namespaces",
            "--nats-url",
            nats_url,
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PONDER_AUTOSCALE_INTERVAL_SECONDS": str(interval),
        },
        cwd=REPO_ROOT,
        start_new_session=True,
    )


async def run(services: int, interval: float, steady_seconds: float, workdir: Path) -> Result:
    gpu_nodes = max(2, math.ceil(services / GPUS_PER_NODE))
    cpu_nodes = max(1, math.ceil(services / PODS_PER_CPU_NODE))
    async with (
        local_cluster(workdir / "cluster", gpu_nodes=gpu_nodes, cpu_nodes=cpu_nodes) as cluster,
        nats_server(workdir) as nats,
    ):
        kubectl = cluster.kubectl
        await kubectl("apply", "-f", str(CRD))
        await kubectl("wait", "--for=condition=established", "crd/reasoningservices.ponder.dev")
        await kubectl("create", "namespace", NAMESPACE)
        port = free_port()
        operator = await asyncio.to_thread(
            start_operator, cluster.kubeconfig, nats.url, interval, workdir / "operator.log", port
        )
        try:
            await wait_for_port(port, 60, operator)
            cpu_at_start = cpu_seconds(operator.pid)
            started_at = time.time()
            await create_services(kubectl, services, parallel=4)
            created_after = time.time() - started_at
            ready_after, seen_ready_at = await wait_all_ready(kubectl, services, 600)
            cpu_to_ready = cpu_seconds(operator.pid) - cpu_at_start
            children_at = await children_ready_at(kubectl)
            await asyncio.sleep(steady_seconds)
            cpu_steady = cpu_seconds(operator.pid) - cpu_at_start - cpu_to_ready
        finally:
            await asyncio.to_thread(stop_process, operator)
    times = list(ready_after.values()) or [math.nan]
    # What the operator adds: from both child Deployments Available to the service Ready (the
    # poll every 0.5 s is part of it).
    lags = [
        max(0.0, seen_ready_at[name] - children_at[name])
        for name in seen_ready_at
        if name in children_at
    ] or [math.nan]
    last_ready_at = max(seen_ready_at.values(), default=math.nan)
    return Result(
        services=services,
        interval_seconds=interval,
        ready=len(ready_after),
        p50_seconds=round(statistics.median(times), 2),
        p95_seconds=round(percentile(times, 0.95), 2),
        status_lag_p50_seconds=round(statistics.median(lags), 2),
        status_lag_p95_seconds=round(percentile(lags, 0.95), 2),
        create_seconds=round(created_after, 2),
        total_seconds=round(last_ready_at - started_at, 2),
        operator_cpu_seconds_to_ready=round(cpu_to_ready, 2),
        steady_seconds=steady_seconds,
        operator_cpu_seconds_steady=round(cpu_steady, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--interval-seconds", type=float, default=15.0)
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--keep", type=Path, help="keep logs in this folder (default: discard)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ponder-operator-scale-") as scratch:
        workdir = args.keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(
            run(args.services, args.interval_seconds, args.steady_seconds, workdir)
        )
    print(f"ReasoningServices       {result.ready}/{result.services} Ready")
    print(f"creation to Ready       p50 {result.p50_seconds} s, p95 {result.p95_seconds} s")
    print(
        f"children Available to Ready  p50 {result.status_lag_p50_seconds} s, "
        f"p95 {result.status_lag_p95_seconds} s (the operator's share)"
    )
    print(f"kubectl apply of all    {result.create_seconds} s")
    print(f"first apply to all Ready {result.total_seconds} s")
    print(f"operator CPU to Ready   {result.operator_cpu_seconds_to_ready} s")
    print(
        f"operator CPU steady     {result.operator_cpu_seconds_steady} s over "
        f"{result.steady_seconds:g} s (timer every {result.interval_seconds:g} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
