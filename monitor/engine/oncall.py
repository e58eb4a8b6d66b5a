"""Who is on call when: rotations, layers and overrides, as pure functions of time.

A schedule is a stack of layers. A layer is a rotation: its members take turns of
``turn_days`` local days, handing over at ``handoff`` (local time in the layer's zone)
counted from its ``start`` day; a layer may be restricted to some hours of the day
(``20:00-08:00``, crossing midnight) and some days of the week (the day a window
starts on). A later layer wins wherever it has someone; lower layers fill the rest.
An override puts one person on call for a period above every layer; one that
``covers`` someone applies only while the layers would have had that person.

Handoffs are local wall-clock times: across a DST change a turn is 23 or 25 hours
long, and the handoff stays at 09:00 local. A handoff at a time the clock skips
(01:30 on a spring-forward night in London) happens as if the clock had not jumped
(01:30 GMT, which the clock shows as 02:30 summer time); one inside the hour a
fall-back repeats happens once, at its first occurrence. Times are compared as
instants, so a turn never goes back and forth.

No I/O and no clock: every function takes the time (Unix seconds) it is asked about,
so tests walk through months of rotations in milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from functools import lru_cache
from zoneinfo import ZoneInfo

DAY = 86400.0
SCHEDULE_PREFIX = "schedule:"
"""A step recipient ``schedule:primary`` stands for whoever is on call in ``primary``."""
PERSON_PREFIX = "person:"
"""A page recipient ``person:wang.wei``: that person, at the address of each channel's kind."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One rotation of a schedule."""

    name: str
    members: tuple[str, ...]  # person ids, in turn order
    start: date  # members[0]'s first turn begins this day at ``handoff``
    zone: str  # IANA name the handoff and the hours are read in
    handoff: clock_time = clock_time(9, 0)
    turn_days: int = 7
    hours: tuple[clock_time, clock_time] | None = None  # on call only inside [from, to)
    days: frozenset[int] | None = None  # weekdays (0 = Monday) a window may start on


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    layers: tuple[Layer, ...]  # lowest first: a later layer wins where it has someone


@dataclass(frozen=True, slots=True)
class Override:
    """``person`` is on call in ``schedule`` from ``starts_at`` to ``ends_at``."""

    id: str
    schedule: str
    person: str
    starts_at: float
    ends_at: float
    covers: str | None = None  # only while the layers would have had this person
    reason: str = ""
    created_by: str | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OnCall:
    person: str
    source: str  # "layer:<name>" or "override:<id>"


@dataclass(frozen=True, slots=True)
class Shift:
    """A stretch of time with one person on call (``person`` None: nobody, a gap)."""

    start: float
    end: float
    person: str | None
    source: str | None


def schedule_name(recipient: str) -> str | None:
    """``primary`` for the step recipient ``schedule:primary``; None for an address."""
    if recipient.startswith(SCHEDULE_PREFIX):
        return recipient.removeprefix(SCHEDULE_PREFIX)
    return None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _instant(day: date, at: clock_time, zone: str) -> float:
    """The Unix time of local ``day`` ``at`` in ``zone`` (PEP 495 ``fold=0``: the first
    of a repeated hour; a skipped time read with the offset from before the jump)."""
    return datetime.combine(day, at, tzinfo=_zone(zone)).timestamp()


def _local_day(at: float, zone: str) -> date:
    return datetime.fromtimestamp(at, _zone(zone)).date()


def _turn_day(layer: Layer, at: float) -> date:
    """The local day whose handoff began the turn running at ``at``."""
    day = _local_day(at, layer.zone)
    while at < _instant(day, layer.handoff, layer.zone):
        day -= timedelta(days=1)
    while at >= _instant(day + timedelta(days=1), layer.handoff, layer.zone):
        day += timedelta(days=1)
    return day


