"""A branch's confidence from its own tokens, as it generates (pure).

DeepConf (Fu et al. 2025, arXiv 2508.15260): each token gets a confidence, a group is the mean
over a sliding window of `window_tokens` tokens, and a branch is as confident as its lowest
group; settings in `ponder.api.wire.ConfidenceWatch`. With `sampled`, a token's value is its
logprob and a group scores exp(mean), the window's geometric-mean probability in (0, 1]; with
`top-k`, DeepConf's token confidence, minus the mean logprob of the k likeliest tokens, and a
group scores the mean itself. Higher is more confident in both.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import TypeGuard

from ponder.api.service_config import TokenConfidence
from ponder.api.wire import ConfidenceWatch


def token_confidence(
    watch: ConfidenceWatch, sampled: object, top_logprobs: Iterable[object]
) -> float | None:
    """One token's value under `watch`, from its sampled logprob and the logprobs of the
    likeliest tokens at its position; None when they hold no usable number.

    For `top-k` the k largest of `top_logprobs` count: vLLM's completions endpoint adds the
    sampled token to its top k when it is not among them. Entries that are not finite numbers
    (JSON nulls) are skipped.
    """
    if watch.token is TokenConfidence.SAMPLED:
        return float(sampled) if _is_logprob(sampled) else None
    likeliest = sorted((float(v) for v in top_logprobs if _is_logprob(v)), reverse=True)
    likeliest = likeliest[: watch.top_k]
    if not likeliest:
        return None
    return -sum(likeliest) / len(likeliest)


def _is_logprob(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class GroupConfidence:
    """The sliding-window group confidence of one branch, fed one token value at a time.

    `add` is O(1): a running sum over the window's deque. Only full windows count towards
    `lowest` and `below_threshold`; a branch shorter than one window scores the group of all
    its tokens.
    """

    def __init__(self, watch: ConfidenceWatch) -> None:
        self.watch = watch
        self._window: deque[float] = deque()
        self._window_sum = 0.0
        self._lowest_full: float | None = None
        self._below = False

    def add(self, value: float) -> None:
        """One more token's value (`token_confidence`)."""
        self._window.append(value)
        self._window_sum += value
        if len(self._window) > self.watch.window_tokens:
            self._window_sum -= self._window.popleft()
        if len(self._window) < self.watch.window_tokens:
            return
        group = self._group()
        if self._lowest_full is None or group < self._lowest_full:
            self._lowest_full = group
        if self.watch.stop_below is not None and group < self.watch.stop_below:
            self._below = True

    @property
    def lowest(self) -> float | None:
        """The branch's confidence: its lowest full window's group, or the group of all its
        tokens while it is shorter than a window; None before its first token."""
        if self._lowest_full is not None:
            return self._lowest_full
        return self._group() if self._window else None

    @property
    def below_threshold(self) -> bool:
        """A full window's group fell below `stop_below` (never without one)."""
        return self._below

    def _group(self) -> float:
        mean = self._window_sum / len(self._window)
        # Clamped to the value's own domain (a logprob is at most 0): the running sum may drift
        # by a rounding error past it.
        if self.watch.token is TokenConfidence.SAMPLED:
            return math.exp(min(mean, 0.0))
        return max(mean, 0.0)
