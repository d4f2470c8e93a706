"""A three-node JetStream cluster on loopback (`ponder.local.nats.nats_cluster`): a client given
the comma-separated URL list, an R3 job stream set up by `ensure_stream`, and its leader
SIGKILLed: the queued jobs and the consumers' state survive, a new leader serves them, and the
autoscaler's backlog reads the same through the JetStream API. No vLLM: jobs are published and
pulled by hand."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest_asyncio
from nats.js import JetStreamContext

from ponder.api.jetstream import ensure_stream
from ponder.api.nats_urls import nats_servers
from ponder.api.service_config import ServiceConfig
from ponder.api.subjects import ServiceSubjects
from ponder.local.nats import NatsCluster, nats_cluster
from ponder.operator.runtime import NatsPool
from ponder.operator.signals import STATS_WILDCARD, read_backlog
from ponder.operator.snapshot import Backlog
from tests.cluster.eventually import eventually

WAIT_SECONDS = 60.0
"""Bounds every wait here; only a hang comes near it."""
JOBS = 20


@pytest_asyncio.fixture
async def cluster(stack_log_dir: Path) -> AsyncIterator[NatsCluster]:
    async with nats_cluster(3, stack_log_dir) as started:
        yield started


async def test_an_r3_stream_keeps_its_jobs_when_its_leader_is_sigkilled(
    cluster: NatsCluster,
) -> None:
    config = ServiceConfig(name="cluster", model="tiny", stream_replicas=3)
    subjects = ServiceSubjects(config.namespace, config.name)
    client = await nats.connect(
        nats_servers(cluster.url), max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    try:
        js = client.jetstream(timeout=5)
        await ensure_stream(js, subjects, config, max_workers=2)
        stream = await js.stream_info(subjects.stream)
        assert stream.config.num_replicas == 3
        for index in range(JOBS):
            await js.publish(
                subjects.jobs, f"job {index}".encode(), headers={"Nats-Msg-Id": str(index)}
            )
        pull = await js.pull_subscribe_bind(subjects.consumer, subjects.stream)
        (taken,) = await pull.fetch(1, timeout=5)
        await taken.ack_sync()
        before = await read_backlog(js, subjects)
        assert before is not None and before.pending_jobs == JOBS - 1
        # The operator's own connection, given the cluster as its --nats-url.
        operator = NatsPool(on_connect=lambda nc: nc.subscribe(STATS_WILDCARD))
        await operator.jetstream(cluster.url)

        leader = await cluster.stream_leader(subjects.stream)
        killed_at = time.monotonic()
        cluster.kill(leader)
        successor = await cluster.stream_leader(subjects.stream, WAIT_SECONDS, other_than=leader)
        elected = time.monotonic() - killed_at

        # The client moves to a live server; the new leader has every job but the acked one,
        # and a publish retried with a known id is still dropped as a duplicate. (Each
        # consumer elects its own leader too: until it has, its info request times out, and
        # the operator holds the replicas, as `reconcile._read_backlog` does.)
        after = await eventually(
            lambda: backlog_or_none(js, subjects),
            lambda read: read is not None,
            timeout_seconds=WAIT_SECONDS,
            what="the backlog read from the new leaders",
        )
        assert after is not None and after.pending_jobs == JOBS - 1
        autoscaler = await eventually(
            lambda: operator_backlog(operator, cluster.url, subjects),
            lambda read: read is not None,
            timeout_seconds=WAIT_SECONDS,
            what="the operator's backlog read after the kill",
        )
        assert autoscaler == after
        await operator.close()
        ack = await js.publish(subjects.jobs, b"job 3", headers={"Nats-Msg-Id": "3"})
        assert ack.duplicate
        jobs = await pull.fetch(JOBS, timeout=5)
        assert sorted(job.data for job in jobs) == sorted(
            f"job {index}".encode() for index in range(1, JOBS)
        )
        for job in jobs:
            await job.ack_sync()

        await cluster.restart(leader)
        await cluster.wait_until_ready(WAIT_SECONDS)
        empty = await read_backlog(js, subjects)
        assert empty is not None and empty.total == 0
        print(
            f"\nnats cluster: nats-{leader} (stream leader) SIGKILLed, nats-{successor} leads "
            f"after {elected:.1f} s; {JOBS - 1} queued jobs all there"
        )
    finally:
        await client.close()


async def backlog_or_none(js: JetStreamContext, subjects: ServiceSubjects) -> Backlog | None:
    """The backlog, None while a consumer has no leader or the connection is moving."""
    try:
        return await read_backlog(js, subjects)
    except Exception:  # a consumer's election, a request in flight on the killed server
        return None


async def operator_backlog(pool: NatsPool, url: str, subjects: ServiceSubjects) -> Backlog | None:
    """The backlog as the operator reads it through its own pool; None as `backlog_or_none`."""
    try:
        js = await pool.jetstream(url)
    except Exception:  # its connection is moving
        return None
    return await backlog_or_none(js, subjects)
