"""Train the outcome and process reward models from the shipped policy's own samples.

    python -m models.arith.train_reward --policy models/arith/ponder-arith \\
        --orm-out models/arith/ponder-arith-orm --prm-out models/arith/ponder-arith-prm

1. The policy, served by real vLLM on the CPU, samples `samples` solutions to each of `problems`
   problems drawn from the training stream (`training_stream`, which skips every held-out set),
   and 16 to each problem of the held-out evaluation set, which the reward models never train on.
2. The exact checker labels each solution (`models.arith.reward.labelled`): its outcome and the
   correctness of every prefix. Labels are used here only; the models never see them.
3. Each model starts from the policy's weights (same tokenizer, so the same reading of the task)
   with a one-logit head (`LlamaForSequenceClassification`), and is fine-tuned with binary
   cross-entropy: the ORM at the last token, the PRM at every step's closing newline.
4. Both are scored in-process on the evaluation samples (AUROC, calibration, and what best-of-16
   picks with them) and saved with the templates vLLM serves them with; `reward.json` in each
   directory records the data, the settings and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import torch
from transformers import LlamaForCausalLM, LlamaForSequenceClassification

from models.arith.evaluate import complete
from models.arith.heldout import EVALUATION, training_stream
from models.arith.model import pin_float32
from models.arith.reward import (
    CHAT_TEMPLATE,
    SCORE_TEMPLATE,
    Labelled,
    auroc,
    calibration,
    labelled,
    slipped_completion,
)
from models.arith.task import Problem
from models.arith.tokenizer import PAD_ID, save_tokenizer
from ponder.local.vllm import VllmServer, vllm_server

ORM = "outcome"
PRM = "process"
SCORE_TEMPLATE_FILE = "score_template.jinja"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
EVALUATION_SAMPLES = 16


@dataclass(frozen=True)
class RewardSettings:
    problems: int = 3000
    samples: int = 8
    temperature: float = 0.8
    stream_seed: int = 2_026_1201  # not the policy's stream seed; held-out problems are skipped
    epochs: int = 1  # the process model's passes over its data
    orm_epochs: int = 1  # the outcome model's, from the process model's weights
    batch_size: int = 64
    learning_rate: float = 1e-3
    dense_weight: float = 0.5
    synthetic: int = 0  # solutions written, not sampled: half right, half with one slip
    extra_layers: int = 0
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2


async def sample(
    server: VllmServer, problems: Sequence[Problem], n: int, temperature: float
) -> list[list[str]]:
    """`n` completions of each problem from the served policy."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        texts, _ = await complete(session, server, [p.prompt for p in problems], n, temperature)
    return texts


async def sample_all(
    policy: Path, training: Sequence[Problem], settings: RewardSettings
) -> tuple[list[list[str]], list[list[str]]]:
    """Training and evaluation samples, from one vLLM server."""
    with tempfile.TemporaryDirectory(prefix="ponder-reward-") as log_dir:
        async with vllm_server(policy, log_dir=Path(log_dir)) as server:
            train_texts = await sample(server, training, settings.samples, settings.temperature)
            eval_texts = await sample(
                server, EVALUATION.problems(), EVALUATION_SAMPLES, settings.temperature
            )
    return train_texts, eval_texts


def synthetic_examples(settings: RewardSettings) -> list[Labelled]:
    """`settings.synthetic` written solutions to training-stream problems (another seed, the
    held-out sets skipped as ever): every other one right, the rest with one slip each."""
    rng = random.Random(settings.seed + 1)
    problems = islice(training_stream(settings.stream_seed + 1), settings.synthetic)
    return [
        labelled(problem, problem.solution if index % 2 else slipped_completion(problem, rng))
        for index, problem in enumerate(problems)
    ]


def examples_of(problems: Sequence[Problem], texts: Sequence[Sequence[str]]) -> list[Labelled]:
    return [
        labelled(problem, text)
        for problem, group in zip(problems, texts, strict=True)
        for text in group
    ]


