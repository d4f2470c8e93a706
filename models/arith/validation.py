"""Greedy accuracy of a model in training, with plain ``transformers`` generation on the CPU.

Training stops on this figure (not on a step count): the shipped model is meant to be right
about half the time greedily, so that test-time compute has room to pay off (issue 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LlamaForCausalLM

from models.arith.task import SOLUTION_TOKEN_CAP, Problem, extract_answer
from models.arith.tokenizer import EOS_ID, PAD_ID, decode, encode

MAX_NEW_TOKENS = SOLUTION_TOKEN_CAP


def left_padded(prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every prompt padded on the left to the same width."""
    encoded = [encode(prompt) for prompt in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


@torch.no_grad()
def greedy_completions(model: LlamaForCausalLM, prompts: Sequence[str]) -> list[str]:
    """Greedy completion of each prompt, up to ``<eos>``."""
    device = next(model.parameters()).device
    input_ids, attention_mask = left_padded(prompts)
    # transformers 5 types `generate`'s self as a Protocol that mypy cannot match to the model.
    output = model.generate(  # type: ignore[misc]
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return [decode(row.tolist()) for row in output[:, input_ids.shape[1] :]]


def greedy_accuracy(model: LlamaForCausalLM, problems: Sequence[Problem]) -> float:
    """Share of ``problems`` whose greedy answer is right (the model is left in eval mode)."""
    model.eval()
    completions = greedy_completions(model, [problem.prompt for problem in problems])
    right = [
        extract_answer(text) == str(problem.answer)
        for text, problem in zip(completions, problems, strict=True)
    ]
    return sum(right) / len(problems)
