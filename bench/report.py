"""Tables, plots and JSON files of the benchmarks: what a person reads after a run.

`format_table` is pure (columns of text, right-aligned numbers); the writers do file I/O and are
called once at the end of a run, off the hot path. Plots use matplotlib's Agg backend, so they
need no display.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.summary import Summary

SUMMARY_COLUMNS = (
    "strategy",
    "accuracy",
    "gen tok/q",
    "tok/q",
    "branches",
    "p50 s",
    "p95 s",
    "saved/q",
    "errors",
)


def load_line() -> str:
    """How busy the (shared) machine was, for a benchmark's header and its JSON."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def fmt(value: object, digits: int = 2) -> str:
    """A table cell: floats with `digits` decimals, None/NaN as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], left_columns: int = 1
) -> str:
    """A plain-text table: the first `left_columns` columns left-aligned (labels), the others
    right-aligned (numbers)."""
    cells = [[str(h) for h in headers], *[[fmt(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if index < left_columns else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def summary_row(summary: Summary, measured: bool = False) -> list[object]:
    tokens = [fmt(summary.mean_completion_tokens, 1), fmt(summary.mean_total_tokens, 1)]
    if measured:
        tokens.insert(1, fmt(summary.measured_completion_tokens, 1))
    return [
        summary.label,
        summary.accuracy,
        *tokens,
        fmt(summary.mean_branches, 1),
        summary.p50_latency_seconds,
        summary.p95_latency_seconds,
        summary.mean_branches_saved,
        summary.errors,
    ]


def summary_table(summaries: Sequence[Summary], measured: bool = False) -> str:
    """The strategy table of the demo and the efficiency benchmark; `measured` adds the
    generated tokens vLLM counted (`vllm gen/q`) beside those `usage` reported."""
    columns = list(SUMMARY_COLUMNS)
    if measured:
        columns.insert(3, "vllm gen/q")
    return format_table(columns, [summary_row(s, measured) for s in summaries])


def to_jsonable(value: Any) -> Any:
    """Dataclasses (nested) as dicts, NaN as None: what `json.dumps` accepts and a reader wants."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def family(label: str) -> str:
    """`self-consistency@8` -> `self-consistency`: points of one family share a line."""
    return label.split("@", 1)[0]


def plot_accuracy_vs_tokens(summaries: Sequence[Summary], path: Path, title: str) -> Path:
    """Accuracy against mean generated tokens per query (log x), one marker per strategy,
    strategies of one family joined in order of tokens; peers drawn hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 6), dpi=120)
    families: dict[tuple[str, str], list[Summary]] = {}
    for summary in summaries:
        if not math.isnan(summary.generated_tokens) and summary.generated_tokens > 0:
            families.setdefault((summary.system, family(summary.label)), []).append(summary)
    for (system, name), members in families.items():
        members.sort(key=lambda s: s.generated_tokens)
        xs = [s.generated_tokens for s in members]
        ys = [s.accuracy for s in members]
        peer = system != "ponder"
        legend = name
        axes.plot(
            xs,
            ys,
            marker="s" if peer else "o",
            linestyle="--" if peer else "-",
            markerfacecolor="none" if peer else None,
            label=legend,
        )
        for summary in members:
            axes.annotate(
                summary.label,
                (summary.generated_tokens, summary.accuracy),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    axes.set_xscale("log")
    axes.set_xlabel("mean generated tokens per query (log scale)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0.0, 1.05)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_series(
    path: Path,
    title: str,
    x_label: str,
    x_values: Sequence[float],
    panels: Sequence[tuple[str, Mapping[str, Sequence[float | None]]]],
    unit_interval: Sequence[bool] = (),
) -> Path:
    """Line panels over one x axis, two per row: each panel is (y label, {series: values});
    `unit_interval[i]` pins panel i's y axis to [0, 1] (shares, accuracies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(6 * columns, 4.2 * rows), dpi=120, squeeze=False
    )
    axes_list = [axes for row in grid for axes in row]
    for index, (axes, (y_label, series)) in enumerate(zip(axes_list, panels, strict=False)):
        for name, values in series.items():
            ys = [math.nan if v is None else v for v in values]
            axes.plot(list(x_values), ys, marker="o", label=name)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        if index < len(unit_interval) and unit_interval[index]:
            axes.set_ylim(0.0, 1.05)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    for axes in axes_list[len(panels) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
