"""Where each location's reports meet: the latest report of every location on every target.

A node probes the targets listed for its location and files its own reports
here at once. In a cluster it also writes them to the store (a batch per tick)
and reads the others' reports from it, so the node that decides a target's
status (see ``monitor.engine.quorum``) has every location's latest word within
about one tick. Without a cluster there are only this node's reports: targets
listed for other locations stay ``unknown``, as they would with those
locations' nodes gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from monitor.engine.quorum import LocationReport
from monitor.probe import Status
from monitor.store import Store
from monitor.store.locations import LocationChange, LocationReportRow

log = logging.getLogger(__name__)

# A transaction that started before another may commit after it: each read goes back this
# far behind the last one (reports already known are simply filed again).
REREAD_SECONDS = 5.0
HISTORY_BACKLOG = 50_000  # changes held while the store is down; older ones are dropped


class LocationDesk:
    """Every location's latest report on every target, and their exchange through the store."""

    def __init__(
        self,
        node_id: str,
        location: str,
        store: Store | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.location = location
        self.store = store  # None without a cluster
        self.history: Store | None = None  # where changes are recorded (once it is open)
        self.wall = wall
        self._reports: dict[str, dict[str, LocationReport]] = {}
        self._outgoing: list[LocationReportRow] = []
        self._changes: list[LocationChange] = []
        self._read_until = 0.0  # the database's clock at the last read (0: read everything)
        self.heard: dict[str, float] = {}  # location -> time of its newest report (any target)

    def reports(self, target_id: str) -> dict[str, LocationReport]:
        """The latest report of each location on ``target_id`` (none yet: empty)."""
        return self._reports.get(target_id, {})

    def file(self, target_id: str, report: LocationReport) -> bool:
        """Keep ``report`` if it is the newest of its location; whether it was."""
        known = self._reports.setdefault(target_id, {})
        previous = known.get(report.location)
        if previous is not None and previous.at > report.at:
            return False
        known[report.location] = report
        if report.at > self.heard.get(report.location, 0.0):
            self.heard[report.location] = report.at
        return True

    def record_change(self, target_id: str, report: LocationReport) -> None:
        """``report``'s location began to see its status at ``report.since``: a line of the
        history, written at the next exchange at that time, however late it came."""
        self._changes.append(
            LocationChange(
                target_id,
                report.location,
                report.status.value,
                report.since,
                report.reason,
                report.node,
            )
        )

    def report(self, target_id: str, report: LocationReport) -> None:
        """This node's own report: filed now, and sent to the others at the next exchange."""
        self.file(target_id, report)
        if self.store is not None:
            self._outgoing.append(
                LocationReportRow(
                    target_id,
                    report.location,
                    report.node,
                    report.status.value,
                    report.reason,
                    report.at,
                    report.since,
                )
            )

    def forget(self, target_ids: Iterable[str]) -> None:
        for target_id in target_ids:
            self._reports.pop(target_id, None)

    def read_everything_again(self) -> None:
        """After a change of shard: targets this node now decides need the reports it
        skipped while it did not."""
        self._read_until = 0.0

    async def exchange(self) -> set[str]:
        """Record the changes seen, send this node's reports, read the others'; the targets
        with news."""
        await self._write_history()
        if self.store is None:
            return set()
        outgoing, self._outgoing = self._outgoing, []
        try:
            if outgoing:
                await self.store.write_location_reports(outgoing)
            rows, now = await self.store.location_reports(self._read_until - REREAD_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # kept for the next tick (bounded: only the latest per target matters)
            self._outgoing = (outgoing + self._outgoing)[-50_000:]
            log.warning(
                "event=location_reports_failed error=%s action=%r",
                type(exc).__name__,
                "check the connection to PostgreSQL; other locations' reports wait",
            )
            return set()
        self._read_until = now
        news = set()
        for row in rows:
            if row.location == self.location and row.node_id == self.node_id:
                continue  # filed when it was made
            report = LocationReport(
                row.location, Status(row.status), row.reason, row.at, row.since, row.node_id
            )
            if self.file(row.target_id, report):
                news.add(row.target_id)
        return news

    async def _write_history(self) -> None:
        changes, self._changes = self._changes, []
        if not changes or self.history is None:
            self._changes = (changes + self._changes)[-HISTORY_BACKLOG:]
            return
        try:
            await self.history.record_location_changes(changes, self.wall())
        except asyncio.CancelledError:
            self._changes = changes + self._changes
            raise
        except Exception as exc:
            self._changes = (changes + self._changes)[-HISTORY_BACKLOG:]
            log.warning(
                "event=location_history_failed error=%s held=%d action=%r",
                type(exc).__name__,
                len(self._changes),
                "check the store; the changes are written when it answers",
            )
