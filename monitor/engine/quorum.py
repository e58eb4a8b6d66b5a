"""A target probed from several locations: its status from each location's latest report.

Pure code: no I/O, time comes in as an argument. Each location applies the
target's thresholds to its own probes (so a location's ``down`` is already
confirmed there) and reports its status with the reason of its last result.
Here the reports become one status:

* ``down`` only when at least ``quorum`` locations say down: one vantage point
  cannot tell a vendor outage from a broken path to the vendor;
* fewer say down: ``degraded``, naming the locations, e.g. "down from bj-unicom
  (connection timed out), up from sh-telecom", so the NOC sees a path problem;
* a location that has not reported within two intervals is ``unknown``, never
  down (its node or agent may be gone; that says nothing about the target);
* fewer locations report than a quorum needs: ``unknown`` (we cannot vouch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.probe import Status

SILENT_AFTER_INTERVALS = 2.0  # a location silent this many intervals is unknown


@dataclass(frozen=True, slots=True)
class LocationReport:
    """What one location last said of a target."""

    location: str
    status: Status  # confirmed at that location (its thresholds applied)
    reason: str  # of its last result
    at: float  # when it probed last
    since: float = 0.0  # since when that location has seen this status
    node: str = ""  # who probed (a node or an agent), for people looking at it


@dataclass(frozen=True, slots=True)
class Verdict:
    """The target's status from its locations, why, and how each location was counted."""

    status: Status
    reason: str
    since: float  # when the status began, as far as the reports tell
    counted: tuple[tuple[str, Status], ...]  # each listed location, silent ones unknown

    @property
    def down_from(self) -> tuple[str, ...]:
        """The locations that say down: correlation groups customers seen down from the
        same locations only (monitor/engine/correlation.py)."""
        return tuple(location for location, status in self.counted if status is Status.DOWN)


# in a reason, the locations are named in this order of what they say
_ORDER = (Status.DOWN, Status.DEGRADED, Status.UNKNOWN, Status.UP)


def silent(report: LocationReport | None, now: float, interval: float, grace: float = 0.0) -> bool:
    """Whether a location has not reported within two intervals (plus ``grace``: the time
    reports take to travel between nodes)."""
    return report is None or now - report.at > SILENT_AFTER_INTERVALS * interval + grace


def counted_status(
    report: LocationReport | None, now: float, interval: float, grace: float = 0.0
) -> Status:
    """What a location counts as: its report, or unknown when it has gone silent."""
    if report is None or silent(report, now, interval, grace):
        return Status.UNKNOWN
    if report.status is Status.MAINTENANCE:
        return Status.UNKNOWN
    return report.status


def decide(
    locations: Sequence[str],
    quorum: int,
    reports: Mapping[str, LocationReport],
    now: float,
    interval: float,
    grace: float = 0.0,
) -> Verdict:
    """The status of a target listed for ``locations`` from their latest ``reports``;
    ``grace`` is how late a report may arrive (the exchange between nodes)."""
    counted = tuple(
        (location, counted_status(reports.get(location), now, interval, grace))
        for location in locations
    )
    by_status: dict[Status, list[str]] = {status: [] for status in _ORDER}
    for location, status in counted:
        by_status[status].append(location)
    down, reporting = by_status[Status.DOWN], len(locations) - len(by_status[Status.UNKNOWN])
    if len(down) >= quorum:
        status = Status.DOWN
        # down since the quorum-th location confirmed it
        since = sorted(reports[name].since for name in down)[quorum - 1]
    elif reporting < quorum:
        status, since = Status.UNKNOWN, now
    elif down or by_status[Status.DEGRADED]:
        status = Status.DEGRADED
        since = min(reports[name].since for name in down + by_status[Status.DEGRADED])
    else:
        status = Status.UP
        since = max(reports[name].since for name in by_status[Status.UP])
    quiet = [
        name
        for name in by_status[Status.UNKNOWN]
        if silent(reports.get(name), now, interval, grace)
    ]
    return Verdict(status, _reason(by_status, quiet, reports), since, counted)


def _reason(
    by_status: Mapping[Status, list[str]],
    silent: Sequence[str],
    reports: Mapping[str, LocationReport],
) -> str:
    """e.g. "down from bj-unicom (connection timed out), up from sh-telecom"."""
    parts = []
    for status in _ORDER:
        names = [name for name in by_status[status] if name not in silent]
        if names:
            named = ", ".join(
                _with_reason(name, reports) if status is not Status.UP else name for name in names
            )
            parts.append(f"{status.value} from {named}")
    if silent:
        parts.append(f"no recent report from {', '.join(silent)}")
    return ", ".join(parts)


def _with_reason(name: str, reports: Mapping[str, LocationReport]) -> str:
    reason = reports[name].reason
    return f"{name} ({reason})" if reason else name
