#!/usr/bin/env bash
# Creates .venv-optillm: the peer of bench/tts_efficiency.py, optillm (PyPI) as its own OpenAI
# proxy, kept apart from .venv because its transformers pin conflicts with vLLM's.
#
# By default it installs optillm itself plus only what its proxy server imports (flask, openai,
# the Cerebras SDK it imports unconditionally, z3/sympy/networkx/numpy/math-verify for the
# approaches server.py imports at start). Its full dependency set (torch with CUDA libraries,
# gradio, spacy, google-cloud-aiplatform, ...) serves its local-inference mode and plugins, which
# the bench does not use, and is several GB; OPTILLM_FULL=1 installs it all the same.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
OPTILLM_VERSION=${OPTILLM_VERSION:-0.4.0}
VENV=${OPTILLM_VENV:-.venv-optillm}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
if [ "${OPTILLM_FULL:-0}" = "1" ]; then
  "$VENV/bin/pip" install -q "optillm==${OPTILLM_VERSION}"
else
  "$VENV/bin/pip" install -q --no-deps "optillm==${OPTILLM_VERSION}"
  "$VENV/bin/pip" install -q flask openai cerebras_cloud_sdk numpy networkx "z3-solver<=4.15.4.0" \
    sympy aiohttp pyyaml math-verify requests --no-warn-conflicts
fi
# The proxy must import; plugins that need what was left out are skipped by optillm itself.
"$VENV/bin/python" -c "import optillm.server" >/dev/null
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("optillm venv ready: optillm", md.version("optillm"))
PY
