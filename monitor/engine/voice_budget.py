"""Voice-call budgets: may we call this number now, given the calls already placed?

The voice providers limit calls per callee, and a call they refuse is a page lost
at the worst moment (the night page). Tencent by default allows 1 call per 30 s,
2 per 10 min, 3 a day, and at most 1 between 22:00 and 08:00 Beijing time;
Aliyun 1 a minute, 5 an hour, 20 in 24 hours, failed calls included
(``shared/reference/china-oncall.md`` §3). We keep to them ourselves, with the
calls we placed read from the store (so a restart forgets nothing), and a call the
budget forbids goes to the next provider instead.

Pure code: the calls (Unix times) and the clock in, a refusal (or None) out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class CallWindow:
    """At most ``calls`` in any ``seconds`` (a sliding window)."""

    calls: int
    seconds: float


@dataclass(frozen=True, slots=True)
class NightRule:
    """At most ``calls`` between ``start`` and ``end`` (local times in ``timezone``;
    ``start`` later than ``end`` spans midnight) of one night."""

    calls: int
    start: time
    end: time
    timezone: str = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class CallBudget:
    windows: tuple[CallWindow, ...]
    night: NightRule | None = None

    @property
    def memory(self) -> float:
        """How far back calls matter: the longest window, or a day for the night rule."""
        longest = max((w.seconds for w in self.windows), default=0.0)
        return max(longest, 86400.0 if self.night else 0.0)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not be placed now, and when it could be."""

    reason: str  # "3 calls in 1 day already"
    until: float  # Unix time the oldest blocking call leaves its window


TENCENT_DEFAULT = CallBudget(
    (CallWindow(1, 30.0), CallWindow(2, 600.0), CallWindow(3, 86400.0)),
    NightRule(1, time(22, 0), time(8, 0)),
)
ALIYUN_DEFAULT = CallBudget((CallWindow(1, 60.0), CallWindow(5, 3600.0), CallWindow(20, 86400.0)))


def night_window(rule: NightRule, now: float) -> tuple[float, float] | None:
    """The night (start, end) that contains ``now``, or None in the daytime."""
    zone = ZoneInfo(rule.timezone)
    local = datetime.fromtimestamp(now, UTC).astimezone(zone)
    for day in (local.date() - timedelta(days=1), local.date()):
        start = datetime.combine(day, rule.start, zone)
        end_day = day + timedelta(days=1) if rule.end <= rule.start else day
        end = datetime.combine(end_day, rule.end, zone)
        if start <= local < end:
            return start.timestamp(), end.timestamp()
    return None


def span_text(seconds: float) -> str:
    """``30 s``, ``10 min``, ``1 h``, ``1 day``: how the budgets are written."""
    if seconds % 86400 == 0:
        days = int(seconds // 86400)
        return "1 day" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def check(budget: CallBudget, calls: Sequence[float], now: float) -> Refusal | None:
    """None when one more call at ``now`` keeps within ``budget``, else the refusal with
    the latest time any of its rules clears."""
    refusals: list[Refusal] = []
    for window in budget.windows:
        inside = sorted(at for at in calls if now - window.seconds < at <= now)
        if len(inside) >= window.calls:
            # it clears when enough of the calls inside have left the window
            clears = inside[len(inside) - window.calls] + window.seconds
            per = span_text(window.seconds)
            used = f"{len(inside)} of {window.calls} calls per {per} used"
            refusals.append(Refusal(used, clears))
    if budget.night is not None and (night := night_window(budget.night, now)):
        start, end = night
        tonight = [at for at in calls if start <= at <= now]
        if len(tonight) >= budget.night.calls:
            rule = budget.night
            refusals.append(
                Refusal(
                    f"{len(tonight)} of {rule.calls} calls between {rule.start:%H:%M} and "
                    f"{rule.end:%H:%M} ({rule.timezone}) used",
                    end,
                )
            )
    if not refusals:
        return None
    latest = max(refusals, key=lambda r: r.until)
    return Refusal("; ".join(r.reason for r in refusals), latest.until)
