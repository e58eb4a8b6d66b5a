"""Maintenance windows: one-off or recurring in a time zone, per customer, service or both.

Recurring windows repeat the first occurrence's local wall-clock start and its
duration, so a "Sunday 02:00–04:00 Beijing time" window stays at 02:00 local
whatever the UTC offset does. A monthly window on the 31st has no occurrence in
a shorter month.

A window that cannot be evaluated (a time zone this system does not know, e.g.
from a store row written before zones were checked, or times out of range) is
skipped — it mutes nothing and has no occurrences — and logged once, so that
ticks, status changes and reports go on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.engine.model import MaintenanceWindow

log = logging.getLogger(__name__)

RECURRENCES = ("daily", "weekly", "monthly")
PERIOD_DAYS = {"daily": 1, "weekly": 7, "monthly": 28}
"""The shortest gap between two occurrences: no occurrence may be longer."""

_UNUSABLE = (ZoneInfoNotFoundError, ValueError, OverflowError, OSError)
_reported: set[str] = set()  # window ids already logged as unusable (bounded below)
_MAX_REPORTED = 10_000


def applies_to(window: MaintenanceWindow, customer: str, service: str) -> bool:
    return window.customer in (None, customer) and window.service in (None, service)


def _skip(window: MaintenanceWindow, error: Exception) -> None:
    """Log, once per window id, that a window cannot be evaluated."""
    if window.id in _reported:
        return
    if len(_reported) >= _MAX_REPORTED:
        _reported.clear()
    _reported.add(window.id)
    log.error(
        "event=maintenance_window_skipped id=%s timezone=%r error=%r action=%r",
        window.id,
        window.timezone,
        str(error),
        "delete the window and add it again with a valid time zone and times",
    )


def _check_times(window: MaintenanceWindow) -> None:
    """ValueError or OverflowError unless both ends of the window are representable times."""
    for at in (window.starts_at, window.ends_at):
        datetime.fromtimestamp(at, UTC)


def _occurrence_starts(window: MaintenanceWindow, now: float) -> Iterator[datetime]:
    """Local start times of the occurrences that could contain ``now``."""
    _check_times(window)
    zone = ZoneInfo(window.timezone)
    first = datetime.fromtimestamp(window.starts_at, zone)
    here = datetime.fromtimestamp(now, zone)
    if window.recurrence == "daily":
        for days_back in (0, 1):
            day = here.date() - timedelta(days=days_back)
            yield datetime.combine(day, first.timetz())
    elif window.recurrence == "weekly":
        offset = (here.weekday() - first.weekday()) % 7
        for weeks_back in (0, 1):
            day = here.date() - timedelta(days=offset + 7 * weeks_back)
            yield datetime.combine(day, first.timetz())
    elif window.recurrence == "monthly":
        year, month = here.year, here.month
        for _ in range(2):
            try:
                yield first.replace(year=year, month=month)
            except ValueError:  # the 31st in a shorter month: no occurrence
                pass
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    else:
        raise ValueError(f"unknown recurrence {window.recurrence!r}")


def is_active(window: MaintenanceWindow, now: float) -> bool:
    """Whether an occurrence of the window contains ``now`` (False if it cannot be told)."""
    if now < window.starts_at:
        return False
    duration = window.ends_at - window.starts_at
    try:
        if window.recurrence is None:  # its time zone does not matter
            _check_times(window)
            return now < window.ends_at
        for start in _occurrence_starts(window, now):
            begins = start.timestamp()
            if begins <= now < begins + duration and begins >= window.starts_at - 1:
                return True
    except _UNUSABLE as exc:
        _skip(window, exc)
    return False


def occurrences(window: MaintenanceWindow, start: float, end: float) -> list[tuple[float, float]]:
    """(begins, ends) of each occurrence of the window that overlaps [start, end).

    Candidates are computed, not searched for: at most one per day of the range
    (daily), per week (weekly) or per month (monthly).
    """
    duration = window.ends_at - window.starts_at
    try:
        _check_times(window)
        if window.recurrence is None:
            overlaps = window.starts_at < end and window.ends_at > start
            return [(window.starts_at, window.ends_at)] if overlaps else []
        if window.recurrence not in RECURRENCES:
            raise ValueError(f"unknown recurrence {window.recurrence!r}")
        if end <= start:
            return []
        zone = ZoneInfo(window.timezone)
        first = datetime.fromtimestamp(window.starts_at, zone)
        # local dates from just before the range (an occurrence may run into it) to its end
        since = datetime.fromtimestamp(max(start - duration, window.starts_at), zone).date()
        until = datetime.fromtimestamp(end, zone).date()
        found = []
        for day in _candidate_days(window.recurrence, first.date(), since, until):
            at = datetime.combine(day, first.timetz()).timestamp()
            if at >= window.starts_at - 1 and at < end and at + duration > start:
                found.append((at, at + duration))
        return found
    except _UNUSABLE as exc:
        _skip(window, exc)
        return []


def _candidate_days(recurrence: str, first: date, since: date, until: date) -> Iterator[date]:
    """The local dates in [since, until] on which an occurrence begins."""
    if recurrence == "monthly":
        year, month = since.year, since.month
        while (year, month) <= (until.year, until.month):
            try:
                day = date(year, month, first.day)
            except ValueError:  # the 31st in a shorter month: no occurrence
                day = None
            if day is not None and since <= day <= until:
                yield day
            year, month = (year, month + 1) if month < 12 else (year + 1, 1)
        return
    step = 7 if recurrence == "weekly" else 1
    day = since + timedelta(days=(first.weekday() - since.weekday()) % step)
    while day <= until:
        yield day
        day += timedelta(days=step)


def in_maintenance(
    windows: Iterable[MaintenanceWindow], customer: str, service: str, now: float
) -> MaintenanceWindow | None:
    """The window muting this subscription now, if any."""
    for window in windows:
        if applies_to(window, customer, service) and is_active(window, now):
            return window
    return None
