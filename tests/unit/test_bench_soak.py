"""The soak benchmark's arithmetic: /proc parsing, windows of queries, growth and the verdict.

No process is started: /proc is read as text, or from a folder laid out like it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.process_usage import (
    MIB,
    Usage,
    combined,
    descendants,
    parse_parent_pid,
    parse_rss_bytes,
    process_parents,
    tree_usage,
)
from bench.soak import parse_args
from bench.soak_stats import (
    Finished,
    Growth,
    Sample,
    failure_code,
    failures_text,
    growth_of,
    growth_table,
    progress_header,
    progress_row,
    relative_growth,
    sample_ticks,
    target_misses,
    trend_growth,
    window_stats,
)

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  900000 kB
VmRSS:\t   81234 kB
RssAnon:\t   60000 kB
Threads:\t4
"""
ZOMBIE_STATUS = "Name:\tpython\nState:\tZ (zombie)\nThreads:\t1\n"


@pytest.mark.parametrize(
    ("status", "rss"),
    [
        (STATUS, 81234 * 1024),
        ("VmRSS:\t0 kB\n", 0),
        ("VmHWM:\t5 kB\nVmRSS:  12 kB\n", 12 * 1024),  # VmHWM is not VmRSS
    ],
)
def test_rss_is_read_from_the_vmrss_line_in_bytes(status: str, rss: int) -> None:
    assert parse_rss_bytes(status) == rss


@pytest.mark.parametrize(
    ("status", "message"),
    [(ZOMBIE_STATUS, "no VmRSS"), ("VmRSS:\t12 MB\n", "unknown unit"), ("", "no VmRSS")],
)
def test_status_without_a_readable_rss_is_refused(status: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rss_bytes(status)


@pytest.mark.parametrize(
    ("stat", "parent"),
    [
        ("4242 (python) S 17 4242 4242 0 -1 4194560 ...", 17),
        ("99 (VLLM::EngineCore) R 4242 99 99 0", 4242),
        ("7 (odd (name) S 3) S 1 7 7 0", 1),  # a command name with spaces and parentheses
    ],
)
def test_parent_pid_is_the_field_after_the_state(stat: str, parent: int) -> None:
    assert parse_parent_pid(stat) == parent


@pytest.mark.parametrize("stat", ["", "4242 python S 17", "4242 (python)"])
def test_malformed_stat_is_refused(stat: str) -> None:
    with pytest.raises(ValueError):
        parse_parent_pid(stat)


@pytest.mark.parametrize(
    ("root", "parents", "tree"),
    [
        (10, {10: 1, 11: 10, 12: 10, 13: 11, 20: 1}, [10, 11, 12, 13]),
        (10, {10: 1, 20: 1}, [10]),  # no children: the worker's and the scheduler's case
        (10, {}, [10]),  # not in the table (gone meanwhile): itself only
        (20, {10: 1, 11: 10, 20: 1}, [20]),
        (10, {10: 11, 11: 10}, [10, 11]),  # a cycle (pids reused mid-scan) ends
    ],
)
def test_descendants_are_the_root_then_its_tree(
    root: int, parents: dict[int, int], tree: list[int]
) -> None:
    assert descendants(root, parents) == tree


def test_combined_usage_sums_memory_descriptors_and_processes() -> None:
    assert combined([Usage(100, 5), Usage(50, 2, processes=2)]) == Usage(150, 7, processes=3)
    assert combined([]) == Usage(0, 0, processes=0)


def _fake_process(proc: Path, pid: int, parent: int, rss_kib: int | None, fds: int) -> None:
    folder = proc / str(pid)
    (folder / "fd").mkdir(parents=True)
    for fd in range(fds):
        (folder / "fd" / str(fd)).touch()
    (folder / "stat").write_text(f"{pid} (p{pid}) S {parent} {pid} {pid} 0\n")
    rss = "" if rss_kib is None else f"VmRSS:\t{rss_kib} kB\n"
    (folder / "status").write_text(f"Name:\tp{pid}\n{rss}")


def test_tree_usage_sums_a_process_and_its_descendants_from_a_proc_folder(
    tmp_path: Path,
) -> None:
    _fake_process(tmp_path, 10, 1, rss_kib=1000, fds=4)  # vLLM's API server
    _fake_process(tmp_path, 11, 10, rss_kib=3000, fds=6)  # its engine core
    _fake_process(tmp_path, 12, 11, rss_kib=None, fds=0)  # a zombie: not counted
    _fake_process(tmp_path, 20, 1, rss_kib=500, fds=3)  # somebody else
    (tmp_path / "self").mkdir()  # not a pid
    assert process_parents(tmp_path) == {10: 1, 11: 10, 12: 11, 20: 1}
    assert tree_usage(10, tmp_path) == Usage(4000 * 1024, 10, processes=2)
    assert tree_usage(20, tmp_path) == Usage(500 * 1024, 3, processes=1)
    assert tree_usage(12, tmp_path) is None
    assert tree_usage(99, tmp_path) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("HTTP 504: the query's deadline passed", "504"),
        ("HTTP 503: no worker", "503"),
        ("APITimeoutError('Request timed out.')", "timeout"),
        ("APIConnectionError('Connection error.')", "connection"),
        ("ValueError('odd')", "ValueError"),
        ("something else", "something"),
        ("", "unknown"),
    ],
)
def test_failure_code_is_the_status_or_the_kind_of_client_error(error: str, code: str) -> None:
    assert failure_code(error) == code


