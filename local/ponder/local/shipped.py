"""The repository's shipped models: the policy `models/arith/ponder-arith`, its learned outcome
and process reward models, and the exact step checker (the oracle).

The model is a tiny character-level Llama trained on `+`/`-` chains: prompts `Q:23+48-17 A:`,
completions `23+48=71 71-17=54 #54`. Its service settings follow from that: answers after `#`,
one step per space, at most four steps, 512 positions. The step verifier
(`models/arith/verifier_server.py`, the HTTP verifier contract) scores such steps by
recomputing them: it knows the answer, so it is the oracle, never a figure of what test-time
compute buys. The reward models (`models/arith/ponder-arith-orm`, `-prm`, trained by
`models.arith.train_reward`) see only the question and the solution; vLLM serves them as
pooling models with `reward_model_args`. All live in the checkout, not in the package: an
installed wheel serves a model of the user's with `--model`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ponder.api.service_config import (
    BeamConfig,
    BudgetConfig,
    ExtractorKind,
    ServiceConfig,
    StrategyDefaults,
    VerifierConfig,
    VerifierKind,
)
from ponder.local.checkout import checkout_root
from ponder.local.verifier import ServerCommand, python_module_command

MODEL_PATH = Path("models") / "arith" / "ponder-arith"
"""Where the shipped model lies in the checkout."""

OUTCOME_REWARD_MODEL_PATH = Path("models") / "arith" / "ponder-arith-orm"
PROCESS_REWARD_MODEL_PATH = Path("models") / "arith" / "ponder-arith-prm"
OUTCOME_REWARD_MODEL_NAME = "ponder-arith-orm"
PROCESS_REWARD_MODEL_NAME = "ponder-arith-prm"

STEP_TAG_ID = 4
"""The token that closes each step in the reward models' input: the newline, id 4 in the
character tokenizer (`models.arith.reward.STEP_TAG_ID`)."""

SERVICE_NAME = "arith"
SERVED_NAME = "ponder-arith"
MAX_MODEL_LEN = 512
"""The model's max_position_embeddings: room for refine's critique and revision prompts."""

STEP_DELIMITER = " "
"""The model writes `23+48=71 71-17=54 #54`: one step per space."""

MAX_BRANCHES = 64
"""Room for beam search: B x K branches per step over the task's up to four steps."""

EXAMPLE_PROMPT = "Q:23+48-17 A:"

VERIFIER_MODULE = "models.arith.verifier_server"
VERIFIER_PORT = 8002
VERIFIER_URL = f"http://127.0.0.1:{VERIFIER_PORT}/verify"
"""Where the service config expects the step verifier when it is run by hand; a launcher that
starts it on another port points the config there (`ponder.local.stack.with_verifier`)."""

VERIFIER_TIMEOUT_SECONDS = 10.0


def shipped_model_dir(root: Path | None = None) -> Path | None:
    """The shipped model of the checkout `root` (default: this one), or None without it."""
    root = checkout_root() if root is None else root
    if root is None:
        return None
    model_dir = root / MODEL_PATH
    return model_dir if (model_dir / "config.json").is_file() else None


def is_shipped_model(model_dir: Path) -> bool:
    """Whether `model_dir` is the checkout's shipped model."""
    shipped = shipped_model_dir()
    return shipped is not None and model_dir.resolve() == shipped.resolve()


def reward_model_args(kind: VerifierKind, model_dir: Path) -> list[str]:
    """vLLM's extra arguments to serve a shipped reward model at `model_dir`: the outcome model
    (`reward-model`) on /score with its score template, the process model
    (`process-reward-model`) on /pooling with its chat template and step pooling at each
    step's closing newline."""
    if kind == VerifierKind.REWARD_MODEL:
        return ["--chat-template", str(model_dir / "score_template.jinja")]
    if kind == VerifierKind.PROCESS_REWARD_MODEL:
        pooler = {"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": STEP_TAG_ID}
        return [
            "--chat-template",
            str(model_dir / "chat_template.jinja"),
            "--pooler-config",
            json.dumps(pooler),
        ]
    raise ValueError(f"no shipped reward model of kind {kind.value}")


def verifier_command() -> ServerCommand:
    """The step verifier as a server command, run from the checkout (which has `models/`).

    Raises RuntimeError without a checkout.
    """
    root = checkout_root()
    if root is None:
        raise RuntimeError(
            f"the arithmetic step verifier ({VERIFIER_MODULE}) ships with the repository, "
            "not the package: run from a checkout, or start a verifier of your own"
        )
    return python_module_command(VERIFIER_MODULE, cwd=root, name="verifier")


def shipped_service_config(verifier_url: str | None = VERIFIER_URL) -> ServiceConfig:
    """The ServiceConfig that serves the shipped model; with the step verifier at
    `verifier_url` (None: no verifier)."""
    verifier = (
        VerifierConfig(
            kind=VerifierKind.HTTP, url=verifier_url, timeout_seconds=VERIFIER_TIMEOUT_SECONDS
        )
        if verifier_url
        else VerifierConfig()
    )
    return ServiceConfig(
        name=SERVICE_NAME,
        model=SERVED_NAME,
        max_model_len=MAX_MODEL_LEN,
        strategy=StrategyDefaults(
            max_branches=MAX_BRANCHES,
            extractor=ExtractorKind.HASHES,
            verifier=verifier,
            beam=BeamConfig(step_delimiter=STEP_DELIMITER, max_steps=8),
        ),
        budget=BudgetConfig(max_tokens_per_branch=256),
    )
