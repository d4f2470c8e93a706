"""Train the shipped arithmetic model on the CPU: ``python -m models.arith.train --out DIR``.

Each example is ``<bos>Q:23+48-17 A:23+48=71 71-17=54 #54<eos>`` from an endless seeded stream of
problems that skips every held-out problem (``models.arith.heldout.training_stream``); the loss
covers only the completion (after ``A:``) and its ``<eos>``, since the question is random and
cannot be predicted. ``training.json`` records how many problems were drawn, so a test can replay
the stream and show that no evaluated problem is in it.

Training stops as soon as greedy accuracy on a validation set (its own seed) reaches
``target_greedy_accuracy``, checked every ``validate_every`` steps, or at ``steps``. The model is
deliberately stopped part-way into learning the task: right about half the time greedily, and
usually right somewhere among 16 samples, so test-time compute has room to pay off (issue 4).
A stopping rule on accuracy rather than a step count lands at that point on any machine, where
the step at which a small model "gets" carrying varies by hundreds between runs. Fixed seeds
make a run repeatable on the same machine and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from models.arith.heldout import VALIDATION, training_stream
from models.arith.model import build_model, save_model
from models.arith.task import Problem
from models.arith.tokenizer import EOS_ID, PAD_ID, encode
from models.arith.validation import greedy_accuracy

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainingSettings:
    steps: int = 3300
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    log_every: int = 100
    device: str = "cpu"
    target_greedy_accuracy: float = 0.55
    validate_every: int = 100
    validate_after: int = 800


def example_tensors(problem: Problem) -> tuple[list[int], list[int]]:
    """Input ids and labels of one example; labels hide the prompt (BOS + question)."""
    prompt_ids = encode(problem.prompt)
    completion_ids = [*encode(problem.solution)[1:], EOS_ID]
    input_ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    return input_ids, labels


def batches(
    seed: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, attention_mask, labels) batches from the seeded training stream."""
    problems = training_stream(seed)
    while True:
        examples = [example_tensors(next(problems)) for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in examples)
        input_ids = torch.full((batch_size, width), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, targets) in enumerate(examples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, : len(targets)] = torch.tensor(targets)
        yield input_ids, attention_mask, labels


def learning_rate_at(step: int, settings: TrainingSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(out_dir: Path, settings: TrainingSettings) -> dict[str, object]:
    """Train from scratch, save the model and tokenizer to ``out_dir``; return a summary."""
    torch.set_num_threads(settings.threads)
    with torch.device(settings.device):
        model = build_model(settings.seed)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=settings.learning_rate,
        betas=(0.9, 0.98),
        weight_decay=settings.weight_decay,
    )
    validation = VALIDATION.problems()
    started_at = time.monotonic()
    loss_value = float("nan")
    accuracy = float("nan")
    steps_done = 0
    stream = batches(settings.seed + 1, settings.batch_size)
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        input_ids, attention_mask, labels = (tensor.to(settings.device) for tensor in next(stream))
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss.item())
        steps_done = step + 1
        if step % settings.log_every == 0:
            elapsed = time.monotonic() - started_at
            print(f"step {step:5d}  loss {loss_value:.4f}  {elapsed:6.1f}s", flush=True)
        if steps_done >= settings.validate_after and steps_done % settings.validate_every == 0:
            accuracy = greedy_accuracy(model, validation)
            model.train()
            print(f"step {steps_done:5d}  validation greedy accuracy {accuracy:.3f}", flush=True)
            if accuracy >= settings.target_greedy_accuracy:
                break
    model.eval()
    training_seconds = time.monotonic() - started_at
    save_model(model, out_dir)
    summary: dict[str, object] = {
        "settings": asdict(settings),
        "steps_done": steps_done,
        "stream_seed": settings.seed + 1,
        "problems_drawn": steps_done * settings.batch_size,
        "final_loss": loss_value,
        "validation_greedy_accuracy": accuracy,
        "training_seconds": round(training_seconds, 1),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "torch": torch.__version__,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--steps", type=int, default=TrainingSettings.steps)
    parser.add_argument("--batch-size", type=int, default=TrainingSettings.batch_size)
    parser.add_argument("--learning-rate", type=float, default=TrainingSettings.learning_rate)
    parser.add_argument("--seed", type=int, default=TrainingSettings.seed)
    parser.add_argument("--threads", type=int, default=TrainingSettings.threads)
    parser.add_argument(
        "--target-greedy-accuracy",
        type=float,
        default=TrainingSettings.target_greedy_accuracy,
        help="stop once validation greedy accuracy reaches this (1.0: train all --steps)",
    )
    parser.add_argument(
        "--device", default=TrainingSettings.device, help="torch device; the shipped model: cpu"
    )
    arguments = parser.parse_args()
    settings = TrainingSettings(
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate,
        seed=arguments.seed,
        threads=arguments.threads,
        device=arguments.device,
        target_greedy_accuracy=arguments.target_greedy_accuracy,
    )
    summary = train(arguments.out, settings)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
