"""Accuracy measures over sampled answers: pass@k, majority@k and verifier-picked@k.

Pure functions over, per problem, the list of (extracted answer, every-step-verified) pairs of its
samples. For k below the sample count, majority@k and verified@k average over the disjoint groups
of k consecutive samples; pass@k uses the unbiased estimator of Chen et al. 2021 ("Evaluating
Large Language Models Trained on Code", eq. 1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb


@dataclass(frozen=True)
class Sample:
    answer: str | None
    verified: bool


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-missing answer (ties go to the one seen first); None if none."""
    votes = Counter(answer for answer in answers if answer is not None)
    return votes.most_common(1)[0][0] if votes else None


def verified_answer(samples: Sequence[Sample]) -> str | None:
    """Majority among samples whose every step checks out; plain majority if none does."""
    picked = majority_answer([sample.answer for sample in samples if sample.verified])
    if picked is not None:
        return picked
    return majority_answer([sample.answer for sample in samples])


def pass_at_k(sample_count: int, correct_count: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement is correct."""
    if k > sample_count:
        raise ValueError(f"k={k} exceeds the {sample_count} samples drawn")
    if sample_count - correct_count < k:
        return 1.0
    return 1.0 - comb(sample_count - correct_count, k) / comb(sample_count, k)


def groups_of(samples: Sequence[Sample], k: int) -> list[Sequence[Sample]]:
    """The disjoint runs of k consecutive samples (a tail shorter than k is dropped)."""
    return [samples[start : start + k] for start in range(0, len(samples) - k + 1, k)]


def majority_at_k(samples: Sequence[Sample], truth: str, k: int) -> float:
    """Share of k-groups whose majority answer is right."""
    groups = groups_of(samples, k)
    right = [majority_answer([sample.answer for sample in group]) == truth for group in groups]
    return sum(right) / len(groups)


def verified_at_k(samples: Sequence[Sample], truth: str, k: int) -> float:
    """Share of k-groups whose verifier-picked answer is right."""
    groups = groups_of(samples, k)
    return sum(verified_answer(group) == truth for group in groups) / len(groups)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def sampled_metrics(
    per_problem: Sequence[Sequence[Sample]], truths: Sequence[str], ks: Sequence[int]
) -> dict[str, float]:
    """``sample@1``, ``pass@k``, ``majority@k`` and ``verified@k`` averaged over problems."""
    metrics = {
        "sample@1": mean(
            [
                mean([float(sample.answer == truth) for sample in samples])
                for samples, truth in zip(per_problem, truths, strict=True)
            ]
        )
    }
    for k in ks:
        pairs = list(zip(per_problem, truths, strict=True))
        metrics[f"pass@{k}"] = mean(
            [
                pass_at_k(len(samples), sum(sample.answer == truth for sample in samples), k)
                for samples, truth in pairs
            ]
        )
        metrics[f"majority@{k}"] = mean(
            [majority_at_k(samples, truth, k) for samples, truth in pairs]
        )
        metrics[f"verified@{k}"] = mean(
            [verified_at_k(samples, truth, k) for samples, truth in pairs]
        )
    return metrics
