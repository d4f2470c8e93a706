"""The soak's figures (pure): windows of queries, the growth of each process, the verdict.

`window_stats` counts what one window of the soak sent, answered and failed (by code) and the
latency of what it answered; `growth_of` reads a process's samples from the warm-up to the end as
a trend; `target_misses` says why the judged processes miss the target (empty: met). The rows
`bench.soak` prints as it goes are `progress_header` and `progress_row`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from bench.process_usage import Usage
from bench.report import fmt, format_table
from bench.summary import percentile

GROWTH_LIMIT = 0.10
"""The target: RSS and descriptors grow less than this from the warm-up to the end."""

_HTTP_STATUS = re.compile(r"^HTTP (\d{3})\b")
_EXCEPTION = re.compile(r"^(\w+)\(")
_EXCEPTION_CODES = {"APITimeoutError": "timeout", "APIConnectionError": "connection"}


def failure_code(error: str) -> str:
    """The short code of a `QueryRecord.error`: the HTTP status (`504`), `timeout` or
    `connection` for the client's own errors, else the error's first word."""
    if match := _HTTP_STATUS.match(error):
        return match.group(1)
    if match := _EXCEPTION.match(error):
        return _EXCEPTION_CODES.get(match.group(1), match.group(1))
    return error.split(maxsplit=1)[0] if error.strip() else "unknown"


@dataclass(frozen=True)
class Finished:
    """One query's end: when (seconds since the soak began), how long it took, and its failure
    code (None: answered)."""

    finished_seconds: float
    latency_seconds: float
    failure: str | None = None


@dataclass(frozen=True)
class WindowStats:
    """The queries of one window `[start, end)`: sent in it, and answered or failed in it, with
    the p50 and p95 latency of those answered."""

    start_seconds: float
    end_seconds: float
    sent: int
    answered: int
    failures: Mapping[str, int]
    p50_latency_seconds: float
    p95_latency_seconds: float

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def window_stats(
    finished: Iterable[Finished], sent_seconds: Iterable[float], start: float, end: float
) -> WindowStats:
    """What was sent and what ended within `[start, end)`."""
    ended = [f for f in finished if start <= f.finished_seconds < end]
    latencies = [f.latency_seconds for f in ended if f.failure is None]
    return WindowStats(
        start_seconds=start,
        end_seconds=end,
        sent=sum(1 for sent in sent_seconds if start <= sent < end),
        answered=len(latencies),
        failures=dict(sorted(Counter(f.failure for f in ended if f.failure).items())),
        p50_latency_seconds=percentile(latencies, 0.5),
        p95_latency_seconds=percentile(latencies, 0.95),
    )


def failures_text(failures: Mapping[str, int]) -> str:
    """`504:3 timeout:1`, or `-` for none."""
    return " ".join(f"{code}:{count}" for code, count in sorted(failures.items())) or "-"


def sample_ticks(duration_seconds: float, every_seconds: float) -> list[float]:
    """When to sample (seconds since the start): 0, every `every_seconds`, and the end."""
    if every_seconds <= 0:
        raise ValueError(f"the sampling interval must be positive, not {every_seconds}")
    ticks = [step * every_seconds for step in range(int(duration_seconds // every_seconds) + 1)]
    if duration_seconds - ticks[-1] > 1e-9:
        ticks.append(duration_seconds)
    return ticks


@dataclass(frozen=True)
class Sample:
    """Every watched process's usage at one moment (None: the process was gone)."""

    elapsed_seconds: float
    usage: Mapping[str, Usage | None]


def relative_growth(start: float, end: float) -> float:
    """`(end - start) / start`; from nothing, 0 when still nothing and infinite otherwise."""
    if start == 0:
        return 0.0 if end == 0 else math.inf
    return (end - start) / start


def trend_growth(points: Sequence[tuple[float, float]]) -> float | None:
    """How much the trend of `(time, value)` points rises from the first time to the last,
    relative to its level at the first; None without two distinct times.

    The trend is the Theil-Sen line (Theil 1950, Sen 1968): its slope is the median of the slopes
    between every pair of points, its level the median of `value - slope x time`. A leak raises
    every later sample, so it moves the median fully; one noisy sample at either end (a burst of
    connections, a garbage collection) moves it little, where the first and the last sample
    alone would decide a comparison of the two.
    """
    slopes = [(v2 - v1) / (t2 - t1) for (t1, v1), (t2, v2) in combinations(points, 2) if t2 != t1]
    if not slopes:
        return None
    slope = statistics.median(slopes)
    level = statistics.median(value - slope * time for time, value in points)
    first = min(time for time, _ in points)
    last = max(time for time, _ in points)
    return relative_growth(max(0.0, level + slope * first), max(0.0, level + slope * last))


@dataclass(frozen=True)
class Growth:
    """One process from the baseline sample (the first at or after the warm-up) to the last:
    the samples there, the highest in between, and the trend's growth over them."""

    process: str
    judged: bool
    baseline_seconds: float | None
    end_seconds: float | None
    baseline: Usage | None
    end: Usage | None
    peak: Usage | None
    """The highest RSS and the most descriptors from the baseline to the end (a peak that came
    back down is load, not a leak)."""
    rss_growth: float | None
    fd_growth: float | None
    """The trends' growth (`trend_growth`); None when the process is gone at the end."""