FINISHED = [
    Finished(0.5, 1.0),
    Finished(9.9, 3.0),
    Finished(10.0, 2.0),  # the next window's: windows are [start, end)
    Finished(12.0, 30.0, "504"),
    Finished(13.0, 60.0, "timeout"),
    Finished(14.0, 30.0, "504"),
    Finished(19.0, 4.0),
]
SENT = [0.1, 0.2, 5.0, 9.99, 10.0, 11.0]


@pytest.mark.parametrize(
    ("start", "end", "sent", "answered", "failures", "p50", "p95"),
    [
        (0.0, 10.0, 4, 2, {}, 2.0, 2.9),
        (10.0, 20.0, 2, 2, {"504": 2, "timeout": 1}, 3.0, 3.9),  # failed latencies left out
        (20.0, 30.0, 0, 0, {}, math.nan, math.nan),
        (0.0, math.inf, 6, 4, {"504": 2, "timeout": 1}, 2.5, 3.85),
    ],
)
def test_window_counts_what_was_sent_and_ended_in_it(
    start: float,
    end: float,
    sent: int,
    answered: int,
    failures: dict[str, int],
    p50: float,
    p95: float,
) -> None:
    window = window_stats(FINISHED, SENT, start, end)
    assert (window.sent, window.answered, dict(window.failures)) == (sent, answered, failures)
    assert window.failed == sum(failures.values())
    assert window.p50_latency_seconds == pytest.approx(p50, nan_ok=True)
    assert window.p95_latency_seconds == pytest.approx(p95, nan_ok=True)


@pytest.mark.parametrize(
    ("failures", "text"),
    [({}, "-"), ({"timeout": 1, "504": 3}, "504:3 timeout:1")],
)
def test_failures_are_printed_by_code(failures: dict[str, int], text: str) -> None:
    assert failures_text(failures) == text


@pytest.mark.parametrize(
    ("duration", "every", "ticks"),
    [
        (60.0, 30.0, [0.0, 30.0, 60.0]),
        (120.0, 50.0, [0.0, 50.0, 100.0, 120.0]),  # the end is always sampled
        (10.0, 30.0, [0.0, 10.0]),
        (1800.0, 30.0, [30.0 * k for k in range(61)]),
    ],
)
def test_samples_are_taken_at_the_start_every_interval_and_at_the_end(
    duration: float, every: float, ticks: list[float]
) -> None:
    assert sample_ticks(duration, every) == ticks


def test_a_sampling_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        sample_ticks(60.0, 0.0)


@pytest.mark.parametrize(
    ("start", "end", "growth"),
    [(100, 110, 0.10), (100, 90, -0.10), (100, 100, 0.0), (0, 0, 0.0), (0, 5, math.inf)],
)
def test_relative_growth(start: int, end: int, growth: float) -> None:
    assert relative_growth(start, end) == pytest.approx(growth)


