"""Session fixtures of the integration tier: one real vLLM server and one step verifier.

- `vllm` (`ponder.local.vllm.VllmServer`: `base_url` = `http://127.0.0.1:<port>`, `port`,
  `served_name` = "ponder-arith", `process`, `startup_seconds`): vLLM on the CPU serving the
  shipped arithmetic model `models/arith/ponder-arith` (prompts `Q:23+48-17 A:`, completions
  `23+48=71 71-17=54 #54` then `<eos>`), or the same architecture and tokenizer with random
  weights while no trained model is committed. Data-plane tests should not assert on content
  through `vllm`; the model stops early at `<eos>` on task prompts, so pass `ignore_eos` or a
  non-task prompt where a test needs long generations.
- `arith_vllm`: the same server, for tests that do assert on the trained model's answers; it
  fails if the shipped weights are missing.
- `arith_verifier` (`ponder.local.verifier.VerifierServer`: `url`, `port`, `process`): the HTTP
  step verifier `models/arith/verifier_server.py` (`POST {url}/verify`, Ponder's
  `VerifierKind.HTTP` contract).

Each starts once per session, on first use; `vllm` and `arith_model_dir` live in tests/conftest.py,
shared with the chaos tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ponder.local import shipped
from ponder.local.verifier import VerifierServer, verifier_server
from ponder.local.vllm import VllmServer
from tests.conftest import SHIPPED_MODEL_DIR


@pytest.fixture(scope="session")
def arith_vllm(vllm: VllmServer, arith_model_dir: Path) -> VllmServer:
    """The session's vLLM server, which must be serving the trained shipped model."""
    if arith_model_dir != SHIPPED_MODEL_DIR:
        pytest.fail(f"no trained model at {SHIPPED_MODEL_DIR}: run python -m models.arith.train")
    return vllm


@pytest_asyncio.fixture(scope="session")
async def arith_verifier(stack_log_dir: Path) -> AsyncIterator[VerifierServer]:
    """The arithmetic step verifier over HTTP for the whole session."""
    async with verifier_server(shipped.verifier_command(), stack_log_dir) as server:
        yield server
