"""Can this node see the world? The verdict from canary rounds, and the burst that asks.

Pure code, time comes in as arguments (the canary runner in ``canaries.py`` does
the I/O). The rules:

* a **round** runs every canary once; a round *fails* when most canaries fail
  (a strict majority);
* ``rounds`` failing rounds in a row make the node **blind**; as many passing
  rounds in a row give its sight back (hysteresis: one lucky answer does not end
  a blindness, one lost packet does not start one);
* a **burst** — network-class failures of at least ``burst_services`` distinct
  services within ``burst_window`` — asks for a round at once and leaves the
  verdict *pending* until a round that started after the burst has passed. A
  burst never makes the node blind by itself: a vendor-wide outage seen by a
  node whose canaries succeed is real and pages;
* while the verdict is pending (after a burst, or after a failing round while
  blindness is not yet confirmed), confirmations to ``down`` whose reason is
  network-class wait for it (see ``canaries.SightGate``).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CanaryOutcome:
    """One canary's result in one round."""

    name: str
    success: bool
    reason: str = ""


class SightChange(enum.StrEnum):
    """What a round decided, when it decided something."""

    BLIND = "blind"
    SIGHT_RESTORED = "sight_restored"


@dataclass(frozen=True, slots=True)
class SightSettings:
    rounds: int = 2
    burst_services: int = 3
    burst_window: float = 60.0


def round_failed(outcomes: list[CanaryOutcome]) -> bool:
    """Most canaries failed (a strict majority); a round without canaries never fails."""
    failed = sum(1 for outcome in outcomes if not outcome.success)
    return bool(outcomes) and failed * 2 > len(outcomes)


@dataclass
class Sight:
    """The node's verdict about itself, fed with canary rounds and network failures."""

    settings: SightSettings = field(default_factory=SightSettings)
    blind: bool = False
    blind_since: float | None = None  # when the first failing round of the blindness started
    failing_rounds: int = 0
    passing_rounds: int = 0
    last_outcomes: list[CanaryOutcome] = field(default_factory=list)
    burst_since: float | None = None  # a burst asked for a verdict at this time
    _first_failing_start: float | None = None
    _failures: deque[tuple[float, str]] = field(default_factory=deque)

    @property
    def failing_canaries(self) -> list[CanaryOutcome]:
        return [outcome for outcome in self.last_outcomes if not outcome.success]

    def pending(self) -> bool:
        """A verdict is awaited: network-class confirmations to down must wait for it."""
        return not self.blind and (self.failing_rounds > 0 or self.burst_since is not None)

    def round_finished(
        self, outcomes: list[CanaryOutcome], started_at: float
    ) -> SightChange | None:
        """A round that started at ``started_at`` ended with ``outcomes``."""
        self.last_outcomes = list(outcomes)
        if not outcomes:
            return None
        if round_failed(outcomes):
            if self.failing_rounds == 0:
                self._first_failing_start = started_at
            self.failing_rounds += 1
            self.passing_rounds = 0
            if not self.blind and self.failing_rounds >= self.settings.rounds:
                self.blind = True
                self.blind_since = self._first_failing_start
                self.burst_since = None
                return SightChange.BLIND
            return None
        self.passing_rounds += 1
        self.failing_rounds = 0
        if self.burst_since is not None and started_at >= self.burst_since:
            self.burst_since = None  # the canaries saw the world after the burst began
        if self.blind and self.passing_rounds >= self.settings.rounds:
            self.blind = False
            self.blind_since = None
            return SightChange.SIGHT_RESTORED
        return None

    def without_canaries(self) -> SightChange | None:
        """The canaries were removed: nothing can say the node is blind any more."""
        was_blind = self.blind
        self.blind, self.blind_since = False, None
        self.failing_rounds = self.passing_rounds = 0
        self.burst_since = None
        self.last_outcomes = []
        return SightChange.SIGHT_RESTORED if was_blind else None

    def failure_seen(self, service: str, now: float) -> bool:
        """A target of ``service`` failed reaching its target; True when this makes a burst
        (run the canaries now)."""
        window = self.settings.burst_window
        self._failures.append((now, service))
        while self._failures and self._failures[0][0] < now - window:
            self._failures.popleft()
        if len(self._failures) > 10_000:  # bounded: the distinct services are what count
            self._failures.popleft()
        if self.blind or self.burst_since is not None:
            return False
        if len({name for _, name in self._failures}) < self.settings.burst_services:
            return False
        self.burst_since = now
        self._failures.clear()
        return True
