"""The benchmarks' service configuration for the arithmetic model is a valid ServiceConfig."""

from __future__ import annotations

import pytest

from bench.demo import demo_settings, demo_specs
from bench.stack import MODEL_DIR, BenchSettings, beam_branches, service_overrides
from ponder.api.service_config import VerifierKind
from ponder.local.dataplane import dataplane_config


def config_of(settings: BenchSettings, verifier_url: str | None):
    return dataplane_config(
        name="bench",
        model="ponder-arith",
        max_model_len=512,
        overrides=service_overrides(settings, verifier_url),
    )


def test_the_verifier_is_the_services_http_verifier() -> None:
    config = config_of(BenchSettings(), "http://127.0.0.1:9/verify")
    assert config.strategy.verifier.kind is VerifierKind.HTTP
    assert config.strategy.verifier.url == "http://127.0.0.1:9/verify"
    assert config.strategy.beam.step_delimiter == " "


def test_a_vote_only_scheduler_has_no_verifier() -> None:
    assert config_of(BenchSettings(), None).strategy.verifier.kind is VerifierKind.NONE


def test_extra_overrides_merge_into_their_section() -> None:
    settings = BenchSettings(extra={"strategy": {"confidence": 0.9}, "slots_per_worker": 8})
    config = config_of(settings, None)
    assert config.strategy.confidence == 0.9
    assert config.strategy.beam.width == settings.beam_width
    assert config.slots_per_worker == 8


@pytest.mark.parametrize("short", [True, False])
def test_every_demo_request_fits_the_services_limits(short: bool) -> None:
    settings = demo_settings(short, MODEL_DIR)
    config = config_of(settings, "http://127.0.0.1:9/verify")
    strategies = {spec.strategy for spec in demo_specs(short)}
    assert strategies == {member.value for member in config.strategy.allowed}
    for spec in demo_specs(short):
        for key in ("branches", "max_branches"):
            assert spec.options.get(key, 1) <= config.strategy.max_branches
        assert spec.max_tokens <= config.budget.max_tokens_per_branch
    assert beam_branches(settings) <= config.strategy.max_branches
