"""Names of the test-time strategies, as the API request spells them and as the CRD does."""

from __future__ import annotations

from enum import StrEnum


class StrategyName(StrEnum):
    """Strategy names in requests (`extra_body={"ponder": {"strategy": ...}}`)."""

    SINGLE = "single"
    SELF_CONSISTENCY = "self-consistency"
    ADAPTIVE_CONSISTENCY = "adaptive-consistency"
    BEST_OF_N = "best-of-n"
    WEIGHTED_VOTE = "weighted-vote"
    BEAM_SEARCH = "beam-search"
    REFINE = "refine"
    BUDGET_FORCING = "budget-forcing"
    DEEP_CONF = "deep-conf"

    @property
    def crd_value(self) -> str:
        """The CamelCase spelling used in ReasoningService specs, e.g. `SelfConsistency`."""
        return "".join(part.capitalize() for part in self.value.split("-"))

    @classmethod
    def from_crd(cls, value: str) -> StrategyName:
        for member in cls:
            if member.crd_value == value:
                return member
        raise ValueError(f"unknown strategy {value!r}")
