"""Writes, always inside a transaction: the daemon persists one engine decision as one unit.

An incident change, its timeline events and the messages it queues are
written in the same transaction, so a crash (even ``kill -9``) leaves either
all of them or none: never an incident updated without its pages queued, and,
because the outbox's dedup key is unique, never a page queued twice.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, case, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.engine.model import Incident, IncidentEvent, MaintenanceWindow
from monitor.engine.oncall import Override
from monitor.notify.message import DeliveryReceipt, RenderedMessage
from monitor.store import audit as audit_log
from monitor.store import codec, schema
from monitor.store.reads import in_service_slices, subscriptions_among
from monitor.store.records import (
    IncidentAlreadyOpen,
    IncidentChanged,
    IncidentNotFound,
    OutboxRow,
    OutboxStatus,
    StoreError,
)
from monitor.store.status_writes import StatusWrites

_incidents = schema.incidents
_intervals = schema.status_intervals
_outbox = schema.outbox
# Rows per INSERT: well under both dialects' limits on bound parameters per statement.
_CHUNK = 500


def incident_day(at: float) -> str:
    """The UTC day an incident opened at ``at`` is numbered in, as in its id (20261123)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%d")


class Transaction(StatusWrites):
    """The write methods of one open transaction (see Store.transaction).

    Only use this object inside its ``async with`` block, and no other Store
    write meanwhile: on SQLite that write would wait for this transaction's lock.
    """

    def __init__(
        self,
        connection: AsyncConnection,
        audit_key: bytes | None = None,
        kept_open: Callable[[], Collection[tuple[str, str]]] = lambda: (),
    ) -> None:
        super().__init__(connection)
        self._dialect = connection.dialect.name
        self._audit_key = audit_key
        self._kept_open = kept_open

    async def audit(
        self, at: float, kind: str, subject: str, actor: str | None = None, **detail: Any
    ) -> None:
        """Append one entry to the audit log (a no-op for a store opened without a key)."""
        await self.audit_many([(at, kind, subject, actor, detail)])

    async def audit_many(
        self, records: Iterable[tuple[float, str, str, str | None, dict[str, Any]]]
    ) -> None:
        if self._audit_key is not None:
            await audit_log.append(self._conn, self._audit_key, records)

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        # ON CONFLICT is dialect-specific in SQLAlchemy though both dialects spell it alike.
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # ------------------------------------------------------------------ incidents

    async def allocate_incident_id(self, opened_at: float) -> str:
        """The next id of the UTC day of ``opened_at``: INC-20261123-0007.

        A counter row per day is incremented with one atomic upsert. On
        PostgreSQL the row stays locked until this transaction ends, so two
        daemons opening incidents the same day queue for it and get distinct
        numbers; on SQLite the write transaction already holds the database.
        A rolled-back transaction gives its number back.
        """
        table = schema.incident_counters
        day = incident_day(opened_at)
        statement = (
            self._insert(table)
            .values(day=day, last_number=1)
            .on_conflict_do_update(
                index_elements=[table.c.day], set_={"last_number": table.c.last_number + 1}
            )
            .returning(table.c.last_number)
        )
        number = (await self._conn.execute(statement)).scalar_one()
        return f"INC-{day}-{number:04d}"

    async def open_incident(self, incident: Incident) -> Incident:
        """Insert a new incident and return it with its id (allocated when ``incident.id``
        is empty). Raises IncidentAlreadyOpen, leaving the transaction usable, when the
        subscription already has an unresolved incident — also one another daemon has
        just opened: the database's partial unique index decides, not this process."""
        incident_id = incident.id or await self.allocate_incident_id(incident.opened_at)
        stored = dataclasses.replace(incident, id=incident_id)
        values = codec.incident_values(stored)
        if incident.customer == VENDOR_CUSTOMER:  # one per service and location signature
            same = [_incidents.c.service, _incidents.c.down_from]
            where = schema.OPEN_VENDOR_INCIDENT
        else:
            same = [_incidents.c.customer, _incidents.c.service]
            where = schema.OPEN_CUSTOMER_INCIDENT
        statement = (
            self._insert(_incidents)
            .values(values)
            .on_conflict_do_nothing(index_elements=same, index_where=where)
            .returning(_incidents.c.id)
        )
        if (await self._conn.execute(statement)).first() is None:
            existing = await self._conn.execute(
                select(_incidents.c.id).where(
                    *(column == values[column.name] for column in same),
                    _incidents.c.customer == incident.customer,
                    _incidents.c.state != "resolved",
                )
            )
            raise IncidentAlreadyOpen(
                incident.customer, incident.service, existing.scalar_one_or_none()
            )
        return stored

    async def save_incident(
        self, incident: Incident, *, expected_updated_at: float | None = None
    ) -> None:
        """Write every field of an existing incident.

        ``expected_updated_at``: the ``updated_at`` the caller read; when the
        stored one differs, someone else saved it meanwhile and IncidentChanged
        is raised instead of overwriting their change. IncidentAlreadyOpen
        when reopening it would make a second open incident for its
        subscription (the transaction must then be rolled back).
        """
        values = codec.incident_values(incident)
        del values["id"]
        statement = update(_incidents).where(_incidents.c.id == incident.id)
        if expected_updated_at is not None:
            statement = statement.where(_incidents.c.updated_at == expected_updated_at)
        try:
            row = (
                await self._conn.execute(statement.values(values).returning(_incidents.c.id))
            ).first()
        except IntegrityError as exc:
            # The partial unique index is the only unique constraint an update can break.
            raise IncidentAlreadyOpen(incident.customer, incident.service, None) from exc
        if row is not None:
            return
        current = await self.get_incident(incident.id)
        if current is None:
            raise IncidentNotFound(incident.id)
        assert expected_updated_at is not None
        raise IncidentChanged(incident.id, expected_updated_at, current.updated_at)

    async def add_events(self, events: Iterable[IncidentEvent]) -> None:
        """Append to incidents' timelines (their order within one call is kept)."""
        events = list(events)
        rows = [codec.event_values(event) for event in events]
        if rows:
            await self._conn.execute(insert(schema.incident_events), rows)
            await self.audit_many(
                (e.at, "incident", e.incident_id, e.actor, {"event": e.kind, **e.detail})
                for e in events
            )

    # ------------------------------------------------------------------ status history

    async def close_all_open(
        self, at: float, subscriptions: Collection[tuple[str, str]] | None = None
    ) -> int:
        """End current intervals at ``at`` (a clean shutdown); returns how many.

        ``subscriptions``: only these (customer, service) pairs — what a
        daemon sharing PostgreSQL with others must pass, so that it does not
        close the intervals of subscriptions another replica is watching.
        Whatever the store's ``kept_open`` names (a cluster's other live
        nodes watch them) is never closed, with or without ``subscriptions``.
        """
        kept = set(self._kept_open())
        if kept:
            # other live nodes of a cluster go on watching these: their intervals stay open
            if subscriptions is None:
                rows = await self._conn.execute(
                    select(_intervals.c.customer, _intervals.c.service).where(
                        _intervals.c.ended_at.is_(None)
                    )
                )
                subscriptions = [(row.customer, row.service) for row in rows]
            subscriptions = [key for key in subscriptions if key not in kept]
        statement = update(_intervals).where(_intervals.c.ended_at.is_(None))
        ended = case((_intervals.c.started_at > at, _intervals.c.started_at), else_=at)
        if subscriptions is None:
            result = await self._conn.execute(
                statement.values(ended_at=ended).returning(_intervals.c.id)
            )
            return len(result.all())
        count = 0
        for asked in in_service_slices(subscriptions, _CHUNK):
            # the open intervals found through the index (see subscriptions_among), then
            # ended by id: the pairs of their customers and services not named stay open
            rows = await self._conn.execute(
                select(_intervals.c.id, _intervals.c.customer, _intervals.c.service).where(
                    _intervals.c.ended_at.is_(None), subscriptions_among(asked)
                )
            )
            ids = [row.id for row in rows if (row.customer, row.service) in asked]
            if ids:
                result = await self._conn.execute(
                    statement.where(_intervals.c.id.in_(ids))
                    .values(ended_at=ended)
                    .returning(_intervals.c.id)
                )
                count += len(result.all())
        return count

    async def beat(self, instance_id: str, started_at: float, at: float) -> None:
        """Record that the daemon run (instance_id, started_at) was alive at ``at``."""
        table = schema.monitor_heartbeat
        await self._conn.execute(
            self._insert(table)
            .values(instance_id=instance_id, started_at=started_at, last_beat_at=at)
            .on_conflict_do_update(
                index_elements=[table.c.instance_id, table.c.started_at], set_={"last_beat_at": at}
            )
        )

    # ------------------------------------------------------------------ voice calls

    async def voice_calls(self, channel: str, callee: str, since: float) -> list[float]:
        """When ``channel`` called ``callee`` since ``since`` (oldest first)."""
        table = schema.voice_calls
        rows = await self._conn.execute(
            select(table.c.at)
            .where(table.c.channel == channel, table.c.callee == callee, table.c.at >= since)
            .order_by(table.c.at)
        )
        return [float(at) for (at,) in rows]

    async def queued(self, dedup_key: str) -> bool:
        """Whether a message with ``dedup_key`` is in the outbox already (in any state)."""
        found = await self._conn.execute(
            select(_outbox.c.id).where(_outbox.c.dedup_key == dedup_key).limit(1)
        )
        return found.first() is not None

    async def record_voice_call(
        self, channel: str, callee: str, at: float, incident_id: str | None
    ) -> None:
        """A call queued on ``channel`` to ``callee``: it counts against the budget from
        now, whether or not the provider connects it (the providers count failed calls)."""
        await self._conn.execute(
            insert(schema.voice_calls).values(
                channel=channel, callee=callee, at=at, incident_id=incident_id
            )
        )

    # ------------------------------------------------------------------ outbox

    async def enqueue(self, messages: Iterable[RenderedMessage], at: float) -> int:
        """Queue messages, due at ``at``; returns how many were new. A message whose
        dedup_key is already in the outbox (in any state) is skipped silently."""
        by_key: dict[str, RenderedMessage] = {}
        for message in messages:
            by_key.setdefault(message.dedup_key, message)  # the first one of a batch wins
        unique = list(by_key.values())
        added = 0
        for start in range(0, len(unique), _CHUNK):
            statement = (
                self._insert(_outbox)
                .values([codec.outbox_values(m, at) for m in unique[start : start + _CHUNK]])
                .on_conflict_do_nothing(index_elements=[_outbox.c.dedup_key])
                .returning(_outbox.c.id)
            )
            added += len((await self._conn.execute(statement)).all())
        return added

    async def claim_due(
        self, now: float, limit: int, lease_seconds: float, channels: Collection[str] | None = None
    ) -> list[OutboxRow]:
        """Take up to ``limit`` due messages for sending, oldest due first.

        Due: pending with next_attempt_at <= now, or sending with an expired
        lease (the sender died mid-send), and not behind an earlier message of
        the same incident to the same recipient of the same channel that is
        still pending or being sent: an incident's messages reach each person
        in the order they were queued (no "resolved" before its "opened"); a
        later one waits while an earlier one is retried, until it is sent or
        has failed for good. Claimed rows become ``sending`` with
        a lease of ``lease_seconds`` — longer than any send may take — and one
        more attempt. On PostgreSQL rows are picked with FOR UPDATE SKIP
        LOCKED, so two daemons claiming at once get disjoint rows; SQLite's
        write transaction excludes other writers. Commit before sending.
        """
        unsettled = [str(OutboxStatus.PENDING), str(OutboxStatus.SENDING)]
        earlier = _outbox.alias("earlier")
        behind_earlier = (
            select(earlier.c.id)
            .where(
                earlier.c.incident_id == _outbox.c.incident_id,
                earlier.c.channel == _outbox.c.channel,
                earlier.c.recipient == _outbox.c.recipient,
                earlier.c.id < _outbox.c.id,
                earlier.c.status.in_(unsettled),
            )
            .exists()
        )
        due = and_(
            _outbox.c.status.in_(unsettled),
            _outbox.c.next_attempt_at <= now,
            ~behind_earlier,
        )
        if channels is not None:
            due = and_(due, _outbox.c.channel.in_(list(channels)))
        ids = list(
            (
                await self._conn.execute(
                    select(_outbox.c.id)
                    .where(due)
                    .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        if not ids:
            return []
        rows = (
            (
                await self._conn.execute(
                    update(_outbox)
                    .where(_outbox.c.id.in_(ids))
                    .values(
                        status=str(OutboxStatus.SENDING),
                        attempts=_outbox.c.attempts + 1,
                        next_attempt_at=now + lease_seconds,
                    )
                    .returning(*_outbox.c)
                )
            )
            .mappings()
            .all()
        )
        order = {row_id: position for position, row_id in enumerate(ids)}
        return sorted((codec.outbox_from_row(row) for row in rows), key=lambda r: order[r.id])

    async def mark_sent(self, outbox_id: int, receipt: DeliveryReceipt, at: float) -> bool:
        """The provider accepted the message: store its receipt. False if already sent."""
        return await self._settle(
            outbox_id,
            _outbox.c.status != str(OutboxStatus.SENT),
            {
                "status": str(OutboxStatus.SENT),
                "receipt_id": receipt.provider_id,
                "receipt_detail": receipt.detail,
                "sent_at": at,
            },
            at,
            "delivery",
            receipt=receipt.provider_id,
        )

    async def mark_retry(self, outbox_id: int, error: str, next_attempt_at: float) -> bool:
        """A retryable failure: pending again from ``next_attempt_at``. False unless the row
        was being sent (a late answer must not undo another sender's outcome)."""
        result = await self._conn.execute(
            update(_outbox)
            .where(_outbox.c.id == outbox_id, _outbox.c.status == str(OutboxStatus.SENDING))
            .values(
                status=str(OutboxStatus.PENDING), last_error=error, next_attempt_at=next_attempt_at
            )
            .returning(_outbox.c.id)
        )
        return result.first() is not None

    async def mark_failed(self, outbox_id: int, error: str, at: float) -> bool:
        """A permanent failure (or out of retries): nobody will try again. False unless the
        row was being sent."""
        return await self._settle(
            outbox_id,
            _outbox.c.status == str(OutboxStatus.SENDING),
            {"status": str(OutboxStatus.FAILED), "last_error": error, "failed_at": at},
            at,
            "delivery_failed",
            error=error,
        )

    async def _settle(
        self,
        outbox_id: int,
        only_if: ColumnElement[bool],
        values: dict[str, Any],
        at: float,
        kind: str,
        **detail: Any,
    ) -> bool:
        """Record a message's final outcome, and audit it, unless ``only_if`` rules it out."""
        result = await self._conn.execute(
            update(_outbox)
            .where(_outbox.c.id == outbox_id, only_if)
            .values(next_attempt_at=None, **values)
            .returning(_outbox.c.dedup_key, _outbox.c.channel, _outbox.c.incident_id)
        )
        row = result.first()
        if row is not None:
            await self.audit(
                at, kind, row.dedup_key, channel=row.channel, incident=row.incident_id, **detail
            )
        return row is not None

    # ------------------------------------------------------------------ maintenance

    async def add_maintenance(self, window: MaintenanceWindow, at: float) -> MaintenanceWindow:
        """Store a window (an id ``MW-…`` is made up when it has none) and return it."""
        if window.ends_at <= window.starts_at:
            raise ValueError("a maintenance window must end after it starts")
        stored = (
            window if window.id else dataclasses.replace(window, id=f"MW-{secrets.token_hex(4)}")
        )
        table = schema.maintenance_windows
        result = await self._conn.execute(
            self._insert(table)
            .values(codec.maintenance_values(stored, at))
            .on_conflict_do_nothing(index_elements=[table.c.id])
            .returning(table.c.id)
        )
        if result.first() is None:
            raise StoreError(f"a maintenance window {stored.id} exists already")
        await self.audit(
            at,
            "maintenance",
            stored.id,
            stored.created_by,
            change="added",
            customer=stored.customer,
            service=stored.service,
            starts_at=stored.starts_at,
            ends_at=stored.ends_at,
            recurrence=stored.recurrence,
            reason=stored.reason,
        )
        return stored

    async def delete_maintenance(
        self, window_id: str, *, actor: str | None = None, at: float | None = None
    ) -> bool:
        """Remove a window; False when there was none with that id."""
        table = schema.maintenance_windows
        result = await self._conn.execute(
            delete(table).where(table.c.id == window_id).returning(table.c.id)
        )
        deleted = result.first() is not None
        if deleted:
            await self.audit(
                time.time() if at is None else at, "maintenance", window_id, actor, change="deleted"
            )
        return deleted

    # ------------------------------------------------------------------ on-call overrides

    async def add_override(self, override: Override) -> Override:
        """Store an on-call override (an id ``OV-…`` is made up when it has none)."""
        if override.ends_at <= override.starts_at:
            raise ValueError("an override must end after it starts")
        stored = (
            override
            if override.id
            else dataclasses.replace(override, id=f"OV-{secrets.token_hex(5)}")
        )
        table = schema.schedule_overrides
        result = await self._conn.execute(
            self._insert(table)
            .values(codec.override_values(stored))
            .on_conflict_do_nothing(index_elements=[table.c.id])
            .returning(table.c.id)
        )
        if result.first() is None:
            raise StoreError(f"an override {stored.id} exists already")
        await self.audit(
            stored.created_at,
            "oncall_override",
            stored.id,
            stored.created_by,
            change="added",
            schedule=stored.schedule,
            person=stored.person,
            covers=stored.covers,
            starts_at=stored.starts_at,
            ends_at=stored.ends_at,
            reason=stored.reason,
        )
        return stored

    async def delete_override(self, override_id: str, *, actor: str | None, at: float) -> bool:
        """Remove an override; False when there was none with that id."""
        table = schema.schedule_overrides
        result = await self._conn.execute(
            delete(table).where(table.c.id == override_id).returning(table.c.id)
        )
        deleted = result.first() is not None
        if deleted:
            await self.audit(at, "oncall_override", override_id, actor, change="deleted")
        return deleted

    # ------------------------------------------------------------------ retention

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    async def prune(self, before: float, outbox_before: float | None = None) -> dict[str, int]:
        """Delete what retention allows: resolved incidents (with their timelines) and
        closed status intervals older than ``before``, delivered or failed messages older
        than ``outbox_before`` (default ``before``)."""
        counts = {}
        result = await self._conn.execute(
            delete(_incidents)
            .where(_incidents.c.state == "resolved", _incidents.c.resolved_at < before)
            .returning(_incidents.c.id)
        )
        ids = [row.id for row in result]
        if ids:  # SQLite may not enforce ON DELETE CASCADE on an old connection
            await self._conn.execute(
                delete(schema.incident_events).where(schema.incident_events.c.incident_id.in_(ids))
            )
        counts["incidents"] = len(ids)
        result = await self._conn.execute(
            delete(_intervals)
            .where(_intervals.c.ended_at.is_not(None), _intervals.c.ended_at < before)
            .returning(_intervals.c.id)
        )
        counts["status_intervals"] = len(result.all())
        result = await self._conn.execute(
            delete(_outbox)
            .where(
                _outbox.c.status.in_([str(OutboxStatus.SENT), str(OutboxStatus.FAILED)]),
                _outbox.c.created_at < (before if outbox_before is None else outbox_before),
            )
            .returning(_outbox.c.id)
        )
        counts["outbox"] = len(result.all())
        # Kept as long as incidents (who was called when); budgets need only a day.
        result = await self._conn.execute(
            delete(schema.voice_calls)
            .where(schema.voice_calls.c.at < before)
            .returning(schema.voice_calls.c.id)
        )
        counts["voice_calls"] = len(result.all())
        return counts
