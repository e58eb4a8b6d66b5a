"""Membership and leadership rows of a cluster of daemons sharing PostgreSQL.

Every time here comes from the database's clock (``clock_timestamp()``), never
from the node's: two nodes whose clocks disagree by a minute still agree on who
is alive and whose lease has run out, because one clock decides both.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import (
    Double,
    String,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from monitor.store import schema

_members = schema.members
_lease = schema.leader_lease
LEASE_NAME = "leader"
_CHUNK = 500  # keys per query: well under the limit on bound parameters


@dataclass(frozen=True, slots=True)
class Member:
    """One node's row, judged alive or dead by the database's clock."""

    node_id: str
    listen: str
    started_at: float
    heartbeat_at: float
    version: str
    config_digest: str
    alive: bool
    blind: bool = False
    location: str = "default"


@dataclass(frozen=True, slots=True)
class Lease:
    """The leader's lease as stored: its holder, fencing epoch and expiry."""

    holder: str
    epoch: int
    acquired_at: float
    expires_at: float


def db_now() -> ColumnElement[float]:
    """The database's clock in Unix seconds (the real time, not the transaction's start)."""
    return func.extract("epoch", func.clock_timestamp()).cast(Double)


async def database_time(connection: AsyncConnection) -> float:
    return float((await connection.execute(select(db_now()))).scalar_one())


async def heartbeat(
    connection: AsyncConnection,
    node_id: str,
    *,
    listen: str,
    started_at: float,
    version: str,
    config_digest: str,
    blind: bool = False,
    location: str = "default",
) -> float:
    """Upsert the node's row with a fresh heartbeat; returns the database's time."""
    now = db_now()
    values = {
        "listen": listen,
        "started_at": started_at,
        "heartbeat_at": now,
        "version": version,
        "config_digest": config_digest,
        "blind": blind,
        "location": location,
    }
    statement = (
        postgresql.insert(_members)
        .values(node_id=node_id, **values)
        .on_conflict_do_update(index_elements=[_members.c.node_id], set_=values)
        .returning(_members.c.heartbeat_at)
    )
    return float((await connection.execute(statement)).scalar_one())


async def members(connection: AsyncConnection, dead_after: float) -> tuple[list[Member], float]:
    """Every member row by node id, each alive or dead, and the database's time."""
    now = await database_time(connection)
    rows = await connection.execute(select(_members).order_by(_members.c.node_id))
    found = [
        Member(
            node_id=row.node_id,
            listen=row.listen,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            version=row.version,
            config_digest=row.config_digest,
            alive=now - row.heartbeat_at <= dead_after,
            blind=bool(row.blind),
            location=row.location,
        )
        for row in rows
    ]
    return found, now


async def leave(connection: AsyncConnection, node_id: str) -> None:
    """A clean stop: the node's row goes, so the others take its targets at once."""
    await connection.execute(delete(_members).where(_members.c.node_id == node_id))


async def acquire_or_renew(
    connection: AsyncConnection, node_id: str, lease_seconds: float
) -> Lease | None:
    """Take the lease if it is free or expired, or renew it if this node holds it.

    One atomic statement: of several nodes trying at once, the database lets
    exactly one win. A takeover (any change of term, also this node coming
    back after its own lease ran out) increments the fencing epoch; a renewal
    keeps it. None when another node holds a lease that has not expired.
    """
    now = db_now()
    table = _lease
    same_term = (table.c.holder == node_id) & (table.c.expires_at >= now)
    statement = (
        postgresql.insert(table)
        .values(
            name=LEASE_NAME,
            holder=node_id,
            epoch=1,
            acquired_at=now,
            expires_at=now + lease_seconds,
        )
        .on_conflict_do_update(
            index_elements=[table.c.name],
            set_={
                "holder": node_id,
                "epoch": case((same_term, table.c.epoch), else_=table.c.epoch + 1),
                "acquired_at": case((same_term, table.c.acquired_at), else_=now),
                "expires_at": now + lease_seconds,
            },
            where=(table.c.holder == node_id) | (table.c.expires_at < now),
        )
        .returning(table.c.holder, table.c.epoch, table.c.acquired_at, table.c.expires_at)
    )
    row = (await connection.execute(statement)).first()
    return Lease(row.holder, row.epoch, row.acquired_at, row.expires_at) if row else None


