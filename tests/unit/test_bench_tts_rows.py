"""bench.tts_efficiency: the rows a run asks for, and every row issue 8 lists."""

from __future__ import annotations

from bench.stack import MODEL_DIR, BenchSettings
from bench.tts_efficiency import REFERENCE, ponder_specs, selected


def labels(prefixes: list[str] | None) -> list[str]:
    return [spec.label for spec in selected(ponder_specs(BenchSettings(MODEL_DIR)), prefixes)]


def test_every_row_runs_without_a_selection() -> None:
    every = labels(None)
    assert REFERENCE in every and "best-of-n@16 oracle" in every
    assert {"deep-conf offline@16", "deep-conf online warm-up 6"} <= set(every)


def test_a_selection_keeps_its_rows_the_reference_and_greedy() -> None:
    assert labels(["deep-conf"]) == [
        "single (greedy)",
        REFERENCE,
        "deep-conf offline@16",
        "deep-conf online warm-up 4",
        "deep-conf online warm-up 6",
        "deep-conf online warm-up 8",
    ]
