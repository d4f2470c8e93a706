"""Operator replicas as peers: one active, the others standing by (kopf's peering).

Every replica keeps a record in one peering object (a `ClusterKopfPeering` when the operator
watches every namespace, a `KopfPeering` in each watched namespace otherwise): its priority, its
lifetime and when it last renewed the record. kopf pauses a replica while a live record of a
higher priority exists, and resumes it once that record is gone (a graceful exit removes it) or
expired (a killed replica's record expires `lifetime_seconds` after its last renewal). So
`lifetime_seconds` bounds the failover after a SIGKILL, and the priorities decide who is active.

The default priority makes the replica that started first the active one: a replica that
starts later (a rollout's new pod, a crashed pod's replacement) stands by instead of taking
over, so a steady pair never trades the work back and forth. Pure: no kopf here (handlers
applies a `Peering` to kopf's settings).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_LIFETIME_SECONDS = 10
"""kopf renews a record 5-10 s before it expires (at least every second), so 10 s renews every
1-5 s and leaves the API server 5-9 s to accept a renewal before the standby takes over: a
SIGKILLed active is replaced within 10 s plus one resume pass, well under the 30 s target."""
MIN_LIFETIME_SECONDS = 5
"""At 5 s kopf renews every second, which leaves a renewal 4 s to land; any shorter and a slow
API server would wake the standby beside a live active."""


@dataclass(frozen=True)
class Peering:
    """How this replica takes part in peering."""

    name: str
    """The peering object's name, shared by every replica of one operator deployment."""
    priority: int
    """Highest live priority is active; equal priorities pause everyone (kopf), so unique."""
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS
    """How long this replica's record counts as alive after its last renewal."""


def start_priority(started_at_ns: int) -> int:
    """The default priority of a replica started at `started_at_ns` (ns since the epoch): minus
    its start in microseconds, so the earlier start is the higher priority and two replicas tie
    only when they start in the same microsecond. Negative, so any explicit priority of 0 or
    more (a developer's `--priority 1` on a laptop) outranks every deployed replica."""
    return -(started_at_ns // 1000)


def peering_of(
    name: str | None, priority: int | None, lifetime_seconds: int, started_at_ns: int
) -> Peering | None:
    """The peering the command line asks for: None (standalone) without a name; the start
    priority unless one is given. Raises ValueError for a lifetime kopf cannot keep."""
    if not name:
        return None
    if lifetime_seconds < MIN_LIFETIME_SECONDS:
        raise ValueError(
            f"--peering-lifetime-seconds={lifetime_seconds} is below {MIN_LIFETIME_SECONDS}: "
            "a renewal delayed by a busy API server would wake a standby beside the active"
        )
    return Peering(
        name=name,
        priority=start_priority(started_at_ns) if priority is None else priority,
        lifetime_seconds=lifetime_seconds,
    )


def _deadline(record: Mapping[str, Any]) -> datetime.datetime | None:
    """When a keep-alive record (kopf's `priority`, `lifetime`, `lastseen`) dies; None when it
    cannot be read (counted as dead, as kopf would fail on it)."""
    try:
        seen = datetime.datetime.fromisoformat(str(record["lastseen"]))
        lifetime = datetime.timedelta(seconds=int(record.get("lifetime", 60)))
    except (KeyError, TypeError, ValueError):
        return None
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return seen + lifetime


def is_active(
    records: Mapping[str, Mapping[str, Any]], identity: str, now: datetime.datetime
) -> bool:
    """Whether the replica `identity` is the active one by the peering object's records
    (its `status`, identity -> record), as kopf decides it: its own record is alive, and no
    other live record has a higher priority or the same one (equal priorities pause all)."""
    live = {
        peer: int(record.get("priority", 0))
        for peer, record in records.items()
        if (deadline := _deadline(record)) is not None and deadline > now
    }
    if identity not in live:
        return False
    own = live.pop(identity)
    return all(priority < own for priority in live.values())
