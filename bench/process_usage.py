"""What a process tree holds right now: resident memory and open file descriptors, from /proc.

    usage = tree_usage(stack.plane.scheduler.process.pid)   # None once it is gone

A Ponder scheduler or worker is one Python process; `vllm serve` is an API server with its
engine core (and helpers) as child processes, so a process is measured with its descendants:
RSS and descriptors summed over the tree, with the number of processes it counted. Pages the
processes share (a forked child's) count once per process, which overstates the total but not
its growth. The parsers are pure, so they are table-tested on /proc text; Linux only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    """A process tree's resident memory and open descriptors, and how many processes it has."""

    rss_bytes: int
    open_fds: int
    processes: int = 1

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / MIB


def parse_rss_bytes(status: str) -> int:
    """VmRSS of a `/proc/<pid>/status` text in bytes; ValueError when it has none (a zombie or
    a kernel thread)."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key != "VmRSS":
            continue
        amount, _, unit = value.strip().partition(" ")
        if unit.strip() != "kB":
            raise ValueError(f"VmRSS in an unknown unit: {line!r}")
        return int(amount) * KIB
    raise ValueError("the status has no VmRSS line")


def parse_parent_pid(stat: str) -> int:
    """The parent's pid from a `/proc/<pid>/stat` text (`pid (comm) state ppid ...`); the
    command name may hold spaces and parentheses, so the fields are read after its last `)`."""
    _, closing, rest = stat.rpartition(")")
    fields = rest.split()
    if not closing or len(fields) < 2:
        raise ValueError(f"not a /proc stat line: {stat[:80]!r}")
    return int(fields[1])


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """`root` and every process below it in `parents` (pid -> parent pid), root first, then in
    breadth-first order."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree = [root]
    seen = {root}
    for pid in tree:  # grows while it is walked
        for child in sorted(children.get(pid, ())):
            if child not in seen:
                seen.add(child)
                tree.append(child)
    return tree


def combined(usages: Iterable[Usage]) -> Usage:
    """The sum of the processes' usages."""
    rss = fds = count = 0
    for usage in usages:
        rss += usage.rss_bytes
        fds += usage.open_fds
        count += usage.processes
    return Usage(rss_bytes=rss, open_fds=fds, processes=count)


def process_parents(proc: Path = PROC) -> dict[int, int]:
    """pid -> parent pid of every process readable under `proc` now."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):  # gone meanwhile, or not a process
            parents[int(entry.name)] = parse_parent_pid((entry / "stat").read_text())
    return parents


def process_usage(pid: int, proc: Path = PROC) -> Usage | None:
    """One process's usage; None when it is gone or is a zombie."""
    try:
        rss = parse_rss_bytes((proc / str(pid) / "status").read_text())
        fds = len(os.listdir(proc / str(pid) / "fd"))
    except (OSError, ValueError):
        return None
    return Usage(rss_bytes=rss, open_fds=fds)


def tree_usage(root: int, proc: Path = PROC) -> Usage | None:
    """`root` with its descendants, summed; None when `root` itself is gone (blocking: a few
    hundred small reads, so call it off the event loop)."""
    if process_usage(root, proc) is None:
        return None
    pids = descendants(root, process_parents(proc))
    return combined(usage for pid in pids if (usage := process_usage(pid, proc)) is not None)
