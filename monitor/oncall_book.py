"""The on-call schedules in force: config's rotations plus the overrides in the store.

The incident manager asks it who a step's ``schedule:X`` pages (``lookup``); the API and
the CLI read who is on call now and next, its shifts (the iCal feed) and add or delete
overrides through it, so memory and store agree. Overrides are re-read from the store
on every tick (``refresh``), so one added through another node counts here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge

from monitor.config.models import ConfigBase
from monitor.engine.oncall import (
    DAY,
    OnCall,
    Override,
    Schedule,
    Shift,
    gaps,
    next_shift,
    on_call,
    shifts,
)
from monitor.schedule_config import PersonSpec
from monitor.store import Store

log = logging.getLogger(__name__)

GAP_HORIZON = 7 * DAY  # a gap this soon is warned about (log, metric, daily ops message)
KEPT_PAST = 30 * DAY  # ended overrides still shown (the calendar feed's recent past)


def gap_gauge(registry: CollectorRegistry) -> Gauge:
    """``csp_monitor_oncall_gap_seconds{schedule}``, set at start, reload, every override
    change and the daily check (0: someone is on call all week)."""
    return Gauge(
        "csp_monitor_oncall_gap_seconds",
        "Seconds with nobody on call in the next 7 days, per schedule",
        ["schedule"],
        registry=registry,
    )


class OverrideRefused(ValueError):
    """An override that names an unknown schedule or person; ``field`` says which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class OnCallNow:
    """One schedule's answer to "who is on call": now, and who comes next."""

    schedule: str
    current: OnCall | None
    current_until: float | None  # when the current shift ends (None: not within 35 days)
    next: Shift | None


class OnCallBook:
    def __init__(
        self,
        store: Store,
        wall: Callable[[], float] = time.time,
        gap_gauge: Gauge | None = None,
    ) -> None:
        self._store = store
        self._wall = wall
        self.schedules: dict[str, Schedule] = {}
        self.zones: dict[str, str] = {}  # each schedule's own time zone
        self.people: dict[str, PersonSpec] = {}
        self.overrides: list[Override] = []
        self._gap_seconds = gap_gauge  # see gap_gauge()
        self._exported: set[str] = set()  # schedules with a gap series

    def configure(self, config: ConfigBase) -> None:
        """Schedules and people from a (re)loaded config."""
        self.schedules = {name: spec.schedule(name) for name, spec in config.schedules.items()}
        self.zones = {name: spec.time_zone for name, spec in config.schedules.items()}
        self.people = dict(config.people)
        if self._gap_seconds is not None:
            for name in self._exported - set(self.schedules):  # a removed schedule's series
                self._gap_seconds.remove(name)
            self._exported &= set(self.schedules)

    async def refresh(self) -> None:
        """Re-read the overrides (another node, or the CLI, may have changed them)."""
        if self.schedules or self.overrides:
            self.overrides = await self._store.list_overrides(self._wall() - KEPT_PAST)

    # ------------------------------------------------------------------ questions

    def lookup(self, schedule: str, at: float) -> str | None:
        """The person on call in ``schedule`` at ``at`` (None: nobody, or no such schedule)."""
        found = self.schedules.get(schedule)
        current = on_call(found, self.overrides, at) if found is not None else None
        return current.person if current is not None else None

    def now_and_next(self, at: float) -> list[OnCallNow]:
        """Who is on call at ``at`` in every schedule, and who comes next."""
        answers = []
        for name, schedule in sorted(self.schedules.items()):
            coming = next_shift(schedule, self.overrides, at)
            answers.append(
                OnCallNow(
                    name,
                    on_call(schedule, self.overrides, at),
                    coming.start if coming is not None else None,
                    coming,
                )
            )
        return answers

    def shifts(self, schedule: str, start: float, end: float) -> list[Shift]:
        return shifts(self.schedules[schedule], self.overrides, start, end)

    def gaps(self, at: float, horizon: float = GAP_HORIZON) -> dict[str, list[Shift]]:
        """Per schedule, the stretches with nobody on call from ``at`` for ``horizon``."""
        return {
            name: gaps(schedule, self.overrides, at, at + horizon)
            for name, schedule in sorted(self.schedules.items())
        }

    def check_gaps(self, at: float) -> dict[str, list[Shift]]:
        """The gaps of the next 7 days, logged (a warning each) and exported as a metric."""
        found = self.gaps(at)
        for name, stretches in found.items():
            if self._gap_seconds is not None:
                self._gap_seconds.labels(name).set(sum(s.end - s.start for s in stretches))
                self._exported.add(name)
            if stretches:  # one line a schedule: a nights-only rota has a gap every day
                first = stretches[0]
                log.warning(
                    "event=oncall_gap schedule=%s first_start=%s first_end=%s gaps=%d "
                    "hours=%.1f action=%r",
                    name,
                    _iso(first.start),
                    _iso(first.end),
                    len(stretches),
                    sum(s.end - s.start for s in stretches) / 3600,
                    "nobody is on call then in the next 7 days: add an override "
                    "(csp-monitor oncall override add) or another layer",
                )
        return found

    # ------------------------------------------------------------------ changes

    def check_override(self, override: Override) -> None:
        """OverrideRefused unless its schedule and people are known."""
        if override.schedule not in self.schedules:
            allowed = ", ".join(sorted(self.schedules)) or "none configured"
            raise OverrideRefused(
                "schedule", f"unknown schedule {override.schedule!r} (allowed: {allowed})"
            )
        for field, person in (("person", override.person), ("covers", override.covers)):
            if person is not None and person not in self.people:
                allowed = ", ".join(sorted(self.people)) or "none configured"
                raise OverrideRefused(field, f"unknown person {person!r} (allowed: {allowed})")

    async def add(self, override: Override) -> Override:
        """Store ``override`` (OverrideRefused for an unknown schedule or person)."""
        self.check_override(override)
        stored = await self._store.add_override(override)
        self.overrides.append(stored)
        log.info(
            "event=oncall_override_added id=%s schedule=%s person=%s covers=%s start=%s "
            "end=%s by=%s",
            stored.id,
            stored.schedule,
            stored.person,
            stored.covers or "-",
            _iso(stored.starts_at),
            _iso(stored.ends_at),
            stored.created_by,
        )
        self.check_gaps(self._wall())
        return stored

    async def delete(self, override_id: str, actor: str) -> bool:
        deleted = await self._store.delete_override(override_id, actor=actor, at=self._wall())
        self.overrides = [o for o in self.overrides if o.id != override_id]
        if deleted:
            log.info("event=oncall_override_deleted id=%s by=%s", override_id, actor)
            self.check_gaps(self._wall())
        return deleted


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
