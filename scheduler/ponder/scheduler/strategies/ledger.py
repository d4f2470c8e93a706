"""What a query has launched and spent, so that no strategy oversteps its token budget or cap.

Every strategy books its launches here. A launch reserves `n * max_tokens` completion tokens;
a finished branch (completed, cancelled, expired or failed alike) releases its reservation and
spends the tokens it really generated. Launches are sized so that spent + reserved never exceeds
`budget_tokens`; as long as the engine honours `max_tokens`, the query cannot overspend.
"""

from __future__ import annotations

from dataclasses import replace

from ponder.scheduler.strategies.base import BranchRequest, FinalAnswer, ScoredBranch


class BranchLedger:
    """Token and branch accounting for one query."""

    def __init__(self, budget_tokens: int, max_branches: int) -> None:
        self.budget_tokens = budget_tokens
        self.max_branches = max_branches
        self.launched = 0
        self.finished = 0
        self.spent_tokens = 0
        self.reserved_tokens = 0

    @property
    def outstanding(self) -> int:
        """Branches launched and not finished yet."""
        return self.launched - self.finished

    @property
    def available_tokens(self) -> int:
        """Tokens a new launch may still reserve."""
        return max(0, self.budget_tokens - self.spent_tokens - self.reserved_tokens)

    @property
    def branches_left(self) -> int:
        return max(0, self.max_branches - self.launched)

    def spent_share(self) -> float:
        """How much of the query's means it has used: the larger of the share of its branch
        cap launched and the share of its budget spent."""
        return max(self.launched / self.max_branches, self.spent_tokens / self.budget_tokens)

    def fit(self, request: BranchRequest, min_tokens: int = 1) -> BranchRequest | None:
        """`request` shrunk to what the budget and branch cap allow, or None if not even one
        branch of `min_tokens` fits.

        Fewer branches are preferred over branches too short to finish: `n` drops first until
        each branch can get `min_tokens` (capped by the request's own `max_tokens`).
        """
        floor = max(1, min(min_tokens, request.max_tokens))
        n = min(request.n, self.branches_left, self.available_tokens // floor)
        if n < 1:
            return None
        max_tokens = min(request.max_tokens, self.available_tokens // n)
        if (n, max_tokens) == (request.n, request.max_tokens):
            return request  # fits as it is (the common case; `replace` is not cheap)
        return replace(request, n=n, max_tokens=max_tokens)

    def book(self, request: BranchRequest) -> BranchRequest:
        """Record a launch; the request must come from `fit` (or fit as it is)."""
        cost = request.n * request.max_tokens
        if request.n > self.branches_left or cost > self.available_tokens:
            raise ValueError(
                f"launch of {request.n}x{request.max_tokens} tokens exceeds what is left "
                f"({self.branches_left} branches, {self.available_tokens} tokens)"
            )
        self.launched += request.n
        self.reserved_tokens += cost
        return request

    def launch(self, request: BranchRequest, min_tokens: int = 1) -> BranchRequest | None:
        """`fit` then `book`: the sized request, already recorded, or None if nothing fits."""
        fitted = self.fit(request, min_tokens)
        return self.book(fitted) if fitted is not None else None

    def settle(self, branch: ScoredBranch) -> None:
        """Record a finished branch: release its reservation, spend what it generated."""
        self.finished += 1
        self.reserved_tokens = max(0, self.reserved_tokens - branch.request.max_tokens)
        self.spent_tokens += branch.result.completion_tokens


def given_up(answer: FinalAnswer | None, ledger: BranchLedger, share: float) -> FinalAnswer | None:
    """`answer`, marked as given up, when an unsettled adaptive query has spent `share` of its
    branch cap or budget and could still launch more; None while it should go on (or has
    nothing to answer with)."""
    if answer is None or ledger.branches_left == 0 or ledger.spent_share() < share:
        return None
    return replace(answer, gave_up=True)
