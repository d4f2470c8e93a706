"""Which jobs a cancel message stops (pure).

Cancellation works per job: one vLLM request with `n=k` runs all branches of a job, and it can
only be aborted as a whole. So a job is stopped when the cancel names its query and either no
branches (the whole query) or any of the job's branches; all its branches then come back
CANCELLED with their partial output. Schedulers cancel whole queries or whole jobs.

Cancels are also remembered for a while, because a cancel can overtake jobs of its query that
are still queued: such a job is answered CANCELLED on arrival without generating.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ponder.api.wire import BranchJob, CancelMessage


def cancel_matches(cancel: CancelMessage, job: BranchJob) -> bool:
    """Whether `cancel` stops `job`."""
    if cancel.query_id != job.query_id:
        return False
    return not cancel.branch_ids or not set(cancel.branch_ids).isdisjoint(job.branch_ids)


@dataclass
class _Remembered:
    forget_at: float
    branch_ids: set[str] | None  # None: the whole query


class CancelRegistry:
    """Recent cancels, kept `remember_seconds` and at most `max_queries` queries (oldest go)."""

    def __init__(self, remember_seconds: float, max_queries: int = 10_000) -> None:
        self.remember_seconds = remember_seconds
        self.max_queries = max_queries
        self._queries: OrderedDict[str, _Remembered] = OrderedDict()

    def record(self, cancel: CancelMessage, now: float) -> None:
        self._forget_expired(now)
        remembered = self._queries.pop(cancel.query_id, None)
        if remembered is None:
            remembered = _Remembered(now + self.remember_seconds, set())
        remembered.forget_at = now + self.remember_seconds
        if not cancel.branch_ids:
            remembered.branch_ids = None
        elif remembered.branch_ids is not None:
            remembered.branch_ids.update(cancel.branch_ids)
        self._queries[cancel.query_id] = remembered
        while len(self._queries) > self.max_queries:
            self._queries.popitem(last=False)

    def is_cancelled(self, job: BranchJob, now: float) -> bool:
        """Whether a remembered cancel stops `job` (the same rule as `cancel_matches`)."""
        remembered = self._queries.get(job.query_id)
        if remembered is None or remembered.forget_at <= now:
            return False
        return remembered.branch_ids is None or not remembered.branch_ids.isdisjoint(job.branch_ids)

    def __len__(self) -> int:
        return len(self._queries)

    def _forget_expired(self, now: float) -> None:
        # Insertion order is refresh order and every entry lives equally long, so the
        # expired ones are at the front.
        while self._queries:
            oldest = next(iter(self._queries.values()))
            if oldest.forget_at > now:
                return
            self._queries.popitem(last=False)
