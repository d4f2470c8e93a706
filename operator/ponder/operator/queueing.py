"""Queueing estimates for sizing the worker pool (pure maths; docs/architecture.md,
"Autoscaling policy").

A worker slot serves one branch at a time, so the pool is a multi-server queue: branches arrive
at `arrival_rate` per second, each holds a slot for `service_seconds` on average, and the
offered load `a = arrival_rate x service_seconds` is the slots busy on average (Little's law).
With Poisson arrivals and exponential service (M/M/c), Erlang's C formula gives the probability
that a branch waits at all on `c` slots, and the tail of its wait:

    P(wait > 0) = C(c, a)
    P(wait > t) = C(c, a) x exp(-(c - a) t / service_seconds)        (c > a)

C is computed from Erlang's B by the stable recursion B(0) = 1, B(k) = a B / (k + a B), then
C = c B / (c - a (1 - B)); no factorial or power is ever formed, so thousands of slots are fine.
"""

from __future__ import annotations

import math


def offered_load(arrival_rate: float, service_seconds: float) -> float:
    """Slots busy on average (Erlangs): arrivals per second x seconds each holds a slot."""
    return max(0.0, arrival_rate) * max(0.0, service_seconds)


def erlang_b(servers: int, load: float) -> float:
    """Erlang B: the probability that all `servers` are busy when none may queue."""
    if servers < 0:
        raise ValueError("servers must not be negative")
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    return blocking


def erlang_c(servers: int, load: float) -> float:
    """Erlang C: the probability that an arrival waits for one of `servers` (M/M/c); 1 when
    the servers cannot carry the load (`servers <= load`), where the queue grows without end."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    blocking = erlang_b(servers, load)
    return servers * blocking / (servers - load * (1.0 - blocking))


def wait_probability(
    servers: int, load: float, service_seconds: float, wait_seconds: float
) -> float:
    """P(wait > `wait_seconds`) of an arrival in M/M/c with mean service `service_seconds`."""
    waits = erlang_c(servers, load)
    if waits >= 1.0 or wait_seconds <= 0 or service_seconds <= 0:
        return waits
    return waits * math.exp(-(servers - load) * wait_seconds / service_seconds)


def servers_for_wait(
    arrival_rate: float,
    service_seconds: float,
    wait_seconds: float,
    max_wait_probability: float,
    limit: int,
) -> int:
    """The fewest servers (at most `limit`) at which P(wait > `wait_seconds`) is within
    `max_wait_probability`; `limit` when even that many are not enough. 0 without load.

    The search walks c upward from the first stable count, carrying Erlang B along, so it
    costs O(c) however large the pool.
    """
    load = offered_load(arrival_rate, service_seconds)
    if load <= 0:
        return 0
    first = math.floor(load) + 1  # the fewest servers with c > a
    if first > limit:
        return limit
    blocking = erlang_b(first - 1, load)
    for servers in range(first, limit + 1):
        blocking = load * blocking / (servers + load * blocking)
        waits = servers * blocking / (servers - load * (1.0 - blocking))
        tail = waits
        if wait_seconds > 0:
            tail *= math.exp(-(servers - load) * wait_seconds / service_seconds)
        if tail <= max_wait_probability:
            return servers
    return limit


def littles_law_servers(arrival_rate: float, service_seconds: float, utilization: float) -> int:
    """Servers that carry the offered load at `utilization` (0 < utilization <= 1)."""
    if not 0 < utilization <= 1:
        raise ValueError("utilization must be within (0, 1]")
    return math.ceil(offered_load(arrival_rate, service_seconds) / utilization - 1e-9)
