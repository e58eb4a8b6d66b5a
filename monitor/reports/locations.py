"""Availability by location: what each listed location saw of a target. Pure: no I/O.

A target probed from listed locations has one status, decided by the quorum (the
subscription's figures come from it). Each location's own view is in its recorded
changes (``location_history``): "bj-unicom saw Exchange down from 10:02". Turned into
status intervals, a location's changes go through the very ``monitor.sla.availability``
the subscription's figures use, so the rules are the same: unknown time (the location
said so, or nothing is known: before its first change, or no change at all) is neither up
nor down; degraded counts as down only where the service's SLA says so; maintenance is
excluded; below ``reports.min_coverage`` the verdict is not determinable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from monitor.engine.model import StatusInterval
from monitor.probe import Status
from monitor.sla import Availability, availability


class RecordedChange(Protocol):
    """A line of a location's history (``monitor.store.locations.LocationChange``)."""

    @property
    def target_id(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def since(self) -> float: ...


@dataclass(frozen=True, slots=True)
class LocatedTarget:
    """A check probed from listed locations (``locations:`` in the config)."""

    target_id: str
    check: str
    locations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocationFigures:
    """What one location saw of one target over the period."""

    target_id: str
    check: str
    location: str
    availability: Availability


def by_target(changes: Iterable[RecordedChange]) -> dict[str, list[RecordedChange]]:
    """The changes of each target (grouped once for a whole report)."""
    grouped: dict[str, list[RecordedChange]] = defaultdict(list)
    for change in changes:
        grouped[change.target_id].append(change)
    return grouped


def location_intervals(changes: Iterable[RecordedChange]) -> list[StatusInterval]:
    """One location's changes (on one target) as status intervals: each lasts until the
    next change, the last one is still open. Sorted by the location's own times, so an
    agent's changes that reached the store late fall where they happened."""
    ordered = sorted(changes, key=lambda c: c.since)
    ends: list[float | None] = [c.since for c in ordered[1:]]
    ends.append(None)  # the last is still open (none at all: nothing known)
    return [
        # customer and service left blank: the maths reads only the status and the times
        StatusInterval("", "", _status(change.status), change.since, end)
        for change, end in zip(ordered, ends, strict=False)
    ]


def _status(value: str) -> Status:
    """A status the history holds; anything else (a newer version's word) is unknown."""
    try:
        return Status(value)
    except ValueError:
        return Status.UNKNOWN


def location_figures(
    targets: Sequence[LocatedTarget],
    changes: Mapping[str, Sequence[RecordedChange]],
    start: float,
    end: float,
    *,
    now: float,
    degraded_is_down: bool,
    target: float | None,
    min_coverage: float,
) -> tuple[LocationFigures, ...]:
    """Each target's figures for each of its listed locations over ``[start, end)``, in the
    order the config lists them. ``changes`` maps a target id to its changes (any order,
    those before ``start`` included: the last of them is the status the period began in).
    A location with no change at all has 0 % coverage; changes of a location no longer
    listed are left out."""
    figures = []
    for located in targets:
        of_location: dict[str, list[RecordedChange]] = defaultdict(list)
        for change in changes.get(located.target_id, ()):
            of_location[change.location].append(change)
        for location in located.locations:
            figures.append(
                LocationFigures(
                    located.target_id,
                    located.check,
                    location,
                    availability(
                        location_intervals(of_location.get(location, ())),
                        start,
                        end,
                        now=now,
                        degraded_is_down=degraded_is_down,
                        target=target,
                        min_coverage=min_coverage,
                    ),
                )
            )
    return tuple(figures)
