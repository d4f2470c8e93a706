"""Reading Prometheus text from the parts' /metrics, for tests of every tier."""

from __future__ import annotations

import re

import aiohttp


def sample_sum(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` in the exposition `text` whose labels contain `labels`
    (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


async def metric(http: aiohttp.ClientSession, url: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` whose labels contain `labels` at `url`/metrics (0 if none)."""
    async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as response:
        return sample_sum(await response.text(), name, labels)