@pytest.mark.parametrize(
    ("values", "growth"),
    [
        ([100, 105, 110], 0.10),  # a steady leak: the line through it
        ([100, 102, 104, 106, 108, 110], 0.10),
        ([100, 100, 100, 100], 0.0),
        ([100, 100, 100, 100, 130], 0.0),  # a burst in the last sample is not a leak
        ([130, 100, 100, 100, 100], 0.0),  # nor one in the first
        ([100, 100, 160, 100, 100], 0.0),  # nor a peak that came back down
        ([100, 104, 102, 106, 108, 106, 112], 0.12),  # noise around a leak of 2 a sample
        ([120, 110, 100], -1 / 6),  # shrinking
        ([0, 0, 0], 0.0),
        ([0, 1, 2], math.inf),  # from nothing
    ],
)
def test_trend_growth_is_the_rise_of_the_theil_sen_line(values: list[int], growth: float) -> None:
    points = [(30.0 * index, float(value)) for index, value in enumerate(values)]
    assert trend_growth(points) == pytest.approx(growth)


@pytest.mark.parametrize("points", [[], [(0.0, 100.0)], [(5.0, 100.0), (5.0, 120.0)]])
def test_trend_growth_needs_two_distinct_times(points: list[tuple[float, float]]) -> None:
    assert trend_growth(points) is None


def _mib(mib: float, fds: int) -> Usage:
    return Usage(int(mib * MIB), fds)


def _samples(*rows: tuple[float, Usage | None]) -> list[Sample]:
    return [Sample(elapsed, {"worker-1": usage}) for elapsed, usage in rows]


SAMPLES = _samples(
    (0.0, _mib(50, 10)),  # before the warm-up: caches still filling, not the baseline
    (30.0, _mib(80, 20)),
    (60.0, _mib(100, 30)),  # the baseline at a 60 s warm-up
    (90.0, _mib(105, 36)),
    (120.0, _mib(110, 30)),
)


@pytest.mark.parametrize(
    ("warmup", "baseline_at", "rss_growth", "fd_growth", "peak"),
    [
        (60.0, 60.0, 0.10, 0.0, _mib(110, 36)),
        (45.0, 60.0, 0.10, 0.0, _mib(110, 36)),  # the first sample at or after the warm-up
        (0.0, 0.0, 44 / 51, 28 / 13, _mib(110, 36)),  # without a warm-up, filling caches
        (100.0, 120.0, None, None, _mib(110, 30)),  # one sample: no trend
    ],
)
def test_growth_runs_from_the_first_sample_after_the_warmup_to_the_last(
    warmup: float,
    baseline_at: float,
    rss_growth: float | None,
    fd_growth: float | None,
    peak: Usage,
) -> None:
    growth = growth_of(SAMPLES, "worker-1", warmup)
    assert (growth.baseline_seconds, growth.end_seconds) == (baseline_at, 120.0)
    assert growth.end == _mib(110, 30)
    assert growth.rss_growth == pytest.approx(rss_growth, abs=1e-6)
    assert growth.fd_growth == pytest.approx(fd_growth)
    assert growth.peak == peak


def test_growth_of_a_process_gone_at_the_end_is_unknown() -> None:
    samples = _samples((0.0, _mib(100, 30)), (30.0, _mib(100, 30)), (60.0, None))
    growth = growth_of(samples, "worker-1", 0.0)
    assert growth.end is None
    assert (growth.rss_growth, growth.fd_growth) == (None, None)
    assert growth.peak == _mib(100, 30)


def test_growth_without_samples_after_the_warmup_has_no_baseline() -> None:
    growth = growth_of(SAMPLES, "worker-1", 600.0)
    assert (growth.baseline_seconds, growth.baseline, growth.peak) == (None, None, None)


USAGE = Usage(100 * MIB, 10)


def _growth(
    rss: float | None,
    fds: float | None,
    *,
    judged: bool = True,
    at: tuple[float, float] = (60, 120),
    base: Usage | None = USAGE,
    end: Usage | None = USAGE,
) -> Growth:
    return Growth("worker-1", judged, at[0], at[1], base, end, end, rss, fds)


