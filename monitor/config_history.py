"""What happened to the config on this node: the load at start and each reload, kept in
memory for the console's Config page (the audit log keeps them for good).

A refused reload is recorded with its problems as ``ConfigError`` words them (paths
and reasons, never a referenced value), so the page may show them as they are.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

KEEP = 20


@dataclass(frozen=True, slots=True)
class ConfigOutcome:
    """One load or reload: when, how it went, and which config runs after it."""

    at: float
    result: str  # loaded, reloaded, rejected
    digest: str  # the config running afterwards
    message: str = ""
    problems: tuple[str, ...] = ()


class ConfigHistory:
    """The last ``KEEP`` outcomes, newest first."""

    def __init__(self) -> None:
        self._outcomes: deque[ConfigOutcome] = deque(maxlen=KEEP)

    def record(self, outcome: ConfigOutcome) -> None:
        self._outcomes.appendleft(outcome)

    @property
    def outcomes(self) -> list[ConfigOutcome]:
        return list(self._outcomes)

    @property
    def loaded(self) -> ConfigOutcome | None:
        """The load or reload that brought in the config running now."""
        return next((o for o in self._outcomes if o.result != "rejected"), None)

    @property
    def last_reload(self) -> ConfigOutcome | None:
        """The last reload tried, applied or refused (None: none since the start)."""
        return next((o for o in self._outcomes if o.result != "loaded"), None)
