"""Test-time strategies, one module each, all over `base.Strategy`; `make_strategy` picks one.

Adding a strategy: its module (the class names itself and declares its shape), its name in
`ponder.api.strategy.StrategyName` (requests and the CRD spell it), and one line in
`STRATEGIES` below. The planner and the serving code read the shape from the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ponder.api.strategy import StrategyName
from ponder.scheduler.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.scheduler.strategies.base import PlannedQuery, Strategy, shape_problems
from ponder.scheduler.strategies.beam_search import BeamSearch
from ponder.scheduler.strategies.best_of_n import BestOfN, WeightedVote
from ponder.scheduler.strategies.budget_forcing import BudgetForcing
from ponder.scheduler.strategies.deep_conf import DeepConf
from ponder.scheduler.strategies.refine import Refine
from ponder.scheduler.strategies.self_consistency import SelfConsistency
from ponder.scheduler.strategies.single import Single

StrategyRegistry = Mapping[StrategyName, type[Strategy]]
"""Strategy classes by the name requests use."""


def registry(*strategies: type[Strategy]) -> StrategyRegistry:
    """The strategies keyed by their `name`; refuses a name given twice or a shape that
    `shape_problems` finds wrong, so a mistake shows when the module is imported."""
    problems = [problem for strategy in strategies for problem in shape_problems(strategy)]
    names = [strategy.name for strategy in strategies if hasattr(strategy, "name")]
    twice = sorted({name for name in names if names.count(name) > 1})
    problems += [f"strategy {name} registered twice" for name in twice]
    if problems:
        raise ValueError("; ".join(problems))
    return MappingProxyType({strategy.name: strategy for strategy in strategies})


STRATEGIES = registry(
    Single,
    SelfConsistency,
    AdaptiveConsistency,
    BestOfN,
    WeightedVote,
    BeamSearch,
    Refine,
    BudgetForcing,
    DeepConf,
)


def make_strategy(query: PlannedQuery, strategies: StrategyRegistry = STRATEGIES) -> Strategy:
    """A fresh strategy instance for one planned query."""
    return strategies[query.strategy](query)


__all__ = ["STRATEGIES", "StrategyRegistry", "make_strategy", "registry"]
