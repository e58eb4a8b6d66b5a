"""Each location's latest report on each target it probes, shared through PostgreSQL.

The node of a location that probes a target writes its report here (one row per
target and location, overwritten); the node that decides the target's status
reads the rows written since its last read. ``written_at`` is the database's
clock, so readers on other hosts agree on what is new; a reader re-reads a few
seconds back (see ``monitor.locations``), because a transaction that started
before another may commit after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.store import schema
from monitor.store.cluster import database_time, db_now

_table = schema.location_reports
_CHUNK = 500  # rows per statement: well under the limit on bound parameters


@dataclass(frozen=True, slots=True)
class LocationReportRow:
    """One location's latest report on one target, as stored."""

    target_id: str
    location: str
    node_id: str
    status: str
    reason: str
    at: float
    since: float


async def write_reports(connection: AsyncConnection, reports: Sequence[LocationReportRow]) -> None:
    """Upsert the reports (the last one of a target and location wins)."""
    latest = {(r.target_id, r.location): r for r in sorted(reports, key=lambda r: r.at)}
    rows = [
        {
            "target_id": r.target_id,
            "location": r.location,
            "node_id": r.node_id,
            "status": r.status,
            "reason": r.reason,
            "at": r.at,
            "since": r.since,
        }
        for r in latest.values()
    ]
    for start in range(0, len(rows), _CHUNK):
        statement = postgresql.insert(_table).values(written_at=db_now())
        values = {
            name: statement.excluded[name]
            for name in ("node_id", "status", "reason", "at", "since", "written_at")
        }
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=[_table.c.target_id, _table.c.location],
                set_=values,
                # a late batch never overwrites a newer probe of the same location
                where=_table.c.at <= statement.excluded.at,
            ),
            rows[start : start + _CHUNK],
        )


async def read_reports(
    connection: AsyncConnection, written_after: float
) -> tuple[list[LocationReportRow], float]:
    """The reports written after ``written_after`` (database clock), and that clock's time."""
    now = await database_time(connection)
    rows = await connection.execute(select(_table).where(_table.c.written_at > written_after))
    return [
        LocationReportRow(
            r.target_id, r.location, r.node_id, r.status, r.reason, float(r.at), float(r.since)
        )
        for r in rows
    ], now
