"""Each location's reports: the latest on each target (PostgreSQL), and its history.

The latest report on each target it probes is shared through PostgreSQL.

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

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
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


_history = schema.location_history


@dataclass(frozen=True, slots=True)
class LocationChange:
    """A location began to see ``status`` on a target at ``since`` (its own clock)."""

    target_id: str
    location: str
    status: str
    since: float
    reason: str
    node_id: str


async def write_changes(
    connection: AsyncConnection, changes: Sequence[LocationChange], at: float
) -> int:
    """Add changes to the history; one already there (same target, location and time) is
    kept as it was. Returns how many were new."""
    rows = [
        {
            "target_id": c.target_id,
            "location": c.location,
            "status": c.status,
            "since": c.since,
            "reason": c.reason,
            "node_id": c.node_id,
            "written_at": at,
        }
        for c in changes
    ]
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    added = 0
    for row in rows:  # one by one for the count (changes are few: a status seldom changes)
        result = await connection.execute(
            insert(_history)
            .values(**row)
            .on_conflict_do_nothing(
                index_elements=[_history.c.target_id, _history.c.location, _history.c.since]
            )
        )
        added += result.rowcount or 0
    return added


async def read_changes(
    connection: AsyncConnection,
    start: float,
    end: float,
    target_ids: Sequence[str] | None = None,
) -> list[LocationChange]:
    """The changes of ``[start, end)``, oldest first, with the last one before ``start`` of
    each target and location (the status it was in when the period began)."""
    query = select(_history).where(_history.c.since < end)
    if target_ids is not None:
        query = query.where(_history.c.target_id.in_(list(target_ids)))
    older = _history.alias("older")
    # a change before the period counts only if it is the last one before it
    superseded = exists().where(
        and_(
            older.c.target_id == _history.c.target_id,
            older.c.location == _history.c.location,
            older.c.since > _history.c.since,
            older.c.since <= start,
        )
    )
    query = query.where(~superseded).order_by(_history.c.since, _history.c.id)
    return [
        LocationChange(r.target_id, r.location, r.status, float(r.since), r.reason, r.node_id)
        for r in await connection.execute(query)
    ]


async def prune_changes(connection: AsyncConnection, before: float) -> int:
    """Delete changes older than ``before`` but the last of each target and location before
    it: the status a location was in at ``before`` stays known."""
    newer = _history.alias("newer")
    result = await connection.execute(
        delete(_history)
        .where(
            _history.c.since < before,
            exists().where(
                and_(
                    newer.c.target_id == _history.c.target_id,
                    newer.c.location == _history.c.location,
                    newer.c.since > _history.c.since,
                    newer.c.since <= before,
                )
            ),
        )
        .returning(_history.c.id)
    )
    return len(result.all())
