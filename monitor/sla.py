"""SLA maths: time-weighted availability from status intervals. Pure, no I/O.

Definitions (the report states them too):

* **measured** time is the period minus *unknown* time: stretches with no
  status interval (the monitor was not running) or an ``unknown`` status (it
  could not probe). Unknown is never counted as up.
* **raw availability** = (measured − down) ÷ measured, where *down* includes
  time in maintenance (the service was not available to use) and, when the
  service says so, time degraded.
* **SLA availability** follows the vendor's monthly uptime percentage:
  (available minutes − downtime) ÷ available minutes, with approved
  maintenance excluded from both: (measured − maintenance − down) ÷
  (measured − maintenance).
* **coverage** = measured ÷ period. A **verdict** (met or missed) needs coverage
  of at least ``min_coverage`` (``reports.min_coverage``, 99 % by default): below
  it the figures are shown but the verdict is *not determinable*, because a
  percentage of a few measured minutes says nothing of the rest of the period.
* **downtime budget** for the whole period: (1 − target) × (period −
  maintenance); what is left of it = budget − downtime so far. A period not
  over yet (this month) is measured up to now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from monitor.engine.model import StatusInterval

STATUSES = ("up", "degraded", "down", "maintenance", "unknown")


@dataclass(frozen=True, slots=True)
class Gap:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Availability:
    """One subscription's figures over one period (seconds and ratios)."""

    period_start: float
    period_end: float  # the end of the period, or now if that is sooner
    seconds: dict[str, float]  # by status; "unknown" includes gaps
    degraded_is_down: bool
    gaps: tuple[Gap, ...]
    target: float | None = None  # percent, e.g. 99.9
    window_seconds: float = 0.0  # the whole period (the budget's), even if not over yet
    min_coverage: float = 0.0  # ratio: below it there is no verdict (reports.min_coverage)

    @property
    def period_seconds(self) -> float:
        return self.period_end - self.period_start

    @property
    def measured(self) -> float:
        return self.period_seconds - self.seconds["unknown"]

    @property
    def downtime(self) -> float:
        """Time counted against the SLA (maintenance excluded)."""
        down = self.seconds["down"]
        return down + self.seconds["degraded"] if self.degraded_is_down else down

    @property
    def coverage(self) -> float | None:
        return self.measured / self.period_seconds if self.period_seconds > 0 else None

    @property
    def raw_availability(self) -> float | None:
        if self.measured <= 0:
            return None
        return (self.measured - self.downtime - self.seconds["maintenance"]) / self.measured

    @property
    def sla_availability(self) -> float | None:
        available = self.measured - self.seconds["maintenance"]
        if available <= 0:
            return None
        return (available - self.downtime) / available

    @property
    def budget_seconds(self) -> float | None:
        if self.target is None:
            return None
        window = max(self.window_seconds, self.period_seconds)
        return (1 - self.target / 100) * (window - self.seconds["maintenance"])

    @property
    def budget_left_seconds(self) -> float | None:
        budget = self.budget_seconds
        return None if budget is None else budget - self.downtime

    @property
    def determinable(self) -> bool:
        """Enough of the period was measured for a verdict (coverage ≥ min_coverage)."""
        coverage = self.coverage
        return (
            coverage is not None
            and self.sla_availability is not None
            and coverage >= self.min_coverage - 1e-12
        )

    @property
    def met(self) -> bool | None:
        """True or False only with a target and enough coverage; None otherwise."""
        availability = self.sla_availability
        if self.target is None or availability is None or not self.determinable:
            return None
        return availability * 100 >= self.target - 1e-9

    @property
    def verdict(self) -> str | None:
        """``met``, ``missed``, ``not determinable`` (too little measured), or None
        (no SLA target)."""
        if self.target is None:
            return None
        if not self.determinable:
            return "not determinable"
        return "met" if self.met else "missed"


