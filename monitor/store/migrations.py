"""Versioned schema migrations.

``schema.py`` always describes the latest schema. A new, empty database
replays every step from the first, and an existing one the steps after its
recorded version, in order and in one transaction, so both end up the same. A database stamped with
a version this code does not know was migrated by a newer csp-monitor: it is
refused rather than written with assumptions that may no longer hold.

Adding a change: edit ``schema.py`` *and* append a step here whose ``apply``
brings a database of the previous version to the same shape (ALTER TABLE …),
then test both paths (new database, upgraded database) end up identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, inspect, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.store import schema
from monitor.store.records import SchemaTooNew, StoreError

# Any constant works: it only has to be the same for every csp-monitor sharing a database.
_MIGRATION_LOCK_ID = 0x6373706D  # "cspm"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: brings a database at ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _initial_schema(connection: Connection) -> None:
    # the tables of version 1 only; schema_version exists already
    later = {
        schema.audit_log.name,
        schema.schema_version.name,
        *_CLUSTER_TABLES,
        schema.schedule_overrides.name,
        schema.voice_calls.name,
        schema.location_reports.name,
        schema.location_history.name,
    }
    tables = [table for table in schema.metadata.sorted_tables if table.name not in later]
    schema.metadata.create_all(connection, tables=tables)


def _audit_log(connection: Connection) -> None:
    schema.audit_log.create(connection)  # with its index


def _vendor_issue(connection: Connection) -> None:
    columns = {column["name"] for column in inspect(connection).get_columns("incidents")}
    if "vendor_issue" not in columns:  # step 1 creates today's table, which has it already
        connection.exec_driver_sql("ALTER TABLE incidents ADD COLUMN vendor_issue VARCHAR(100)")


def _outbox_recipient(connection: Connection) -> None:
    columns = {column["name"] for column in inspect(connection).get_columns("outbox")}
    if "recipient" not in columns:  # step 1 creates today's table, which has it already
        connection.exec_driver_sql("ALTER TABLE outbox ADD COLUMN recipient TEXT")
    # Fill it where it matters: rows still to be delivered (their order) and failed rows
    # (a later message says what never arrived). Sent rows need no recipient key.
    table = schema.outbox
    rows = connection.execute(
        select(table.c.id, table.c.message).where(
            table.c.recipient.is_(None), table.c.status != "sent"
        )
    ).all()
    for row_id, message in rows:
        recipients = (message or {}).get("recipients") or []
        connection.execute(
            update(table)
            .where(table.c.id == row_id)
            .values(recipient=",".join(str(r) for r in recipients))
        )


_CLUSTER_TABLES = (schema.members.name, schema.leader_lease.name, schema.status_changes.name)


def _cluster(connection: Connection) -> None:
    schema.members.create(connection)
    schema.leader_lease.create(connection)


def _status_changes(connection: Connection) -> None:
    schema.status_changes.create(connection)
    # version 5 created members from the schema of its day, or (replayed on a new
    # database) from today's, which has the column already
    if "blind" not in {column["name"] for column in inspect(connection).get_columns("members")}:
        connection.execute(
            text("ALTER TABLE members ADD COLUMN blind BOOLEAN NOT NULL DEFAULT false")
        )


def _oncall(connection: Connection) -> None:
    columns = {column["name"] for column in inspect(connection).get_columns("incidents")}
    if "oncall" not in columns:  # step 1 creates today's table, which has it already
        # JSON is text on SQLite and json on PostgreSQL, as schema.py declares it
        kind = "JSON" if connection.dialect.name == "postgresql" else "TEXT"
        connection.exec_driver_sql(f"ALTER TABLE incidents ADD COLUMN oncall {kind}")
    schema.schedule_overrides.create(connection)  # with its index


def _voice_calls(connection: Connection) -> None:
    schema.voice_calls.create(connection)  # with its index


def _locations(connection: Connection) -> None:
    # version 5 created members from the schema of its day, or (replayed on a new
    # database) from today's, which has the column already
    if "location" not in {column["name"] for column in inspect(connection).get_columns("members")}:
        connection.execute(
            text("ALTER TABLE members ADD COLUMN location VARCHAR(100) NOT NULL DEFAULT 'default'")
        )
    schema.location_reports.create(connection)  # with its index


def _location_history(connection: Connection) -> None:
    schema.location_history.create(connection)  # with its index


def _incidents_down_from(connection: Connection) -> None:
    columns = {column["name"] for column in inspect(connection).get_columns("incidents")}
    if "down_from" not in columns:  # step 1 creates today's table, which has it already
        connection.exec_driver_sql(
            "ALTER TABLE incidents ADD COLUMN down_from VARCHAR(1000) NOT NULL DEFAULT ''"
        )
    # one open incident per subscription, except that vendor-side incidents (customer '*')
    # are one per service *and* location signature: replace the index by two
    for name in ("uq_incidents_open_subscription", "uq_incidents_open_vendor_side"):
        connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    for index in schema.incidents.indexes:
        if index.name in ("uq_incidents_open_subscription", "uq_incidents_open_vendor_side"):
            index.create(connection)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema: incidents, timeline, status intervals, outbox, maintenance, heartbeats",
        _initial_schema,
    ),
    Migration(2, "hash-chained audit log", _audit_log),
    Migration(3, "incidents confirmed by the vendor's health feed", _vendor_issue),
    Migration(
        4, "outbox recipient: one incident's messages to one person in order", _outbox_recipient
    ),
    Migration(5, "cluster: members with heartbeats, the leader's lease and epoch", _cluster),
    Migration(6, "cluster: status changes queued for the leader; blind members", _status_changes),
    Migration(7, "on-call: who steps paged through schedules; schedule overrides", _oncall),
    Migration(8, "voice calls placed, for the providers' per-callee budgets", _voice_calls),
    Migration(9, "locations: members' locations, each location's latest report", _locations),
    Migration(10, "locations: what each location saw, at its own times", _location_history),
    Migration(
        11,
        "incidents: the locations that saw them down; vendor-side incidents per location",
        _incidents_down_from,
    ),
)


def latest_version(steps: Sequence[Migration] = MIGRATIONS) -> int:
    """The schema version this code writes."""
    return steps[-1].version


async def migrate(
    connection: AsyncConnection, where: str, steps: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the database to the latest version inside the caller's transaction.

    Returns (version found, version now); (0, n) for a new database. Raises
    SchemaTooNew when the database is ahead of ``steps``.
    """
    if [step.version for step in steps] != list(range(1, len(steps) + 1)):
        raise ValueError("migration versions must be 1, 2, 3 … in order")
    latest = latest_version(steps)
    if connection.dialect.name == "postgresql":
        # Two daemons starting together on an empty database must not both create it.
        await connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))
    tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    if schema.schema_version.name not in tables:
        if schema.incidents.name in tables:
            raise StoreError(
                f"the database at {where} has csp-monitor tables but no schema_version table: "
                "it was not created by csp-monitor's migrations; use an empty database"
            )
        # a new database replays every step, so it ends up exactly like an upgraded one
        await connection.run_sync(schema.schema_version.create)
        for step in steps:
            await connection.run_sync(step.apply)
            await _stamp(connection, step.version, step.description)
        return 0, latest
    found = (
        await connection.execute(select(func.max(schema.schema_version.c.version)))
    ).scalar_one() or 0
    if found > latest:
        raise SchemaTooNew(found, latest, where)
    for step in steps[found:]:
        await connection.run_sync(step.apply)
        await _stamp(connection, step.version, step.description)
    return found, latest


async def schema_version(connection: AsyncConnection) -> int:
    """The version recorded in the database (0 when it has none)."""
    result = await connection.execute(text("SELECT max(version) FROM schema_version"))
    return int(result.scalar_one() or 0)


async def _stamp(connection: AsyncConnection, version: int, description: str) -> None:
    await connection.execute(
        insert(schema.schema_version).values(
            version=version, description=description, applied_at=time.time()
        )
    )
