"""The data plane on a three-node JetStream cluster with an R3 job stream, its stream leader
SIGKILLed under the bounded load of `tests.chaos.load` (real vLLM on the CPU with the shipped
model, two workers, one scheduler, every program given the three servers' URLs).

Prints (see it with `-s`) and asserts the queries answered, failed with a clear error, lost (0)
and duplicated (0), and the seconds from the kill until the service was whole again; the
election of the new leader is printed too. The autoscaler's signal, the consumers' state read
through the JetStream API (answered by each consumer's leader), is read again after the kill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.js import JetStreamContext

from ponder.api.nats_urls import nats_servers
from ponder.api.subjects import ServiceSubjects
from ponder.local.dataplane import local_dataplane
from ponder.local.nats import NatsCluster
from ponder.local.vllm import VllmServer
from ponder.operator.signals import read_backlog
from ponder.operator.snapshot import Backlog
from tests.chaos.load import Load, Outcome, Target, recovery_seconds, tally
from tests.chaos.test_dataplane_chaos import (
    SETTLE_SECONDS,
    SPEC,
    assert_nothing_lost_or_duplicated,
    assert_recovered,
    holds_a_job,
    report,
    under_load,
)
from tests.cluster.eventually import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.vllm]

DOWN_SECONDS = 5.0
"""How long the killed leader stays away: past the election, so the cluster serves on two."""


async def test_stream_leader_sigkilled_in_a_three_node_cluster_loses_and_duplicates_nothing(
    vllm: VllmServer,
    chaos_cluster: NatsCluster,
    stack_log_dir: Path,
    http: aiohttp.ClientSession,
) -> None:
    async with local_dataplane(
        name="chaos-cluster",
        nats_url=chaos_cluster.url,
        vllm_url=vllm.base_url,
        served_name=vllm.served_name,
        workers=2,
        log_dir=stack_log_dir,
        config_overrides={"slots_per_worker": 8, "stream_replicas": 3},
    ) as plane:
        subjects = ServiceSubjects(plane.config.namespace, plane.config.name)
        client = await nats.connect(nats_servers(plane.nats_url), max_reconnect_attempts=-1)
        try:
            js = client.jetstream(timeout=5)
            stream = await js.stream_info(subjects.stream)
            assert stream.config.num_replicas == 3
            assert stream.cluster is not None and len(stream.cluster.replicas or []) == 2
            load = Load(SPEC, Target(plane.base_url), http)
            leader = -1
            killed_at = elected_at = restarted_at = 0.0

            async def kill_the_stream_leader() -> None:
                nonlocal leader, killed_at, elected_at, restarted_at
                await load.sent(16)
                await holds_a_job(http, plane, 0)
                leader = await chaos_cluster.stream_leader(subjects.stream)
                killed_at = time.monotonic()
                chaos_cluster.kill(leader)
                await chaos_cluster.stream_leader(
                    subjects.stream, SETTLE_SECONDS, other_than=leader
                )
                elected_at = time.monotonic()
                await asyncio.sleep(max(0.0, killed_at + DOWN_SECONDS - time.monotonic()))
                await chaos_cluster.restart(leader)  # as the StatefulSet brings the pod back
                restarted_at = time.monotonic()

            records = await under_load(load, kill_the_stream_leader())
            # Every job was acked or dropped: the autoscaler, reading the consumers through
            # the JetStream API, sees an empty queue (and can read it with a leader gone).
            backlog = await eventually(
                lambda: backlog_or_none(js, subjects),
                lambda read: read is not None and read.total == 0,
                timeout_seconds=SETTLE_SECONDS,
                interval_seconds=0.5,
                what="the backlog read through the JetStream API draining to 0",
            )
        finally:
            await client.close()
    counts = tally(records)
    recovery = recovery_seconds(records, killed_at)
    answered_after = [
        r.ended_at - killed_at
        for r in records
        if r.sent_at >= killed_at and r.outcome is Outcome.ANSWERED
    ]
    again = f"{min(answered_after):.1f} s" if answered_after else "never"
    report(
        "stream leader SIGKILL (3-node cluster, R3)",
        counts,
        [recovery],
        f"nats-{leader} killed; new leader in {elected_at - killed_at:.1f} s; a query sent "
        f"after the kill answered {again} after it; the killed member back after "
        f"{restarted_at - killed_at:.1f} s; backlog {backlog}",
    )
    # R3: every job with a PubAck is on two servers at least, so none is lost with the leader.
    # A publish during the election may be refused (503) and a query may run out of time (504);
    # nothing else.
    assert_nothing_lost_or_duplicated(
        counts, records, failures_allowed={"queue_unavailable", "deadline_exceeded"}
    )
    assert_recovered([recovery])


async def backlog_or_none(js: JetStreamContext, subjects: ServiceSubjects) -> Backlog | None:
    """The backlog, None while a consumer elects its leader (its info request times out), when
    the operator holds the replicas rather than guess."""
    try:
        return await read_backlog(js, subjects)
    except Exception:  # an election, a request in flight on the killed server
        return None
