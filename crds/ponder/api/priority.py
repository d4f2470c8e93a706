"""Priority classes of queries: Critical, Standard, Sheddable (pure).

The names are KServe's and llm-d's (the Gateway API Inference Extension's InferenceObjective):
under load Sheddable queries shrink first and are refused first, Critical ones keep their
branches, and workers take a Critical job before a Standard one and a Standard one before a
Sheddable one (each class has its own jobs subject and consumer, `ponder.api.subjects`).
docs/architecture.md, "Priority classes", says how a query gets its class.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """A query's priority class, most important first."""

    CRITICAL = "Critical"
    STANDARD = "Standard"
    SHEDDABLE = "Sheddable"

    @property
    def rank(self) -> int:
        """0 for the most important class; workers fetch lower ranks first."""
        return PRIORITY_ORDER.index(self)


PRIORITY_ORDER: tuple[Priority, ...] = (Priority.CRITICAL, Priority.STANDARD, Priority.SHEDDABLE)
"""The classes in the order workers take their jobs."""


def parse_priority(text: str | None) -> Priority | None:
    """The class `text` names, case-insensitively (`critical`, `SHEDDABLE`, ...); None for
    anything else, an absent or empty value included."""
    wanted = (text or "").strip().lower()
    for priority in Priority:
        if priority.value.lower() == wanted:
            return priority
    return None


def at_most(asked: Priority, ceiling: Priority) -> Priority:
    """`asked`, unless it is more important than `ceiling`: then `ceiling`."""
    return asked if asked.rank >= ceiling.rank else ceiling