def growth_of(
    samples: Sequence[Sample], process: str, warmup_seconds: float, judged: bool = True
) -> Growth:
    """`process`'s growth over `samples` (in time order) from the warm-up to the end."""
    after = [s for s in samples if s.elapsed_seconds >= warmup_seconds - 1e-9]
    if not after:
        return Growth(process, judged, None, None, None, None, None, None, None)
    end = after[-1].usage.get(process)
    alive = [(s.elapsed_seconds, u) for s in after if (u := s.usage.get(process)) is not None]
    peak = None
    if alive:
        peak = Usage(max(u.rss_bytes for _, u in alive), max(u.open_fds for _, u in alive))
    rss = trend_growth([(t, u.rss_bytes) for t, u in alive]) if end else None
    fds = trend_growth([(t, u.open_fds) for t, u in alive]) if end else None
    return Growth(
        process=process,
        judged=judged,
        baseline_seconds=after[0].elapsed_seconds,
        end_seconds=after[-1].elapsed_seconds,
        baseline=after[0].usage.get(process),
        end=end,
        peak=peak,
        rss_growth=rss,
        fd_growth=fds,
    )


def target_misses(growths: Iterable[Growth], limit: float = GROWTH_LIMIT) -> list[str]:
    """Why the judged processes miss the target (growth < `limit`); empty when they meet it."""
    misses: list[str] = []
    for growth in growths:
        if not growth.judged:
            continue
        name = growth.process
        if growth.baseline_seconds is None or growth.baseline_seconds == growth.end_seconds:
            misses.append(f"{name}: no sample after the warm-up's to compare with")
            continue
        if growth.baseline is None:
            misses.append(f"{name}: not running at the baseline ({growth.baseline_seconds:.0f} s)")
        if growth.end is None:
            misses.append(f"{name}: not running at the end ({growth.end_seconds:.0f} s)")
        for what, amount in (("RSS", growth.rss_growth), ("open fds", growth.fd_growth)):
            if amount is not None and amount >= limit:
                misses.append(f"{name}: {what} grew {amount:.1%} (limit {limit:.0%})")
    return misses


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def growth_table(growths: Sequence[Growth], limit: float = GROWTH_LIMIT) -> str:
    """One row per process: RSS and descriptors at the baseline, at the end and at their peak,
    and the growth of their trends."""
    headers = (
        "process",
        "RSS MiB base",
        "end",
        "peak",
        "RSS growth",
        "fds base",
        "end",
        "peak",
        "fd growth",
        "within target",
    )

    def mib(usage: Usage | None) -> str:
        return fmt(None if usage is None else usage.rss_mib, 1)

    def fds(usage: Usage | None) -> str:
        return fmt(None if usage is None else usage.open_fds)

    rows = []
    for g in growths:
        within = "not judged" if not g.judged else "NO" if target_misses([g], limit) else "yes"
        rows.append(
            [
                g.process,
                *(mib(g.baseline), mib(g.end), mib(g.peak), percent(g.rss_growth)),
                *(fds(g.baseline), fds(g.end), fds(g.peak), percent(g.fd_growth)),
                within,
            ]
        )
    return format_table(headers, rows, left_columns=1)


def usage_cell(usage: Usage | None) -> str:
    """`85.2/23`: RSS in MiB and open descriptors; `gone` for a process that is not running."""
    return "gone" if usage is None else f"{usage.rss_mib:.1f}/{usage.open_fds}"


_QUERY_COLUMNS = (("t s", 6), ("sent", 5), ("ok", 5), ("p50 s", 6), ("p95 s", 6))


def progress_header(processes: Sequence[str]) -> str:
    """The header of the rows `progress_row` prints: the window's queries, then each process's
    `RSS MiB/fds`, then the failures by code."""
    cells = [name.rjust(width) for name, width in _QUERY_COLUMNS]
    cells += [name.rjust(_process_width(name)) for name in processes]
    return "  ".join([*cells, "failed"])


def progress_row(sample: Sample, window: WindowStats | None, processes: Sequence[str]) -> str:
    """One sample's row; `window` is the window it closes (None for the first sample)."""
    if window is None:
        queries = ["-", "-", "-", "-"]
        failed = "-"
    else:
        queries = [
            str(window.sent),
            str(window.answered),
            fmt(window.p50_latency_seconds),
            fmt(window.p95_latency_seconds),
        ]
        failed = failures_text(window.failures)
    values = [f"{sample.elapsed_seconds:.0f}", *queries]
    cells = [value.rjust(width) for value, (_, width) in zip(values, _QUERY_COLUMNS, strict=True)]
    cells += [usage_cell(sample.usage.get(name)).rjust(_process_width(name)) for name in processes]
    return "  ".join([*cells, failed])


def _process_width(name: str) -> int:
    return max(len(name), len("1234.5/1234"))
