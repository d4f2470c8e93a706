"""Every OpenAI request parameter, and what Ponder does with it (pure).

Nothing is dropped silently: a parameter Ponder uses or passes to vLLM for every branch is
honoured, one that cannot change the answer is accepted as such, one it cannot honour is a 400
that says so, and one it has never heard of is a 400 too (the request models forbid extras).
README's "OpenAI parameters" table is this table; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ponder.api.strategy import StrategyName
from ponder.scheduler.api_models import PonderOptions


class Handling(StrEnum):
    USED = "used"  # Ponder itself acts on it
    PASSED = "passed"  # passed to vLLM for every branch
    ACCEPTED = "accepted"  # accepted; it changes nothing about the answer
    REFUSED = "refused"  # a 400 that says so, unless it has its harmless value


CHAT = "chat"
COMPLETIONS = "completions"
BOTH = (CHAT, COMPLETIONS)


@dataclass(frozen=True)
class Parameter:
    """One request parameter: which endpoints take it, how Ponder handles it, and why."""

    name: str
    endpoints: tuple[str, ...]
    handling: Handling
    note: str
    harmless: tuple[Any, ...] = (None,)
    """Values of a refused parameter that ask for nothing (e.g. `logprobs: false`)."""


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("model", BOTH, Handling.USED, "must be the service's model, else 404"),
    Parameter("messages", (CHAT,), Handling.USED, "every branch's conversation"),
    Parameter("prompt", (COMPLETIONS,), Handling.USED, "one prompt per request"),
    Parameter("max_tokens", BOTH, Handling.USED, "cap per branch"),
    Parameter("max_completion_tokens", (CHAT,), Handling.USED, "cap per branch"),
    Parameter("temperature", BOTH, Handling.USED, "every branch's"),
    Parameter("top_p", BOTH, Handling.USED, "every branch's"),
    Parameter("stop", BOTH, Handling.USED, "every branch's, at most 8"),
    Parameter("seed", BOTH, Handling.USED, "branch i samples with seed + i"),
    Parameter("n", BOTH, Handling.USED, "must be 1: ask for ponder.branches"),
    Parameter("best_of", (COMPLETIONS,), Handling.USED, "strategy best-of-n over that many"),
    Parameter("stream", BOTH, Handling.USED, "server-sent events as the query runs (Streaming)"),
    Parameter("stream_options", BOTH, Handling.USED, "include_usage adds the usage chunk"),
    Parameter("ponder", BOTH, Handling.USED, "Ponder's options (see above)"),
    Parameter("ignore_eos", BOTH, Handling.USED, "vLLM extension, every branch's"),
    Parameter("frequency_penalty", BOTH, Handling.PASSED, "in [-2, 2]"),
    Parameter("presence_penalty", BOTH, Handling.PASSED, "in [-2, 2]"),
    Parameter("logit_bias", BOTH, Handling.PASSED, "token id -> bias in [-100, 100], at most 300"),
    Parameter("response_format", BOTH, Handling.PASSED, "structured output, at most 16 KiB"),
    Parameter("top_k", BOTH, Handling.PASSED, "vLLM extension"),
    Parameter("min_p", BOTH, Handling.PASSED, "vLLM extension"),
    Parameter("repetition_penalty", BOTH, Handling.PASSED, "vLLM extension"),
    Parameter("min_tokens", BOTH, Handling.PASSED, "vLLM extension"),
    Parameter("user", BOTH, Handling.ACCEPTED, "an end-user id; not used"),
    Parameter("metadata", (CHAT,), Handling.ACCEPTED, "not stored"),
    Parameter("store", (CHAT,), Handling.ACCEPTED, "nothing is stored"),
    Parameter("service_tier", (CHAT,), Handling.ACCEPTED, "one tier"),
    Parameter("parallel_tool_calls", (CHAT,), Handling.ACCEPTED, "no tools are called"),
    Parameter("logprobs", BOTH, Handling.REFUSED, "not returned yet", (None, False, 0)),
    Parameter("top_logprobs", (CHAT,), Handling.REFUSED, "not returned yet", (None, 0)),
    Parameter("echo", (COMPLETIONS,), Handling.REFUSED, "the prompt is not echoed", (None, False)),
    Parameter("suffix", (COMPLETIONS,), Handling.REFUSED, "no insertion", (None, "")),
    Parameter("tools", (CHAT,), Handling.REFUSED, "no tool calls", (None, [])),
    Parameter("tool_choice", (CHAT,), Handling.REFUSED, "no tool calls", (None, "none")),
    Parameter("functions", (CHAT,), Handling.REFUSED, "no function calls", (None, [])),
    Parameter("function_call", (CHAT,), Handling.REFUSED, "no function calls", (None, "none")),
    Parameter("modalities", (CHAT,), Handling.REFUSED, "text only", (None, ["text"])),
    Parameter("audio", (CHAT,), Handling.REFUSED, "text only"),
    Parameter("prediction", (CHAT,), Handling.REFUSED, "no predicted outputs"),
    Parameter("reasoning_effort", (CHAT,), Handling.REFUSED, "ask for ponder.budget_tokens"),
    Parameter("web_search_options", (CHAT,), Handling.REFUSED, "no web search"),
)

BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}


def refused_parameter(given: Mapping[str, Any], endpoint: str) -> tuple[str, str] | None:
    """(name, message) of the first refused parameter that `given` (a request's field values,
    as they were parsed: `vars(body)`, no copy of its messages) asks for something with, or
    None."""
    for parameter in PARAMETERS:
        if parameter.handling is not Handling.REFUSED or endpoint not in parameter.endpoints:
            continue
        value = given.get(parameter.name)
        if value not in parameter.harmless:
            return parameter.name, f"{parameter.name} is not supported by Ponder: {parameter.note}"
    return None


def best_of_options(options: PonderOptions, best_of: int | None) -> PonderOptions | str:
    """The Ponder options that `best_of` (completions) asks for: best-of-n over that many
    branches; an error message when `ponder` asks for something else. `best_of` 1 or absent
    asks for nothing."""
    if best_of is None or best_of == 1:
        return options
    best_of_n = StrategyName.BEST_OF_N.value
    if options.strategy not in (None, best_of_n):
        return f"best_of={best_of} asks for ponder.strategy={best_of_n}, not {options.strategy}"
    if options.branches not in (None, best_of):
        return (
            f"best_of={best_of} asks for {best_of} branches, not ponder.branches={options.branches}"
        )
    return options.model_copy(update={"strategy": best_of_n, "branches": best_of})


def markdown_table() -> str:
    """The README's "OpenAI parameters" table."""
    lines = ["| parameter | endpoints | Ponder | note |", "| --- | --- | --- | --- |"]
    for parameter in PARAMETERS:
        endpoints = ", ".join(parameter.endpoints)
        lines.append(
            f"| `{parameter.name}` | {endpoints} | {parameter.handling.value} | {parameter.note} |"
        )
    return "\n".join(lines) + "\n"
