"""How Ponder serves SmolLM2-135M-Instruct locally: its served name, context and service settings.

The converted model (`models.smollm2.build`) keeps the GGUF's chat template (ChatML:
`<|im_start|>role ... <|im_end|>`, with a default system prompt), and its end-of-turn token
`<|im_end|>` is the EOS in `generation_config.json`, so vLLM ends an assistant turn there.
"""

from __future__ import annotations

from ponder.api.service_config import BudgetConfig, ExtractorKind, ServiceConfig, StrategyDefaults

SERVED_NAME = "smollm2-135m-instruct"
MAX_MODEL_LEN = 1024
"""Far below the model's 8192 positions: the tests and benchmarks ask short questions, and a
short context keeps vLLM's CPU KV cache small on a shared machine."""

END_OF_TURN = "<|im_end|>"
"""The chat template's end-of-turn marker, which must never show in a reply."""

MAX_TOKENS_PER_BRANCH = 256


def service_config(
    name: str = "smollm2", extractor: ExtractorKind = ExtractorKind.AUTO
) -> ServiceConfig:
    """The ServiceConfig that serves the converted model under `SERVED_NAME` as service `name`,
    reading answers with `extractor` (`last-number` suits "answer with just the number")."""
    return ServiceConfig(
        name=name,
        model=SERVED_NAME,
        max_model_len=MAX_MODEL_LEN,
        strategy=StrategyDefaults(max_branches=16, extractor=extractor),
        budget=BudgetConfig(max_tokens_per_branch=MAX_TOKENS_PER_BRANCH),
    )