def rotation_person(layer: Layer, at: float) -> str | None:
    """Whose turn it is in ``layer`` at ``at`` (hours ignored); None before its start."""
    if not layer.members:
        return None
    elapsed = (_turn_day(layer, at) - layer.start).days
    if elapsed < 0:
        return None
    return layer.members[(elapsed // layer.turn_days) % len(layer.members)]


def _window(layer: Layer, day: date) -> tuple[float, float]:
    """The restriction window starting on local ``day``."""
    assert layer.hours is not None
    begin, end = layer.hours
    end_day = day if end > begin else day + timedelta(days=1)
    return _instant(day, begin, layer.zone), _instant(end_day, end, layer.zone)


def layer_active(layer: Layer, at: float) -> bool:
    """Whether ``at`` is inside the layer's hours and days (always, without them)."""
    if layer.hours is None and layer.days is None:
        return True
    today = _local_day(at, layer.zone)
    if layer.hours is None:  # whole days
        return layer.days is None or today.weekday() in layer.days
    for day in (today - timedelta(days=1), today):
        if layer.days is not None and day.weekday() not in layer.days:
            continue
        begin, end = _window(layer, day)
        if begin <= at < end:
            return True
    return False


def layer_person(layer: Layer, at: float) -> str | None:
    """Who the layer has on call at ``at``: its rotation's person inside its hours."""
    return rotation_person(layer, at) if layer_active(layer, at) else None


def layered(schedule: Schedule, at: float) -> OnCall | None:
    """Who the layers put on call (no overrides): the highest layer with someone."""
    for layer in reversed(schedule.layers):
        person = layer_person(layer, at)
        if person is not None:
            return OnCall(person, f"layer:{layer.name}")
    return None


def on_call(schedule: Schedule, overrides: Sequence[Override], at: float) -> OnCall | None:
    """Who is on call in ``schedule`` at ``at``: the newest override in force, else the
    layers. An override that ``covers`` someone applies only during their time."""
    below = layered(schedule, at)
    chosen: Override | None = None
    for override in overrides:
        if override.schedule != schedule.name or not override.starts_at <= at < override.ends_at:
            continue
        if override.covers is not None and (below is None or below.person != override.covers):
            continue
        if chosen is None or (override.created_at, override.id) >= (chosen.created_at, chosen.id):
            chosen = override
    if chosen is not None:
        return OnCall(chosen.person, f"override:{chosen.id}")
    return below


def _boundaries(
    schedule: Schedule, overrides: Iterable[Override], start: float, end: float
) -> list[float]:
    """Every instant in (start, end) at which who is on call may change."""
    found: set[float] = set()
    for layer in schedule.layers:
        day = _local_day(start, layer.zone) - timedelta(days=1)
        last = _local_day(end, layer.zone) + timedelta(days=1)
        while day <= last:  # bounded: one step per local day of the period
            found.add(_instant(day, layer.handoff, layer.zone))
            if layer.hours is not None:
                found.update(_window(layer, day))
            elif layer.days is not None:
                found.add(_instant(day, clock_time(0, 0), layer.zone))
            day += timedelta(days=1)
    for override in overrides:
        if override.schedule == schedule.name:
            found.update((override.starts_at, override.ends_at))
    return sorted(t for t in found if start < t < end)


def shifts(
    schedule: Schedule, overrides: Sequence[Override], start: float, end: float
) -> list[Shift]:
    """Who is on call from ``start`` to ``end``, as consecutive shifts (gaps included,
    with ``person`` None); neighbours with the same person and source are merged."""
    result: list[Shift] = []
    edges = [start, *_boundaries(schedule, overrides, start, end), end]
    for begin, finish in itertools.pairwise(edges):
        current = on_call(schedule, overrides, begin)
        person = current.person if current else None
        source = current.source if current else None
        if result and result[-1].person == person and result[-1].source == source:
            result[-1] = Shift(result[-1].start, finish, person, source)
        else:
            result.append(Shift(begin, finish, person, source))
    return result


def next_shift(
    schedule: Schedule, overrides: Sequence[Override], at: float, horizon: float = 35 * DAY
) -> Shift | None:
    """The first shift after the one running at ``at`` with another person (or a gap)
    within ``horizon``; None when nothing changes that soon."""
    current = on_call(schedule, overrides, at)
    person = current.person if current else None
    for shift in shifts(schedule, overrides, at, at + horizon):
        if shift.person != person:
            return shift
    return None


def gaps(
    schedule: Schedule, overrides: Sequence[Override], start: float, end: float
) -> list[Shift]:
    """The stretches between ``start`` and ``end`` with nobody on call."""
    return [shift for shift in shifts(schedule, overrides, start, end) if shift.person is None]
