"""Maintenance windows: one-off or recurring in a time zone, per customer, service or both.

Recurring windows repeat the first occurrence's local wall-clock start and its
duration, so a "Sunday 02:00–04:00 Beijing time" window stays at 02:00 local
whatever the UTC offset does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor.engine.model import MaintenanceWindow

RECURRENCES = ("daily", "weekly", "monthly")


def applies_to(window: MaintenanceWindow, customer: str, service: str) -> bool:
    return window.customer in (None, customer) and window.service in (None, service)


def _occurrence_starts(window: MaintenanceWindow, now: float) -> Iterator[datetime]:
    """Local start times of the occurrences that could contain ``now``."""
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
        yield first


def is_active(window: MaintenanceWindow, now: float) -> bool:
    if now < window.starts_at:
        return False
    duration = window.ends_at - window.starts_at
    for start in _occurrence_starts(window, now):
        begins = start.timestamp()
        if begins <= now < begins + duration and begins >= window.starts_at - 1:
            return True
    return False


def occurrences(window: MaintenanceWindow, start: float, end: float) -> list[tuple[float, float]]:
    """(begins, ends) of each occurrence of the window that overlaps [start, end)."""
    duration = window.ends_at - window.starts_at
    if window.recurrence is None:
        overlaps = window.starts_at < end and window.ends_at > start
        return [(window.starts_at, window.ends_at)] if overlaps else []
    zone = ZoneInfo(window.timezone)
    first = datetime.fromtimestamp(window.starts_at, zone)
    # local dates from just before the range (an occurrence may run into it) to its end
    day = datetime.fromtimestamp(max(start - duration, window.starts_at), zone).date()
    last = datetime.fromtimestamp(end, zone).date()
    found = []
    while day <= last:
        begins = _occurrence_on(window.recurrence, first, day)
        if begins is not None:
            at = begins.timestamp()
            if at >= window.starts_at - 1 and at < end and at + duration > start:
                found.append((at, at + duration))
        day += timedelta(days=1)
    return found


def _occurrence_on(recurrence: str, first: datetime, day: date) -> datetime | None:
    """The local start of the occurrence that begins on ``day``, if one does."""
    if recurrence == "weekly" and day.weekday() != first.weekday():
        return None
    if recurrence == "monthly" and day.day != first.day:
        return None  # so the 31st has no occurrence in a shorter month, as is_active has it
    return datetime.combine(day, first.timetz())


def in_maintenance(
    windows: Iterable[MaintenanceWindow], customer: str, service: str, now: float
) -> MaintenanceWindow | None:
    """The window muting this subscription now, if any."""
    for window in windows:
        if applies_to(window, customer, service) and is_active(window, now):
            return window
    return None
