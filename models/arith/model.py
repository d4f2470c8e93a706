"""The model architecture: a tiny Llama that vLLM's CPU backend serves.

head_dim is 64 because vLLM's CPU attention kernels support only a fixed set of head sizes
(64 is the smallest). ``save_untrained_model`` writes random weights in the same format as the
trained model, for tests of the serving path that do not care about answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from models.arith.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, save_tokenizer

HIDDEN_SIZE = 128
ATTENTION_HEADS = 2
LAYERS = 4
INTERMEDIATE_SIZE = 512
MAX_POSITIONS = 512


def build_config() -> LlamaConfig:
    """The LlamaConfig of the shipped model (~0.9M parameters, float32)."""
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=LAYERS,
        num_attention_heads=ATTENTION_HEADS,
        num_key_value_heads=ATTENTION_HEADS,
        head_dim=HIDDEN_SIZE // ATTENTION_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        dtype="float32",
    )


def build_model(seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised model (random weights from ``seed``)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(build_config())


def save_model(model: LlamaForCausalLM, out_dir: Path) -> Path:
    """Write the model (float32 safetensors), generation config and tokenizer to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID).save_pretrained(
        out_dir
    )
    save_tokenizer(out_dir)
    pin_float32(out_dir / "config.json")
    return out_dir


def save_untrained_model(out_dir: Path, seed: int = 0) -> Path:
    """An HF model directory with random weights and the real tokenizer; returns ``out_dir``."""
    return save_model(build_model(seed), out_dir)


def pin_float32(config_path: Path) -> None:
    # transformers 5 writes "dtype"; older readers look for "torch_dtype". Keep both, float32.
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config["torch_dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
