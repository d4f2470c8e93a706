"""Every OpenAI parameter has one handling, the request models take exactly those, and README's
table is the code's (ponder.scheduler.openai_params)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from ponder.api.wire import EngineSampling
from ponder.scheduler.api_models import ChatCompletionRequest, CompletionRequest, PonderOptions
from ponder.scheduler.openai_params import (
    CHAT,
    COMPLETIONS,
    PARAMETERS,
    Handling,
    best_of_options,
    markdown_table,
    refused_parameter,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS: dict[str, type[BaseModel]] = {CHAT: ChatCompletionRequest, COMPLETIONS: CompletionRequest}


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS])
def test_the_request_models_take_exactly_the_listed_parameters(endpoint: str) -> None:
    listed = {p.name for p in PARAMETERS if endpoint in p.endpoints}
    assert set(MODELS[endpoint].model_fields) == listed
    assert len({p.name for p in PARAMETERS}) == len(PARAMETERS)


def test_passed_parameters_are_the_engine_sampling_fields() -> None:
    passed = {p.name for p in PARAMETERS if p.handling is Handling.PASSED}
    assert passed == set(EngineSampling.model_fields)


def test_unknown_parameters_are_refused_by_the_models() -> None:
    with pytest.raises(ValidationError, match="frobnicate"):
        CompletionRequest.model_validate({"model": "m", "prompt": "p", "frobnicate": 1})


@pytest.mark.parametrize(
    ("endpoint", "given", "refused"),
    [
        (CHAT, {}, None),
        (CHAT, {"logprobs": False, "tool_choice": "none", "modalities": ["text"]}, None),
        (CHAT, {"tools": [{"type": "function"}]}, "tools"),
        (CHAT, {"logprobs": True}, "logprobs"),
        (CHAT, {"top_logprobs": 2}, "top_logprobs"),
        (CHAT, {"modalities": ["text", "audio"]}, "modalities"),
        (CHAT, {"reasoning_effort": "high"}, "reasoning_effort"),
        (COMPLETIONS, {"logprobs": 0, "echo": False, "suffix": ""}, None),
        (COMPLETIONS, {"logprobs": 5}, "logprobs"),
        (COMPLETIONS, {"echo": True}, "echo"),
        (COMPLETIONS, {"suffix": "}"}, "suffix"),
        (COMPLETIONS, {"tools": [{"type": "function"}]}, None),  # not a completions parameter
    ],
)
def test_refused_parameters_are_named_unless_harmless(
    endpoint: str, given: dict[str, Any], refused: str | None
) -> None:
    found = refused_parameter(given, endpoint)
    if refused is None:
        assert found is None
    else:
        assert found is not None and found[0] == refused
        assert f"{refused} is not supported by Ponder" in found[1]


@pytest.mark.parametrize(
    ("options", "best_of", "expected"),
    [
        (PonderOptions(), None, PonderOptions()),
        (PonderOptions(), 1, PonderOptions()),
        (PonderOptions(), 4, PonderOptions(strategy="best-of-n", branches=4)),
        (
            PonderOptions(strategy="best-of-n", branches=4, deadline_ms=100),
            4,
            PonderOptions(strategy="best-of-n", branches=4, deadline_ms=100),
        ),
        (PonderOptions(strategy="single"), 4, "not single"),
        (PonderOptions(branches=8), 4, "not ponder.branches=8"),
    ],
)
def test_best_of_asks_for_best_of_n(
    options: PonderOptions, best_of: int | None, expected: PonderOptions | str
) -> None:
    got = best_of_options(options, best_of)
    if isinstance(expected, str):
        assert isinstance(got, str) and expected in got
    else:
        assert got == expected


def test_the_readme_lists_every_parameter_as_the_code_handles_it() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_table() in readme


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"logit_bias": {"12": 101.0}}, "outside [-100, 100]"),
        ({"logit_bias": {str(i): 1.0 for i in range(301)}}, "at most 300"),
        ({"response_format": {"schema": "x" * 20_000}}, "over the limit of 16384"),
        ({"response_format": {}}, "response_format.type must be one of text, json_object"),
        ({"response_format": {"type": "xml"}}, "response_format.type must be one of"),
        ({"response_format": {"type": "json_schema"}}, "must be an object with a name"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": 1}}},
            "json_schema.schema must be an object",
        ),
        ({"top_k": -2}, "greater than or equal to -1"),
    ],
)
def test_engine_sampling_bounds_name_the_limit(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        EngineSampling(**fields)


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "answer"}},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    ],
)
def test_well_formed_response_formats_go_to_vllm(response_format: dict[str, Any]) -> None:
    assert EngineSampling(response_format=response_format).response_format == response_format


def test_engine_sampling_passes_only_what_was_given() -> None:
    given = EngineSampling(top_k=5, frequency_penalty=0.0, response_format={"type": "json_object"})
    assert given.request_fields() == {
        "top_k": 5,
        "frequency_penalty": 0.0,
        "response_format": {"type": "json_object"},
    }
    assert EngineSampling().request_fields() == {}
