"""The SLO benchmark's arms: one query, one deadline, three load-adaptation policies."""

from __future__ import annotations

from bench.ramp import step_result
from bench.slo import (
    ARM_ADAPTATIONS,
    DEFAULT_BRANCHES,
    GROW,
    GROW_MAX_BRANCHES,
    SHRINK,
    STATIC,
    arm_config,
    arm_deadline_ms,
    arms,
    bench_settings,
    slo_table,
)
from bench.stack import MODEL_DIR, service_overrides
from bench.summary import QueryRecord
from ponder.api.service_config import LoadAdaptation
from ponder.local.dataplane import dataplane_config


def test_every_arm_asks_the_same_query_with_the_same_deadline() -> None:
    specs = arms(2500)
    assert [spec.label for spec in specs] == [STATIC, SHRINK, GROW]
    assert arm_deadline_ms(2500) == 2125
    for spec in specs:
        assert spec.ponder_options() == {
            "strategy": "self-consistency",
            "deadline_ms": 2125,
            "max_branches": GROW_MAX_BRANCHES,
        }  # no ponder.branches: the service's default, which ShrinkAndGrow may grow
    assert len({spec.scheduler for spec in specs}) == 3


def test_each_arm_runs_its_policy_on_the_same_service() -> None:
    settings = bench_settings(MODEL_DIR, 2500)
    config = dataplane_config(
        name="bench",
        model="ponder-arith",
        max_model_len=512,
        overrides=service_overrides(settings, None),
    )
    assert config.strategy.branches == DEFAULT_BRANCHES
    assert config.slo.target_latency_ms == 2500
    configs = {label: arm_config(config, label) for label in ARM_ADAPTATIONS}
    assert {label: c.slo.load_adaptation for label, c in configs.items()} == {
        STATIC: LoadAdaptation.STATIC,
        SHRINK: LoadAdaptation.SHRINK,
        GROW: LoadAdaptation.SHRINK_AND_GROW,
    }
    for arm in configs.values():
        assert arm.model_copy(update={"slo": config.slo}) == config  # nothing else differs


def record(grown: bool, latency: float) -> QueryRecord:
    return QueryRecord(
        label=GROW,
        system="ponder",
        problem_index=0,
        question="1+2",
        truth=3,
        answer="3",
        correct=True,
        prompt_tokens=0,
        completion_tokens=0,
        latency_seconds=latency,
        branches=16 if grown else 8,
        grown=grown,
    )


def test_the_table_reports_grown_plans_per_arm_and_rate() -> None:
    result = step_result(GROW, 4.0, 10.0, [record(True, 1.0), record(False, 3.0)], 2.5)
    assert result.grown_share == 0.5 and result.shrunk_share == 0.0
    assert result.goodput_per_second == 0.1 and result.mean_branches == 12.0
    header, *rows = slo_table([result]).splitlines()
    assert "grown" in header and "goodput/s" in header and "accuracy" in header
    assert any(row.startswith(GROW) for row in rows)