async def release(connection: AsyncConnection, node_id: str, epoch: int) -> bool:
    """A clean stop of the leader: its lease ends now, so another can take over at once."""
    result = await connection.execute(
        update(_lease)
        .where(_lease.c.name == LEASE_NAME, _lease.c.holder == node_id, _lease.c.epoch == epoch)
        .values(expires_at=db_now() - literal(0.001))
        .returning(_lease.c.epoch)
    )
    return result.first() is not None


async def current_lease(connection: AsyncConnection) -> tuple[Lease | None, float]:
    """The stored lease (expired or not) and the database's time."""
    now = await database_time(connection)
    row = (await connection.execute(select(_lease).where(_lease.c.name == LEASE_NAME))).first()
    if row is None:
        return None, now
    return Lease(row.holder, row.epoch, row.acquired_at, row.expires_at), now


async def last_statuses(
    connection: AsyncConnection, keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, float]]:
    """The latest recorded (status, since) of each subscription in ``keys`` that has one.

    The latest interval whether or not it is still open: a node starting
    elsewhere may have ended it (see Transaction.close_all_open), but it is still
    the last status anyone confirmed, which is what a node taking the
    subscription over starts from.
    """
    # one query, the keys as two arrays: a node taking 10,000 subscriptions over made 20
    # queries of 500 keys each, one after another, each waiting for a turn of its busy
    # loop to be sent and read (18 s at 3 × 20,000 targets, bench/cluster_scale.py); and
    # a long IN list is compiled on the loop
    wanted = list(keys)
    if not wanted:
        return {}
    rows = await connection.execute(
        _LAST_STATUSES,
        {"customers": [key[0] for key in wanted], "services": [key[1] for key in wanted]},
    )
    return {(row.customer, row.service): (row.status, float(row.started_at)) for row in rows}


_LAST_STATUSES = text(
    "SELECT DISTINCT ON (i.customer, i.service) i.customer, i.service, i.status, i.started_at "
    "FROM status_intervals AS i "
    "JOIN unnest(CAST(:customers AS text[]), CAST(:services AS text[])) AS k(customer, service) "
    "ON i.customer = k.customer AND i.service = k.service "
    "ORDER BY i.customer, i.service, i.started_at DESC, i.id DESC"
).bindparams(
    bindparam("customers", type_=postgresql.ARRAY(String)),
    bindparam("services", type_=postgresql.ARRAY(String)),
)


async def check_fence(connection: AsyncConnection, node_id: str, epoch: int) -> bool:
    """Whether ``node_id`` holds an unexpired lease in ``epoch``; when it does, the lease row
    stays share-locked until the caller's transaction ends, so a takeover (which updates
    the row) waits for that transaction: a leader's write and a successor's start never
    interleave."""
    row = await connection.execute(
        select(_lease.c.epoch)
        .where(
            _lease.c.name == LEASE_NAME,
            _lease.c.holder == node_id,
            _lease.c.epoch == epoch,
            _lease.c.expires_at > db_now(),
        )
        .with_for_update(read=True)
    )
    return row.first() is not None


# ---------------------------------------------------------------------- status changes

CHANGES_CHANNEL = "csp_monitor_status_changes"  # NOTIFY channel: a change was queued


@dataclass(frozen=True, slots=True)
class QueuedChange:
    """A status change a node queued for the leader."""

    id: int
    node_id: str
    queued_at: float
    payload: str


async def queue_changes(connection: AsyncConnection, node_id: str, payloads: list[str]) -> None:
    """Queue changes for the leader, in order, and wake it when the transaction commits."""
    if not payloads:
        return
    table = schema.status_changes
    await connection.execute(
        table.insert().values(node_id=node_id, queued_at=db_now()),
        [{"payload": payload} for payload in payloads],
    )
    await connection.execute(select(func.pg_notify(CHANGES_CHANNEL, node_id)))


async def queued_changes(connection: AsyncConnection, limit: int) -> list[QueuedChange]:
    """The oldest queued changes first (ids grow with each insert)."""
    table = schema.status_changes
    rows = await connection.execute(select(table).order_by(table.c.id).limit(limit))
    return [QueuedChange(r.id, r.node_id, float(r.queued_at), r.payload) for r in rows]


async def forget_changes(connection: AsyncConnection, ids: Collection[int]) -> None:
    """Applied changes leave the queue (by id: one committed late is not skipped)."""
    table = schema.status_changes
    wanted = list(ids)
    for start in range(0, len(wanted), _CHUNK):
        await connection.execute(
            delete(table).where(table.c.id.in_(wanted[start : start + _CHUNK]))
        )
