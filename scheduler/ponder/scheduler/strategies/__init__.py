"""Test-time strategies, one module each, all over `base.Strategy`; `make_strategy` picks one."""

from __future__ import annotations

from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.scheduler.strategies.base import PlannedQuery, Strategy
from ponder.scheduler.strategies.beam_search import BeamSearch
from ponder.scheduler.strategies.best_of_n import BestOfN, WeightedVote
from ponder.scheduler.strategies.budget_forcing import BudgetForcing
from ponder.scheduler.strategies.refine import Refine
from ponder.scheduler.strategies.self_consistency import SelfConsistency
from ponder.scheduler.strategies.single import Single

STRATEGIES: dict[StrategyName, type[Strategy]] = {
    StrategyName.SINGLE: Single,
    StrategyName.SELF_CONSISTENCY: SelfConsistency,
    StrategyName.ADAPTIVE_CONSISTENCY: AdaptiveConsistency,
    StrategyName.BEST_OF_N: BestOfN,
    StrategyName.WEIGHTED_VOTE: WeightedVote,
    StrategyName.BEAM_SEARCH: BeamSearch,
    StrategyName.REFINE: Refine,
    StrategyName.BUDGET_FORCING: BudgetForcing,
}


def make_strategy(query: PlannedQuery) -> Strategy:
    """A fresh strategy instance for one planned query."""
    return STRATEGIES[query.strategy](query)


__all__ = ["STRATEGIES", "make_strategy"]
