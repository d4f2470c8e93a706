"""How an engine call can fail, as the worker's pure decisions need to tell the cases apart.

Kept apart from `engine.py` (aiohttp) so that `outcomes.py` decides a job's outcome without
importing any I/O library.
"""

from __future__ import annotations


class EngineUnavailable(Exception):
    """The engine could not run the job now (down, overloaded, 5xx): another try may succeed."""


class EngineRejected(Exception):
    """The engine refused the job itself (4xx: unknown model, prompt too long): retrying is
    pointless."""
