"""Queries: what the API, reports and the daemon's start-up read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.engine.model import Incident, IncidentEvent, MaintenanceWindow, StatusInterval
from monitor.engine.oncall import Override
from monitor.store import codec, schema
from monitor.store.records import MonitorRun, OutboxRow, OutboxStatus

_incidents = schema.incidents
_events = schema.incident_events
_intervals = schema.status_intervals
_outbox = schema.outbox
# Rows turned into intervals between two turns of the loop, and rows a cursor fetches at a
# time (intervals_by_subscription): the month's history at 50,000 subscriptions (read for
# the SLA metric every few seconds while first statuses arrive) took 0.5 s in one go.
_ROWS_PER_TURN = 5000
# Subscriptions named in one read of their history: each binds two parameters, and a
# database caps the parameters of a statement (SQLite at 32,766).
_KEYS_PER_READ = 500


class Reader:
    """Read queries on one connection (a Transaction is a Reader too, seeing its own writes)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get_incident(self, incident_id: str, *, for_update: bool = False) -> Incident | None:
        """One incident, or None. ``for_update`` locks its row until the transaction ends
        (PostgreSQL; SQLite's write transactions hold the whole database already)."""
        query = select(_incidents).where(_incidents.c.id == incident_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        return codec.incident_from_row(row) if row is not None else None

    async def open_incidents(self) -> list[Incident]:
        """Every incident not yet resolved (open or acknowledged), oldest first."""
        query = (
            select(_incidents)
            .where(_incidents.c.state != "resolved")
            .order_by(_incidents.c.opened_at, _incidents.c.id)
        )
        return [
            codec.incident_from_row(row) for row in (await self._conn.execute(query)).mappings()
        ]

    async def list_incidents(
        self,
        customer: str | None = None,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        """Incidents that overlap [since, until) — opened before ``until`` and not resolved
        before ``since`` — newest first, at most ``limit``."""
        conditions: list[ColumnElement[bool]] = []
        if customer is not None:
            conditions.append(_incidents.c.customer == customer)
        if service is not None:
            conditions.append(_incidents.c.service == service)
        if until is not None:
            conditions.append(_incidents.c.opened_at < until)
        if since is not None:
            conditions.append(
                or_(_incidents.c.resolved_at.is_(None), _incidents.c.resolved_at >= since)
            )
        query = (
            select(_incidents)
            .where(and_(true(), *conditions))
            .order_by(_incidents.c.opened_at.desc(), _incidents.c.id.desc())
            .limit(limit)
        )
        return [
            codec.incident_from_row(row) for row in (await self._conn.execute(query)).mappings()
        ]

    async def events(self, incident_id: str) -> list[IncidentEvent]:
        """The incident's timeline, in order (time, then order of recording)."""
        query = (
            select(_events)
            .where(_events.c.incident_id == incident_id)
            .order_by(_events.c.at, _events.c.id)
        )
        return [codec.event_from_row(row) for row in (await self._conn.execute(query)).mappings()]

    async def status_intervals(
        self,
        customer: str | None = None,
        service: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[StatusInterval]:
        """Intervals overlapping [start, end), not clipped to it, by subscription then time.
        The current interval of a subscription has ``end`` None."""
        return await self._intervals_yielding(_intervals_query(customer, service, start, end))

    async def intervals_by_subscription(
        self, start: float, end: float, keys: Collection[tuple[str, str]] | None = None
    ) -> AsyncIterator[tuple[tuple[str, str], list[StatusInterval]]]:
        """``status_intervals`` of every subscription (or of those in ``keys``, read
        ``_KEYS_PER_READ`` at a time), one subscription at a time, read through a cursor
        ``_ROWS_PER_TURN`` rows at a time. At 50,000 subscriptions holding every row and
        interval of the month at once was some 60 MB at the process's peak."""
        if keys is None:
            async for item in self._grouped(_intervals_query(None, None, start, end)):
                yield item
            return
        for asked in in_service_slices(keys, _KEYS_PER_READ):
            query = _intervals_query(None, None, start, end).where(subscriptions_among(asked))
            async for key, intervals in self._grouped(query):
                if key in asked:  # subscriptions_among: pairs not asked for come too
                    yield key, intervals

    async def _grouped(
        self, query: Select[Any]
    ) -> AsyncIterator[tuple[tuple[str, str], list[StatusInterval]]]:
        """The intervals ``query`` finds (by subscription), one subscription at a time."""
        result = await self._conn.stream(query)
        key: tuple[str, str] | None = None
        group: list[StatusInterval] = []
        async for rows in result.mappings().partitions(_ROWS_PER_TURN):
            for row in rows:
                interval = codec.interval_from_row(row)
                if key != (interval.customer, interval.service):
                    if key is not None:
                        yield key, group
                    key, group = (interval.customer, interval.service), []
                group.append(interval)
        if key is not None:
            yield key, group

    async def last_statuses(self) -> dict[tuple[str, str], str]:
        """Each subscription's last recorded status (its latest interval, open or not)."""
        latest = (
            select(
                _intervals.c.customer,
                _intervals.c.service,
                func.max(_intervals.c.started_at).label("started_at"),
            )
            .group_by(_intervals.c.customer, _intervals.c.service)
            .subquery()
        )
        query = (
            select(_intervals.c.customer, _intervals.c.service, _intervals.c.status)
            .join(
                latest,
                and_(
                    _intervals.c.customer == latest.c.customer,
                    _intervals.c.service == latest.c.service,
                    _intervals.c.started_at == latest.c.started_at,
                ),
            )
            .order_by(_intervals.c.id)
        )
        return {(row.customer, row.service): row.status for row in await self._conn.execute(query)}

    async def open_status_intervals(self) -> list[StatusInterval]:
        """The current interval of every subscription that has one."""
        query = (
            select(_intervals)
            .where(_intervals.c.ended_at.is_(None))
            .order_by(_intervals.c.customer, _intervals.c.service)
        )
        return await self._intervals_yielding(query)

    async def _intervals_yielding(self, query: Select[Any]) -> list[StatusInterval]:
        """The query's rows as intervals, letting the loop run every ``_ROWS_PER_TURN``."""
        intervals = []
        for count, row in enumerate((await self._conn.execute(query)).mappings(), 1):
            intervals.append(codec.interval_from_row(row))
            if count % _ROWS_PER_TURN == 0:
                await asyncio.sleep(0)  # the rows are read: probes and scrapes may run
        return intervals

    async def list_maintenance(self) -> list[MaintenanceWindow]:
        """Every maintenance window, by start time."""
        table = schema.maintenance_windows
        query = select(table).order_by(table.c.starts_at, table.c.id)
        return [
            codec.maintenance_from_row(row) for row in (await self._conn.execute(query)).mappings()
        ]

    async def list_overrides(self, ending_after: float | None = None) -> list[Override]:
        """On-call overrides by start time (those ending after ``ending_after``)."""
        table = schema.schedule_overrides
        query = select(table).order_by(table.c.starts_at, table.c.id)
        if ending_after is not None:
            query = query.where(table.c.ends_at > ending_after)
        return [
            codec.override_from_row(row) for row in (await self._conn.execute(query)).mappings()
        ]

    async def list_outbox(
        self,
        status: OutboxStatus | None = None,
        incident_id: str | None = None,
        limit: int = 100,
    ) -> list[OutboxRow]:
        """Queued and delivered messages, oldest first."""
        conditions: list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(_outbox.c.status == str(status))
        if incident_id is not None:
            conditions.append(_outbox.c.incident_id == incident_id)
        query = select(_outbox).where(and_(true(), *conditions)).order_by(_outbox.c.id).limit(limit)
        return [codec.outbox_from_row(row) for row in (await self._conn.execute(query)).mappings()]

    async def outbox_keys(self, keys: list[str]) -> set[str]:
        """Which of these dedup keys are in the outbox already (in any state)."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            query = select(_outbox.c.dedup_key).where(
                _outbox.c.dedup_key.in_(keys[start : start + 500])
            )
            found.update(row[0] for row in await self._conn.execute(query))
        return found

    async def latest_outbox(self, events: list[str], limit: int = 50) -> list[OutboxRow]:
        """The newest messages of these events, newest first (the ops messages' state)."""
        query = (
            select(_outbox)
            .where(_outbox.c.event.in_(events))
            .order_by(_outbox.c.id.desc())
            .limit(limit)
        )
        return [codec.outbox_from_row(row) for row in (await self._conn.execute(query)).mappings()]

    async def failed_before(self, row: OutboxRow) -> list[OutboxRow]:
        """Earlier messages of ``row``'s incident to the same recipient of the same channel
        that failed for good (never delivered), oldest first."""
        if row.message.incident_id is None:
            return []
        query = (
            select(_outbox)
            .where(
                _outbox.c.incident_id == row.message.incident_id,
                _outbox.c.channel == row.channel,
                _outbox.c.recipient == codec.recipient_key(row.message),
                _outbox.c.id < row.id,
                _outbox.c.status == str(OutboxStatus.FAILED),
            )
            .order_by(_outbox.c.id)
        )
        return [codec.outbox_from_row(r) for r in (await self._conn.execute(query)).mappings()]

    async def outbox_stats(self) -> dict[tuple[str, OutboxStatus], int]:
        """Number of messages per (channel, status); absent pairs are zero."""
        query = select(_outbox.c.channel, _outbox.c.status, func.count()).group_by(
            _outbox.c.channel, _outbox.c.status
        )
        return {
            (channel, OutboxStatus(status)): count
            for channel, status, count in await self._conn.execute(query)
        }

    async def last_seen(self, instance_id: str | None = None) -> float | None:
        """The last heartbeat of ``instance_id`` (of any instance when None), or None."""
        table = schema.monitor_heartbeat
        query = select(func.max(table.c.last_beat_at))
        if instance_id is not None:
            query = query.where(table.c.instance_id == instance_id)
        result = (await self._conn.execute(query)).scalar_one_or_none()
        return float(result) if result is not None else None

    async def monitor_runs(self, since: float | None = None) -> list[MonitorRun]:
        """Daemon runs (start, last heartbeat) that reached ``since`` or later, by start."""
        table = schema.monitor_heartbeat
        query = select(table).order_by(table.c.started_at, table.c.instance_id)
        if since is not None:
            query = query.where(table.c.last_beat_at >= since)
        return [codec.run_from_row(row) for row in (await self._conn.execute(query)).mappings()]


def subscriptions_among(keys: Collection[tuple[str, str]]) -> ColumnElement[bool]:
    """Rows of the subscriptions ``keys``, and of any other pair of their customers and
    services (which the caller leaves out): ``customer IN (…) AND service IN (…)`` is
    looked up in the (customer, service) indexes by both databases. A ``(customer,
    service) IN`` list of pairs made PostgreSQL read every entry of the index and test each
    against every pair: 0.37 s for 500 pairs at 40,000 rows, and the leader's write of
    the start-up's first statuses (5,000 pairs a statement) kept it busy for a minute at
    3 × 20,000 targets (bench/cluster_scale.py). Keys sliced by ``in_service_slices`` keep
    the other pairs few."""
    return and_(
        _intervals.c.customer.in_(sorted({customer for customer, _ in keys})),
        _intervals.c.service.in_(sorted({service for _, service in keys})),
    )


def in_service_slices(keys: Iterable[tuple[str, str]], size: int) -> Iterator[set[tuple[str, str]]]:
    """``keys`` once each, ``size`` at a time, taken by service then customer: each slice
    names few services, so ``subscriptions_among`` of it brings few pairs not asked for
    (which the caller leaves out: they are not in the slice)."""
    ordered = sorted(set(keys), key=lambda key: (key[1], key[0]))
    for start in range(0, len(ordered), size):
        yield set(ordered[start : start + size])


def _intervals_query(
    customer: str | None, service: str | None, start: float | None, end: float | None
) -> Select[Any]:
    """Intervals overlapping [start, end) by subscription, then time."""
    conditions: list[ColumnElement[bool]] = []
    if customer is not None:
        conditions.append(_intervals.c.customer == customer)
    if service is not None:
        conditions.append(_intervals.c.service == service)
    if end is not None:
        conditions.append(_intervals.c.started_at < end)
    if start is not None:
        conditions.append(or_(_intervals.c.ended_at.is_(None), _intervals.c.ended_at > start))
    return (
        select(_intervals)
        .where(and_(true(), *conditions))
        .order_by(
            _intervals.c.customer, _intervals.c.service, _intervals.c.started_at, _intervals.c.id
        )
    )
