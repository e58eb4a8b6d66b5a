"""The Store: opens the database, migrates it, hands out transactions and answers queries.

One Store per daemon, created at start-up and passed to whoever needs it (no
global). Writes happen in ``async with store.transaction() as tx:`` blocks —
one engine decision, one transaction — or through the one-shot shortcuts
below, each its own small transaction (the notifier's claim/mark cycle, the
API's maintenance windows).

After a crash, the daemon's start-up can account for the time nobody watched:
``last_seen()`` is the last heartbeat of the previous run, and
``record_status(customer, service, "unknown", last_seen)`` for each open status
interval closes it there and records the gap as unknown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from monitor.engine.model import Incident, IncidentEvent, MaintenanceWindow, StatusInterval
from monitor.engine.oncall import Override
from monitor.notify.message import DeliveryReceipt, RenderedMessage
from monitor.store import audit as audit_log
from monitor.store import cluster, locations
from monitor.store.connect import WRITE_OPTION, async_url, create_engine, display_url
from monitor.store.locations import LocationChange, LocationReportRow
from monitor.store.migrations import MIGRATIONS, Migration, migrate, schema_version
from monitor.store.reads import Reader
from monitor.store.records import Fenced, MonitorRun, OutboxRow, OutboxStatus, StoreError
from monitor.store.writes import Transaction


class Store:
    """Incidents, timelines, status history, outbox and maintenance windows in SQLite or
    PostgreSQL. Create with ``await Store.open(url)``; ``await store.close()`` at the end."""

    def __init__(
        self,
        engine: AsyncEngine,
        url: URL,
        audit_key: bytes | None = None,
        fence: tuple[str, int] | None = None,
    ) -> None:
        self._engine = engine
        self._url = url
        self._audit_key = audit_key
        self._fence = fence
        self._application_name: str | None = None
        # Subscriptions whose status intervals close_all_open() must leave open: in a
        # cluster, those other live nodes go on watching (set by the daemon).
        self.kept_open: Callable[[], Collection[tuple[str, str]]] = lambda: ()

    @classmethod
    async def open(
        cls,
        url: str | Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        audit_key: bytes | None = None,
        fence: tuple[str, int] | None = None,
        application_name: str | None = None,
    ) -> Store:
        """Open (and create, for SQLite) the database at ``url`` and apply pending
        ``migrations`` (the code's own unless a test brings others). Raises StoreError
        (SchemaTooNew among them) when the database cannot be used.

        ``fence``: (node id, epoch) of a cluster leader's term (PostgreSQL): every
        transaction first checks that the node still holds the leader's lease in that
        epoch and raises Fenced, writing nothing, when it does not. ``application_name``:
        how PostgreSQL names the connections (``pg_stat_activity``)."""
        engine_url = async_url(url)
        where = display_url(engine_url)
        try:
            engine = create_engine(engine_url, application_name)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {where}: {exc}") from exc
        store = cls(engine, engine_url, audit_key, fence)
        store._application_name = application_name
        try:
            async with store._connection(write=True) as connection, connection.begin():
                await migrate(connection, where, migrations)
        except BaseException as exc:
            await engine.dispose()
            if isinstance(exc, (OSError, SQLAlchemyError)):
                raise StoreError(f"cannot open the store at {where}: {_cause(exc)}") from exc
            raise
        return store

    @property
    def url(self) -> str:
        """Where the store is, password hidden."""
        return display_url(self._url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    async def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @asynccontextmanager
    async def _connection(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as connection:
            if write:
                await connection.execution_options(**{WRITE_OPTION: True})
            yield connection

    @asynccontextmanager
    async def transaction(self, *, fenced: bool = True) -> AsyncIterator[Transaction]:
        """``async with store.transaction() as tx:`` — committed when the block ends,
        rolled back (nothing written) when it raises or is cancelled. ``fenced=False``
        skips the leader's fence: for facts that hold whoever leads (a message that was
        sent was sent)."""
        async with self._connection(write=True) as connection, connection.begin():
            fence = self._fence if fenced else None
            if fence is not None and not await cluster.check_fence(connection, *fence):
                raise Fenced(*fence)
            yield Transaction(connection, self._audit_key, self.kept_open)

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[Reader]:
        async with self._connection(write=False) as connection:
            yield Reader(connection)

    async def version(self) -> int:
        """The schema version recorded in the database."""
        async with self._connection(write=False) as connection:
            return await schema_version(connection)

    # ------------------------------------------------------------------ reads

    async def get_incident(self, incident_id: str) -> Incident | None:
        """One incident, or None."""
        async with self._reader() as reader:
            return await reader.get_incident(incident_id)

    async def open_incidents(self) -> list[Incident]:
        """Every unresolved incident, oldest first: what the engine reloads on start."""
        async with self._reader() as reader:
            return await reader.open_incidents()

    async def list_incidents(
        self,
        customer: str | None = None,
        service: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        """Incidents overlapping [since, until), newest first (see Reader.list_incidents)."""
        async with self._reader() as reader:
            return await reader.list_incidents(customer, service, since, until, limit)

    async def events(self, incident_id: str) -> list[IncidentEvent]:
        """An incident's timeline, in order."""
        async with self._reader() as reader:
            return await reader.events(incident_id)

    async def status_intervals(
        self,
        customer: str | None = None,
        service: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[StatusInterval]:
        """Status history overlapping [start, end), unclipped (see Reader.status_intervals)."""
        async with self._reader() as reader:
            return await reader.status_intervals(customer, service, start, end)

    async def intervals_by_subscription(
        self, start: float, end: float, keys: Collection[tuple[str, str]] | None = None
    ) -> AsyncIterator[tuple[tuple[str, str], list[StatusInterval]]]:
        """Every subscription's history overlapping [start, end) (or only that of
        ``keys``), one subscription at a time (see Reader.intervals_by_subscription); a
        connection is held meanwhile."""
        async with self._reader() as reader:
            async for item in reader.intervals_by_subscription(start, end, keys):
                yield item

    async def last_statuses(self) -> dict[tuple[str, str], str]:
        """Each subscription's last recorded status: what a restart starts from."""
        async with self._reader() as reader:
            return await reader.last_statuses()

    async def open_status_intervals(self) -> list[StatusInterval]:
        """The current interval of every subscription that has one."""
        async with self._reader() as reader:
            return await reader.open_status_intervals()

    async def list_maintenance(self) -> list[MaintenanceWindow]:
        """Every maintenance window, by start time."""
        async with self._reader() as reader:
            return await reader.list_maintenance()

    async def list_overrides(self, ending_after: float | None = None) -> list[Override]:
        """On-call overrides by start time (those ending after ``ending_after``)."""
        async with self._reader() as reader:
            return await reader.list_overrides(ending_after)

    async def list_outbox(
        self, status: OutboxStatus | None = None, incident_id: str | None = None, limit: int = 100
    ) -> list[OutboxRow]:
        """Queued and delivered messages, oldest first."""
        async with self._reader() as reader:
            return await reader.list_outbox(status, incident_id, limit)

    async def outbox_keys(self, keys: list[str]) -> set[str]:
        """Which of these dedup keys were queued already (a job that must queue once)."""
        async with self._reader() as reader:
            return await reader.outbox_keys(keys)

    async def latest_outbox(self, events: list[str], limit: int = 50) -> list[OutboxRow]:
        """The newest messages of these events, newest first."""
        async with self._reader() as reader:
            return await reader.latest_outbox(events, limit)

    async def failed_before(self, row: OutboxRow) -> list[OutboxRow]:
        """Earlier messages of the row's incident to its recipient that were never delivered
        (see Reader.failed_before)."""
        async with self._reader() as reader:
            return await reader.failed_before(row)

    async def outbox_stats(self) -> dict[tuple[str, OutboxStatus], int]:
        """Messages per (channel, status)."""
        async with self._reader() as reader:
            return await reader.outbox_stats()

    async def last_seen(self, instance_id: str | None = None) -> float | None:
        """The last heartbeat of ``instance_id`` (any instance when None)."""
        async with self._reader() as reader:
            return await reader.last_seen(instance_id)

    async def monitor_runs(self, since: float | None = None) -> list[MonitorRun]:
        """Daemon runs with their start and last heartbeat: coverage evidence."""
        async with self._reader() as reader:
            return await reader.monitor_runs(since)

    # ------------------------------------------------------------------ one-shot writes

    async def enqueue(self, messages: Iterable[RenderedMessage], at: float) -> int:
        """Queue messages on their own (see Transaction.enqueue); returns how many were new."""
        async with self.transaction() as tx:
            return await tx.enqueue(messages, at)

    async def claim_due(
        self, now: float, limit: int, lease_seconds: float, channels: Collection[str] | None = None
    ) -> list[OutboxRow]:
        """Claim due messages for sending, committed before returning
        (see Transaction.claim_due)."""
        async with self.transaction() as tx:
            return await tx.claim_due(now, limit, lease_seconds, channels)

    async def mark_sent(self, outbox_id: int, receipt: DeliveryReceipt, at: float) -> bool:
        """Record a delivery and its receipt. Not fenced: a leader deposed while sending
        records what it sent, or its successor would send it again."""
        async with self.transaction(fenced=False) as tx:
            return await tx.mark_sent(outbox_id, receipt, at)

    async def mark_retry(self, outbox_id: int, error: str, next_attempt_at: float) -> bool:
        """Record a retryable failure; due again at ``next_attempt_at`` (not fenced)."""
        async with self.transaction(fenced=False) as tx:
            return await tx.mark_retry(outbox_id, error, next_attempt_at)

    async def mark_failed(self, outbox_id: int, error: str, at: float) -> bool:
        """Record a permanent failure (not fenced)."""
        async with self.transaction(fenced=False) as tx:
            return await tx.mark_failed(outbox_id, error, at)

    async def record_status(self, customer: str, service: str, status: str, at: float) -> bool:
        """Record a subscription's status change; False when unchanged."""
        async with self.transaction() as tx:
            return await tx.record_status(customer, service, status, at)

    async def record_statuses(self, changes: Sequence[tuple[str, str, str, float]]) -> int:
        """Record (customer, service, status, at) changes in order, in one transaction."""
        async with self.transaction() as tx:
            return await tx.record_statuses(changes)

    async def close_all_open(
        self, at: float, subscriptions: Collection[tuple[str, str]] | None = None
    ) -> int:
        """End current status intervals at ``at`` (clean shutdown)."""
        async with self.transaction() as tx:
            return await tx.close_all_open(at, subscriptions)

    async def beat(self, instance_id: str, started_at: float, at: float) -> None:
        """Heartbeat of a daemon run."""
        async with self.transaction() as tx:
            await tx.beat(instance_id, started_at, at)

    async def add_maintenance(self, window: MaintenanceWindow, at: float) -> MaintenanceWindow:
        """Store a maintenance window; returns it with its id."""
        async with self.transaction() as tx:
            return await tx.add_maintenance(window, at)

    async def delete_maintenance(
        self, window_id: str, *, actor: str | None = None, at: float | None = None
    ) -> bool:
        """Delete a maintenance window; False if there was none."""
        async with self.transaction() as tx:
            return await tx.delete_maintenance(window_id, actor=actor, at=at)

    async def add_override(self, override: Override) -> Override:
        """Store an on-call override; returns it with its id."""
        async with self.transaction() as tx:
            return await tx.add_override(override)

    async def delete_override(self, override_id: str, *, actor: str | None, at: float) -> bool:
        """Delete an on-call override; False if there was none."""
        async with self.transaction() as tx:
            return await tx.delete_override(override_id, actor=actor, at=at)

    # ------------------------------------------------------------------ cluster (PostgreSQL)

    async def heartbeat(
        self,
        node_id: str,
        *,
        listen: str,
        started_at: float,
        version: str,
        config_digest: str,
        blind: bool = False,
        location: str = "default",
    ) -> float:
        """Upsert this node's member row; returns the database's time (cluster.heartbeat)."""
        async with self.transaction() as tx:
            return await cluster.heartbeat(
                tx.connection,
                node_id,
                listen=listen,
                started_at=started_at,
                version=version,
                config_digest=config_digest,
                blind=blind,
                location=location,
            )

    async def members(self, dead_after: float) -> tuple[list[cluster.Member], float]:
        """Every member, alive or dead by the database's clock, and that clock's time."""
        async with self._connection(write=False) as connection, connection.begin():
            return await cluster.members(connection, dead_after)

    async def leave(self, node_id: str) -> None:
        """Remove this node's member row (a clean stop)."""
        async with self.transaction() as tx:
            await cluster.leave(tx.connection, node_id)

    async def acquire_leadership(self, node_id: str, lease_seconds: float) -> cluster.Lease | None:
        """Take or renew the leader's lease (see cluster.acquire_or_renew)."""
        async with self.transaction() as tx:
            return await cluster.acquire_or_renew(tx.connection, node_id, lease_seconds)

    async def release_leadership(self, node_id: str, epoch: int) -> bool:
        """End this node's lease now, if it still holds it in ``epoch``."""
        async with self.transaction() as tx:
            return await cluster.release(tx.connection, node_id, epoch)

    async def leader_lease(self) -> tuple[cluster.Lease | None, float]:
        """The stored lease (possibly expired) and the database's time."""
        async with self._connection(write=False) as connection, connection.begin():
            return await cluster.current_lease(connection)

    async def latest_statuses(
        self, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, float]]:
        """The latest recorded (status, since) of the subscriptions ``keys`` (PostgreSQL;
        see cluster.last_statuses): what a node taking them over starts from."""
        async with self._connection(write=False) as connection:
            return await cluster.last_statuses(connection, keys)

    async def queue_changes(self, node_id: str, payloads: list[str]) -> None:
        """Hand status changes to the leader (PostgreSQL; see cluster.queue_changes).
        Not fenced: any node may queue, whoever leads."""
        async with self.transaction(fenced=False) as tx:
            await cluster.queue_changes(tx.connection, node_id, payloads)

    async def queued_changes(self, limit: int) -> list[cluster.QueuedChange]:
        """The oldest changes waiting for the leader."""
        async with self._connection(write=False) as connection:
            return await cluster.queued_changes(connection, limit)

    async def forget_changes(self, ids: Collection[int]) -> None:
        """Applied changes leave the queue; fenced like every write only the leader makes."""
        async with self.transaction() as tx:
            await cluster.forget_changes(tx.connection, ids)

    async def write_location_reports(self, reports: Sequence[LocationReportRow]) -> None:
        """Each location's latest report on its targets (PostgreSQL; see locations.py).
        Not fenced: every node reports what its location sees."""
        async with self.transaction(fenced=False) as tx:
            await locations.write_reports(tx.connection, reports)

    async def location_reports(self, written_after: float) -> tuple[list[LocationReportRow], float]:
        """Reports written after ``written_after`` (database clock), and that clock's time."""
        async with self._connection(write=False) as connection, connection.begin():
            return await locations.read_reports(connection, written_after)

    async def record_location_changes(self, changes: Sequence[LocationChange], at: float) -> int:
        """What locations saw, at their own times (see locations.py); how many were new.
        Not fenced: every node records what its location, or an agent it serves, saw."""
        async with self.transaction(fenced=False) as tx:
            return await locations.write_changes(tx.connection, changes, at)

    async def location_changes(
        self, start: float, end: float, target_ids: Sequence[str] | None = None
    ) -> list[LocationChange]:
        """Each location's changes in ``[start, end)`` and the status it was in at ``start``."""
        async with self._connection(write=False) as connection, connection.begin():
            return await locations.read_changes(connection, start, end, target_ids)

    async def listen(self, channel: str, wake: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call ``wake()`` on every NOTIFY on ``channel`` (PostgreSQL), over a connection of
        its own (a pooled one would be handed to other queries); returns its close."""
        url = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        settings = {"application_name": self._application_name} if self._application_name else {}
        connection = await asyncpg.connect(url, timeout=10, server_settings=settings)
        try:
            await connection.add_listener(channel, lambda *_: wake())
        except BaseException:
            await connection.close()
            raise
        close: Callable[[], Awaitable[None]] = connection.close
        return close

    # ------------------------------------------------------------------ audit log

    async def audit(
        self, at: float, kind: str, subject: str, actor: str | None = None, **detail: Any
    ) -> None:
        """Append one audit entry in its own transaction."""
        async with self.transaction() as tx:
            await tx.audit(at, kind, subject, actor, **detail)

    async def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the newest audit entry: what a report quotes as evidence."""
        async with self._connection(write=False) as connection:
            return await audit_log.head(connection)

    async def audit_entries(
        self, *, after: int = 0, limit: int = 10_000
    ) -> list[audit_log.AuditEntry]:
        async with self._connection(write=False) as connection:
            return await audit_log.entries(connection, after=after, limit=limit)

    async def verify_audit(
        self, key: bytes, expected_head: tuple[int, str] | None = None, batch: int = 10_000
    ) -> tuple[int, list[audit_log.ChainProblem]]:
        """Check the whole chain; return (entries checked, problems)."""
        chain: list[audit_log.AuditEntry] = []
        after = 0
        while True:  # bounded by the table's size: each batch moves `after` forward
            part = await self.audit_entries(after=after, limit=batch)
            if not part:
                break
            chain.extend(part)
            after = part[-1].seq
        return len(chain), audit_log.verify(chain, key, expected_head)

    async def prune(
        self,
        before: float,
        now: float,
        *,
        audit_before: float | None = None,
        outbox_before: float | None = None,
    ) -> dict[str, int]:
        """Retention: delete history older than ``before`` (the audit log older than
        ``audit_before``, behind a signed checkpoint). Open incidents and current
        intervals are never deleted."""
        async with self.transaction() as tx:
            counts = await tx.prune(before, outbox_before)
            counts["location_history"] = await locations.prune_changes(tx.connection, before)
            if self._audit_key is not None and audit_before is not None:
                counts["audit_log"] = await audit_log.prune(
                    tx.connection, self._audit_key, audit_before, now
                )
            await tx.audit(
                now,
                "retention",
                "store",
                None,
                before=before,
                audit_before=audit_before,
                deleted=counts,
            )
        return counts


def _cause(exc: BaseException) -> str:
    # The driver's own message, without SQLAlchemy's statement dump and help link.
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig)
    return str(exc)