def availability(
    intervals: Iterable[StatusInterval],
    start: float,
    end: float,
    *,
    now: float | None = None,
    degraded_is_down: bool = False,
    target: float | None = None,
    min_coverage: float = 0.0,
) -> Availability:
    """Figures for ``[start, end)`` from a subscription's status intervals.

    An interval still open (``end is None``) lasts until ``now``. A period not
    over yet is measured up to ``now`` (a month-to-date figure); its downtime
    budget is still the whole period's.
    """
    horizon = end if now is None else max(start, min(end, now))
    seconds = dict.fromkeys(STATUSES, 0.0)
    covered: list[tuple[float, float]] = []
    for interval in sorted(intervals, key=lambda i: i.start):
        stop = interval.end if interval.end is not None else horizon
        lo, hi = max(interval.start, start), min(stop, horizon)
        if hi <= lo:
            continue
        status = interval.status if interval.status in seconds else "unknown"
        seconds[status] += hi - lo
        if status != "unknown":
            covered.append((lo, hi))
    gaps = tuple(_gaps(covered, start, horizon))
    seconds["unknown"] = sum(gap.seconds for gap in gaps)
    return Availability(
        start, horizon, seconds, degraded_is_down, gaps, target, end - start, min_coverage
    )


def _gaps(covered: Sequence[tuple[float, float]], start: float, end: float) -> list[Gap]:
    """The parts of ``[start, end)`` no measured interval covers."""
    gaps = []
    cursor = start
    for lo, hi in sorted(covered):
        if lo > cursor:
            gaps.append(Gap(cursor, lo))
        cursor = max(cursor, hi)
    if cursor < end:
        gaps.append(Gap(cursor, end))
    return gaps


@dataclass(frozen=True, slots=True)
class IncidentTimes:
    """When an incident was detected, acknowledged, escalated, sent to the vendor, resolved."""

    id: str
    customer: str
    service: str
    severity: str
    opened_at: float
    acknowledged_at: float | None
    resolved_at: float | None
    escalations: tuple[float, ...] = ()
    vendor_case_at: float | None = None
    vendor_case: str | None = None
    acknowledged_by: str | None = None
    silent: bool = False  # opened and closed inside maintenance, nobody paged: no response due
    status: str = "down"  # what the service was: down, or degraded (slow, partly failing)

    @property
    def time_to_acknowledge(self) -> float | None:
        return None if self.acknowledged_at is None else self.acknowledged_at - self.opened_at

    @property
    def time_to_resolve(self) -> float | None:
        return None if self.resolved_at is None else self.resolved_at - self.opened_at


@dataclass(frozen=True, slots=True)
class ResponseStats:
    incidents: int
    acknowledged: int
    resolved: int
    mtta: float | None  # mean time to acknowledge, seconds
    mttr: float | None  # mean time to resolve, seconds
    breaches: tuple[str, ...] = field(default_factory=tuple)  # ids breaching the policy


def response_stats(
    incidents: Sequence[IncidentTimes],
    *,
    ack_within: float | None = None,
    resolve_within: float | None = None,
    now: float | None = None,
) -> ResponseStats:
    """MTTA and MTTR; incidents acknowledged or resolved later than the policy are breaches.

    Silent incidents (wholly inside maintenance, nobody paged) owe no response
    and are left out; reports still list them.

    An incident never acknowledged is a breach if it lasted (or, open at ``now``,
    has lasted) longer than ``ack_within``; one that recovered sooner needed no one.
    """
    incidents = [incident for incident in incidents if not incident.silent]
    acks = [i.time_to_acknowledge for i in incidents if i.time_to_acknowledge is not None]
    fixes = [i.time_to_resolve for i in incidents if i.time_to_resolve is not None]
    breaches = []
    for incident in incidents:
        late_ack = False
        if ack_within is not None:
            if incident.acknowledged_at is not None:
                late_ack = incident.acknowledged_at - incident.opened_at > ack_within
            else:  # never acknowledged: late if it lasted (or lasts) beyond the deadline
                end = incident.resolved_at if incident.resolved_at is not None else now
                late_ack = end is not None and end - incident.opened_at > ack_within
        ttr = incident.time_to_resolve
        late_fix = resolve_within is not None and ttr is not None and ttr > resolve_within
        if late_ack or late_fix:
            breaches.append(incident.id)
    return ResponseStats(
        incidents=len(incidents),
        acknowledged=len(acks),
        resolved=len(fixes),
        mtta=sum(acks) / len(acks) if acks else None,
        mttr=sum(fixes) / len(fixes) if fixes else None,
        breaches=tuple(breaches),
    )
