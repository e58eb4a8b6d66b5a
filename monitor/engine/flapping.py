"""Flap detection with hysteresis (after Icinga), on confirmed status changes.

A subscription is flapping when it changed status at least ``high`` times
within ``window``; it stops flapping only when the count falls to ``low`` or
fewer. The gap between the two thresholds keeps the flag itself from flapping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FlapSettings:
    window: float = 3600.0
    high: int = 6  # changes within the window that start flapping
    low: int = 2  # changes within the window at or below which flapping stops


@dataclass(slots=True)
class FlapDetector:
    settings: FlapSettings = field(default_factory=FlapSettings)
    changes: deque[float] = field(default_factory=deque)
    flapping: bool = False

    def _expire(self, now: float) -> None:
        horizon = now - self.settings.window
        while self.changes and self.changes[0] <= horizon:
            self.changes.popleft()

    def record_change(self, now: float) -> bool:
        """Note a confirmed status change; return whether the subscription is flapping."""
        self.changes.append(now)
        return self.update(now)

    def update(self, now: float) -> bool:
        """Re-evaluate as time passes (changes age out of the window)."""
        self._expire(now)
        count = len(self.changes)
        if not self.flapping and count >= self.settings.high:
            self.flapping = True
        elif self.flapping and count <= self.settings.low:
            self.flapping = False
        return self.flapping