def padded(batch: Sequence[Labelled]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask."""
    width = max(len(example.ids) for example in batch)
    ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        ids[row, : len(example.ids)] = torch.tensor(example.ids)
        mask[row, : len(example.ids)] = 1
    return ids, mask


def targets(
    batch: Sequence[Labelled], kind: str, dense_weight: float
) -> tuple[list[int], list[int], list[float], list[float]]:
    """(row, position, label, weight) of every scored token. The PRM: every solution
    character, labelled whether the text so far begins the right solution (at a step's closing
    newline that is the step label). The ORM: the last token, labelled with the outcome, plus
    the same character labels at `dense_weight` (they teach it where a solution goes wrong)."""
    rows: list[int] = []
    positions: list[int] = []
    labels: list[float] = []
    weights: list[float] = []
    for row, example in enumerate(batch):
        dense = [
            (example.body_start + offset, label, dense_weight if kind == ORM else 1.0)
            for offset, label in enumerate(example.prefix_labels)
        ]
        # an empty solution has no characters: only the ORM has a label for it (its last token)
        scored = [*dense, (len(example.ids) - 1, example.outcome, 1.0)] if kind == ORM else dense
        for position, label, weight in scored:
            if weight > 0:
                rows.append(row)
                positions.append(position)
                labels.append(float(label))
                weights.append(weight)
    return rows, positions, labels, weights


def token_logits(
    model: LlamaForSequenceClassification, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The head's logit at every position, [batch, width]."""
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    return model.score(hidden).squeeze(-1)


def epochs_of(
    examples: Sequence[Labelled], epochs: int, batch_size: int, seed: int
) -> Iterator[list[Labelled]]:
    """Shuffled batches, `epochs` passes."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[index] for index in order[start : start + batch_size]]


def reward_model_from(policy: Path, extra_layers: int, seed: int) -> LlamaForSequenceClassification:
    """The policy's embeddings and layers, `extra_layers` more on top, and a one-logit head.

    The extra layers start as the identity (their attention and MLP outputs are zero), so the
    new model begins reading exactly what the policy computed; on top of the policy's last
    layer they can compare what it predicts at each position with the token that follows,
    which a layer of the policy itself cannot see (it is busy making that prediction).
    """
    torch.manual_seed(seed)
    source = LlamaForCausalLM.from_pretrained(str(policy))
    config = copy.deepcopy(source.config)
    config.num_hidden_layers = source.config.num_hidden_layers + extra_layers
    config.num_labels = 1
    config.architectures = ["LlamaForSequenceClassification"]
    model = LlamaForSequenceClassification(config)
    missing, unexpected = model.model.load_state_dict(source.model.state_dict(), strict=False)
    assert not unexpected and all(
        ".layers." in name or name.startswith("layers.") for name in missing
    )
    for layer in model.model.layers[source.config.num_hidden_layers :]:
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    return model


def train_model(
    model: LlamaForSequenceClassification,
    examples: Sequence[Labelled],
    kind: str,
    settings: RewardSettings,
    epochs: int,
) -> dict[str, Any]:
    """Fine-tune `model` for `kind` over `epochs` passes of `examples`; returns its figures."""
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    total = epochs * math.ceil(len(examples) / settings.batch_size)
    started_at = time.monotonic()
    loss_value = math.nan
    batches = epochs_of(examples, epochs, settings.batch_size, settings.seed)
    for step, batch in enumerate(batches):
        warm = min(1.0, (step + 1) / settings.warmup_steps)
        decay = 0.5 * (1 + math.cos(math.pi * step / total))
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * warm * (0.1 + 0.9 * decay)
        ids, mask = padded(batch)
        rows, positions, labels, weights = targets(batch, kind, settings.dense_weight)
        logits = token_logits(model, ids, mask)[rows, positions]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.tensor(labels), weight=torch.tensor(weights), reduction="sum"
        ) / sum(weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.item())
        if step % 100 == 0:
            print(
                f"{kind} step {step:5d}/{total}  loss {loss_value:.4f}  "
                f"{time.monotonic() - started_at:6.1f}s",
                flush=True,
            )
    model.eval()
    return {
        "examples": len(examples),
        "epochs": epochs,
        "steps": total,
        "final_loss": loss_value,
        "training_seconds": round(time.monotonic() - started_at, 1),
    }


@dataclass(frozen=True)
class Scored:
    """A model's probabilities for one example: at each step tag, and at the last token."""

    steps: list[float]
    last: float

    def solution(self, kind: str) -> float:
        """The solution's score as the scheduler's verifier reads it from vLLM: the PRM's
        lowest step (0 without steps), the ORM's last token."""
        return min(self.steps, default=0.0) if kind == PRM else self.last


@torch.no_grad()
def scored(model: LlamaForSequenceClassification, examples: Sequence[Labelled]) -> list[Scored]:
    """The model's probabilities for each example, run in this process."""
    model.eval()
    scores: list[Scored] = []
    for start in range(0, len(examples), 256):
        batch = examples[start : start + 256]
        ids, mask = padded(batch)
        probabilities = torch.sigmoid(token_logits(model, ids, mask))
        scores += [
            Scored(
                steps=[float(probabilities[row, position]) for position in example.tag_positions],
                last=float(probabilities[row, len(example.ids) - 1]),
            )
            for row, example in enumerate(batch)
        ]
    return scores


def picked_accuracy(examples: Sequence[Labelled], scores: Sequence[float], group: int) -> float:
    """Best-of-`group`: the share of problems whose highest-scored sample has the right answer."""
    right = 0
    problems = len(examples) // group
    for number in range(problems):
        rows = range(number * group, (number + 1) * group)
        best = max(rows, key=lambda row: scores[row])
        right += examples[best].outcome
    return right / problems


def figures(examples: Sequence[Labelled], scores: Sequence[Scored], kind: str) -> dict[str, Any]:
    """AUROC and calibration of the solution score (and of step scores for the PRM)."""
    solution = [score.solution(kind) for score in scores]
    outcomes = [example.outcome for example in examples]
    bins, error = calibration(solution, outcomes)
    result: dict[str, Any] = {
        "samples": len(examples),
        "right": sum(outcomes),
        "outcome_auroc": auroc(solution, outcomes),
        "expected_calibration_error": error,
        "calibration": [asdict(row) for row in bins],
        f"best_of_{EVALUATION_SAMPLES}": picked_accuracy(examples, solution, EVALUATION_SAMPLES),
        f"pass@{EVALUATION_SAMPLES}": sum(
            any(examples[row].outcome for row in range(n, n + EVALUATION_SAMPLES))
            for n in range(0, len(examples), EVALUATION_SAMPLES)
        )
        / (len(examples) // EVALUATION_SAMPLES),
    }
    if kind == PRM:
        step_scores = [step for score in scores for step in score.steps]
        step_truth = [label for example in examples for label in example.step_labels]
        result["steps"] = len(step_scores)
        result["step_auroc"] = auroc(step_scores, step_truth)
        result["step_expected_calibration_error"] = calibration(step_scores, step_truth)[1]
    return result


def save(model: LlamaForSequenceClassification, out_dir: Path, summary: dict[str, Any]) -> None:
    """The model, tokenizer, both serving templates and `reward.json`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(out_dir)
    pin_float32(out_dir / "config.json")
    (out_dir / SCORE_TEMPLATE_FILE).write_text(SCORE_TEMPLATE)
    (out_dir / CHAT_TEMPLATE_FILE).write_text(CHAT_TEMPLATE)
    (out_dir / "reward.json").write_text(json.dumps(summary, indent=2) + "\n")


def cached_samples(
    policy: Path, training: Sequence[Problem], settings: RewardSettings, cache: Path | None
) -> tuple[list[list[str]], list[list[str]], float]:
    """The policy's samples (training, evaluation) and the seconds sampling took; read from
    `cache` when it holds samples for the same settings, else sampled (and written there)."""
    key = {
        "policy": str(policy),
        "problems": settings.problems,
        "samples": settings.samples,
        "temperature": settings.temperature,
        "stream_seed": settings.stream_seed,
    }
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
        if stored["key"] == key:
            return stored["training"], stored["evaluation"], stored["seconds"]
    started_at = time.monotonic()
    train_texts, eval_texts = asyncio.run(sample_all(policy, training, settings))
    seconds = round(time.monotonic() - started_at, 1)
    if cache is not None:
        payload = {
            "key": key,
            "training": train_texts,
            "evaluation": eval_texts,
            "seconds": seconds,
        }
        cache.write_text(json.dumps(payload))
    return train_texts, eval_texts, seconds


def run(
    policy: Path,
    outputs: dict[str, Path],
    settings: RewardSettings,
    cache: Path | None = None,
) -> dict[str, Any]:
    torch.set_num_threads(settings.threads)
    training = list(islice(training_stream(settings.stream_seed), settings.problems))
    train_texts, eval_texts, sampling_seconds = cached_samples(policy, training, settings, cache)
    train_examples = examples_of(training, train_texts)
    eval_examples = examples_of(EVALUATION.problems(), eval_texts)
    data = {
        "policy": policy.name,
        "training_problems": len(training),
        "training_samples": len(train_examples),
        "training_right": sum(example.outcome for example in train_examples),
        "training_steps_right": sum(sum(e.step_labels) for e in train_examples),
        "training_steps": sum(len(e.step_labels) for e in train_examples),
        "evaluation_set": f"{EVALUATION.name} (seed {EVALUATION.seed}, {EVALUATION.size})",
        "sampling_seconds": sampling_seconds,
    }
    synthetic = synthetic_examples(settings)
    data["synthetic_solutions"] = len(synthetic)
    summaries: dict[str, Any] = {}

    def finish(
        kind: str, model: LlamaForSequenceClassification, examples: list[Labelled], epochs: int
    ) -> None:
        training_figures = train_model(model, examples, kind, settings, epochs)
        evaluation = figures(eval_examples, scored(model, eval_examples), kind)
        summary = {
            "kind": kind,
            "settings": asdict(settings),
            "data": data,
            "training": training_figures,
            "evaluation": evaluation,
        }
        save(model, outputs[kind], summary)
        summaries[kind] = summary
        print(json.dumps({kind: evaluation | {"calibration": "..."}}, indent=2), flush=True)

    # The process model learns first, on the policy's samples and the written solutions; the
    # outcome model starts from it and learns the outcome on the policy's samples alone.
    prm = reward_model_from(policy, settings.extra_layers, settings.seed)
    finish(PRM, prm, [*train_examples, *synthetic], settings.epochs)
    finish(ORM, copy.deepcopy(prm), train_examples, settings.orm_epochs)
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", type=Path, required=True, help="the policy model directory")
    parser.add_argument("--orm-out", type=Path, required=True)
    parser.add_argument("--prm-out", type=Path, required=True)
    parser.add_argument("--problems", type=int, default=RewardSettings.problems)
    parser.add_argument("--samples", type=int, default=RewardSettings.samples)
    parser.add_argument("--epochs", type=int, default=RewardSettings.epochs)
    parser.add_argument("--threads", type=int, default=RewardSettings.threads)
    parser.add_argument("--learning-rate", type=float, default=RewardSettings.learning_rate)
    parser.add_argument(
        "--synthetic",
        type=int,
        default=RewardSettings.synthetic,
        help="written solutions (half right, half with one slip) added to the process model's "
        "data [0: measured to hurt, see the model card]",
    )
    parser.add_argument(
        "--extra-layers",
        type=int,
        default=RewardSettings.extra_layers,
        help="identity-initialised layers added on top of the policy's [0]",
    )
    parser.add_argument(
        "--samples-cache",
        type=Path,
        help="JSON file to keep the policy's samples in, reused "
        "by a later run with the same settings",
    )
    arguments = parser.parse_args()
    settings = RewardSettings(
        problems=arguments.problems,
        samples=arguments.samples,
        epochs=arguments.epochs,
        threads=arguments.threads,
        learning_rate=arguments.learning_rate,
        synthetic=arguments.synthetic,
        extra_layers=arguments.extra_layers,
    )
    outputs = {ORM: arguments.orm_out, PRM: arguments.prm_out}
    run(arguments.policy, outputs, settings, arguments.samples_cache)


if __name__ == "__main__":
    main()
