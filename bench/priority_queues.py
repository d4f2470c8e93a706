"""Which JetStream layout lets workers take Critical jobs first: measured on a real nats-server.

    .venv/bin/python -m bench.priority_queues

Two candidates (docs/architecture.md, "Priority classes"):

- **prioritized pull consumer** (NATS 2.12+, ADR-42): one consumer with
  `priority_policy: prioritized` and a priority group; each pull request carries a `priority`
  (0 first). nats-py 2.16 exposes none of it, so the pull requests are written by hand here.
- **a subject and consumer per class**: `jobs.critical`, `jobs`, `jobs.sheddable`, one consumer
  each; a worker asks Critical first (no wait), then Standard, then Sheddable.

Each run queues `--sheddable` Sheddable jobs and then one Critical job, and one worker pulls
them one at a time (as a saturated pool's workers do when a slot frees): the figure is how many
jobs the worker took before the Critical one. It also prints the cost of the per-class layout's
extra no-wait requests, a round trip each when a higher class is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from ponder.local.nats import nats_server

STREAM = "PRIO"


async def _pull_one(nc: NatsClient, consumer: str, request: dict[str, object]) -> Msg | None:
    """One raw pull request of one message; None when the consumer answers with a status."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    try:
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer}",
            json.dumps({"batch": 1, **request}).encode(),
            reply=inbox,
        )
        msg = await subscription.next_msg(timeout=2.0)
    finally:
        await subscription.unsubscribe()
    if msg.headers and msg.headers.get("Status"):
        return None
    return msg


async def prioritized_consumer(nc: NatsClient, sheddable: int) -> int:
    """Jobs taken before the Critical one with one prioritized consumer, pulling at priority 0
    (the highest) for every request."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["one.>"]))
    config = ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT)
    raw = config.as_dict()
    raw.update(priority_policy="prioritized", priority_groups=["jobs"])
    await nc.request(
        f"$JS.API.CONSUMER.CREATE.{STREAM}.workers",
        json.dumps({"stream_name": STREAM, "config": raw}).encode(),
        timeout=2.0,
    )
    for index in range(sheddable):
        await js.publish("one.sheddable", f"sheddable-{index}".encode())
    await js.publish("one.critical", b"critical")
    taken = 0
    while True:
        msg = await _pull_one(nc, "workers", {"group": "jobs", "priority": 0, "no_wait": True})
        if msg is None:
            raise RuntimeError("the Critical job never came")
        await msg.ack()
        if msg.data == b"critical":
            await js.delete_stream(STREAM)
            return taken
        taken += 1


async def per_class_consumers(nc: NatsClient, sheddable: int) -> tuple[int, list[float]]:
    """Jobs taken before the Critical one with a consumer per class, asked in class order; and
    the seconds each empty class's no-wait request took."""
    js = nc.jetstream()
    classes = ["critical", "standard", "sheddable"]
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"cls.{c}" for c in classes]))
    for each in classes:
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=each, filter_subject=f"cls.{each}", ack_policy=AckPolicy.EXPLICIT
            ),
        )
    for index in range(sheddable):
        await js.publish("cls.sheddable", f"sheddable-{index}".encode())
    await js.publish("cls.critical", b"critical")
    taken = 0
    critical_after: int | None = None
    empty_polls: list[float] = []
    while taken <= sheddable:  # every job, in the order a worker takes them
        for each in classes:
            started = time.perf_counter()
            msg = await _pull_one(nc, each, {"no_wait": True})
            if msg is None:
                empty_polls.append(time.perf_counter() - started)
                continue
            await msg.ack()
            if msg.data == b"critical":
                critical_after = taken
            taken += 1
            break
        else:
            raise RuntimeError("a job never came")
    await js.delete_stream(STREAM)
    if critical_after is None:
        raise RuntimeError("the Critical job never came")
    return critical_after, empty_polls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sheddable", type=int, default=20, help="Sheddable jobs queued first")
    args = parser.parse_args()
    async with nats_server() as server:
        nc = await nats.connect(server.url)
        try:
            one = await prioritized_consumer(nc, args.sheddable)
            per_class, polls = await per_class_consumers(nc, args.sheddable)
        finally:
            await nc.close()
    print(f"{args.sheddable} Sheddable jobs queued, then 1 Critical; jobs taken before it:")
    print(f"  one prioritized pull consumer (pull priority 0)  {one}")
    print(f"  a subject and consumer per class                 {per_class}")
    print(
        f"an empty class's no-wait pull: p50 {statistics.median(polls) * 1000:.2f} ms, "
        f"max {max(polls) * 1000:.2f} ms over {len(polls)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