@pytest.mark.parametrize(
    ("growth", "misses"),
    [
        (_growth(0.09, 0.05), []),
        (_growth(-0.2, -0.5), []),  # shrinking is fine
        (_growth(0.10, 0.0), ["worker-1: RSS grew 10.0% (limit 10%)"]),  # < 10 %, not <=
        (_growth(0.0, 0.15), ["worker-1: open fds grew 15.0% (limit 10%)"]),
        (
            _growth(0.5, math.inf),
            ["worker-1: RSS grew 50.0% (limit 10%)", "worker-1: open fds grew inf% (limit 10%)"],
        ),
        (_growth(3.0, 3.0, judged=False), []),  # vLLM: reported only
        (_growth(None, None, end=None), ["worker-1: not running at the end (120 s)"]),
        (_growth(0.0, 0.0, base=None), ["worker-1: not running at the baseline (60 s)"]),
        (
            _growth(None, None, at=(120, 120)),
            ["worker-1: no sample after the warm-up's to compare with"],
        ),
        (
            Growth("worker-1", True, None, None, None, None, None, None, None),
            ["worker-1: no sample after the warm-up's to compare with"],
        ),
    ],
)
def test_target_is_growth_under_ten_percent_for_judged_processes(
    growth: Growth, misses: list[str]
) -> None:
    assert target_misses([growth]) == misses


def test_growth_table_says_which_process_meets_the_target() -> None:
    table = growth_table(
        [
            Growth(
                *("scheduler", True, 60, 120, _mib(80, 20), _mib(82, 20), _mib(90, 29)),
                *(0.025, 0.0),
            ),
            Growth(
                *("worker-1", True, 60, 120, _mib(100, 20), _mib(120, 21), _mib(120, 21)),
                *(0.2, 0.05),
            ),
            Growth(
                *("vllm", False, 60, 120, _mib(900, 60), _mib(990, 61), _mib(995, 61)),
                *(0.1, 0.0),
            ),
        ]
    )
    header, _rule, scheduler, worker, vllm = table.splitlines()
    assert header.split()[:5] == ["process", "RSS", "MiB", "base", "end"]
    assert scheduler.split() == [
        *("scheduler", "80.0", "82.0", "90.0", "+2.5%", "20", "20", "29", "+0.0%", "yes")
    ]
    assert worker.split() == [
        *("worker-1", "100.0", "120.0", "120.0", "+20.0%", "20", "21", "21", "+5.0%", "NO")
    ]
    assert vllm.split()[-2:] == ["not", "judged"]


def test_progress_rows_line_up_under_their_header() -> None:
    names = ["scheduler", "worker-1", "vllm"]
    sample = Sample(30.2, {"scheduler": _mib(85.25, 23), "worker-1": None, "vllm": _mib(900, 61)})
    window = window_stats(FINISHED, SENT, 10.0, 20.0)
    header = progress_header(names)
    row = progress_row(sample, window, names)
    first = progress_row(Sample(0.0, sample.usage), None, names)
    assert header.split() == [
        *("t", "s", "sent", "ok", "p50", "s", "p95", "s", "scheduler", "worker-1", "vllm", "failed")
    ]
    assert row.split() == [
        *("30", "2", "2", "3.00", "3.90", "85.2/23", "gone", "900.0/61", "504:2", "timeout:1")
    ]
    assert first.split() == ["0", "-", "-", "-", "-", "85.2/23", "gone", "900.0/61", "-"]
    # every column but the last (failures) ends where its header ends
    for column in ("sent", "p95 s", "scheduler", "worker-1", "vllm"):
        end = header.index(column) + len(column)
        assert row[end - 1] != " " and row[end] == " ", column


def test_the_quick_check_flags_are_accepted() -> None:
    args = parse_args(["--minutes", "2", "--warmup-minutes", "0.5", "--sample-seconds", "10"])
    assert (args.minutes, args.warmup_minutes, args.sample_seconds) == (2.0, 0.5, 10.0)
    assert (args.load_fraction, args.rate) == (0.8, None)
    defaults = parse_args([])
    assert (defaults.minutes, defaults.warmup_minutes, defaults.sample_seconds) == (30, 5, 30)


@pytest.mark.parametrize(
    "argv",
    [
        ["--minutes", "2", "--warmup-minutes", "2"],  # no time left after the baseline
        ["--minutes", "0"],
        ["--sample-seconds", "0"],
        ["--load-fraction", "0"],
        ["--rate", "-1"],
        ["--probe-concurrency", "0"],
    ],
)
def test_flags_that_leave_nothing_to_measure_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
