"""Status history writes of a transaction: a subscription's status intervals, one change
or a start-up's thousands at once. A part of ``Transaction`` (monitor/store/writes.py),
kept apart because it is one idea; the attributes declared below are the transaction's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from monitor.store import schema
from monitor.store.reads import Reader, in_service_slices, subscriptions_among

_intervals = schema.status_intervals
# Status changes per statement when a batch of them is written: keys of 2 columns (10,000
# parameters) stay under both dialects' limits (32,766 for SQLite, 32,767 for asyncpg), and
# rows go in as one executemany. Each statement is a round trip through the database's
# thread, which on a busy event loop waits its turn behind every ready probe: at 500 per
# statement the 50,000 first statuses after a start took 90 s to write; much more per
# statement holds the loop for its parameters (≈ 30 ms per 5,000 here).
_STATUS_ROWS = 5000


@dataclasses.dataclass(slots=True)
class _OpenInterval:
    """A subscription's current interval while a batch of status changes is written."""

    status: str
    started_at: float
    row_id: int | None = None  # stored; else an index into the batch's new rows
    pending: int = -1


class StatusWrites(Reader):
    """``record_status`` and ``record_statuses``, for ``Transaction``."""

    async def audit_many(
        self, records: Iterable[tuple[float, str, str, str | None, dict[str, Any]]]
    ) -> None:
        raise NotImplementedError  # the transaction's: appends to the audit log

    async def record_status(self, customer: str, service: str, status: str, at: float) -> bool:
        """Close the subscription's current interval at ``at`` and open one in ``status``.

        No-op (False) when the status is unchanged. A clock that stepped back
        (NTP) never makes an interval of negative length: ``at`` is raised to
        the current interval's start.
        """
        return await self.record_statuses([(customer, service, status, at)]) == 1

    async def record_statuses(self, changes: Sequence[tuple[str, str, str, float]]) -> int:
        """``record_status`` for (customer, service, status, at) changes, in order, in a
        few statements whatever their number; returns how many changed a status.

        A status change costs about five statements on its own; at start-up every
        subscription goes from unknown to its first status at once, and one by one
        10,000 of them kept the store busy for most of a minute.
        """
        keys = ((customer, service) for customer, service, _, _ in changes)
        current: dict[tuple[str, str], _OpenInterval] = {}
        for asked in in_service_slices(keys, _STATUS_ROWS):
            rows = await self._conn.execute(
                select(
                    _intervals.c.id,
                    _intervals.c.customer,
                    _intervals.c.service,
                    _intervals.c.status,
                    _intervals.c.started_at,
                )
                .where(_intervals.c.ended_at.is_(None), subscriptions_among(asked))
                .with_for_update()
            )
            for row in rows:
                if (row.customer, row.service) in asked:  # others come too (only the leader writes)
                    current[(row.customer, row.service)] = _OpenInterval(
                        row.status, row.started_at, row_id=row.id
                    )
        ends: list[dict[str, Any]] = []  # stored intervals to close
        opened: list[dict[str, Any]] = []  # intervals to insert; a later change may close one
        audits: list[tuple[float, str, str, str | None, dict[str, Any]]] = []
        for customer, service, status, at in changes:
            key = (customer, service)
            previous = current.get(key)
            if previous is not None:
                if previous.status == status:
                    continue
                at = max(at, previous.started_at)
                if previous.row_id is not None:
                    ends.append({"closing_id": previous.row_id, "closing_at": at})
                else:
                    opened[previous.pending]["ended_at"] = at
            opened.append(
                {
                    "customer": customer,
                    "service": service,
                    "status": status,
                    "started_at": at,
                    "ended_at": None,
                }
            )
            current[key] = _OpenInterval(status, at, pending=len(opened) - 1)
            detail = {"status": status, "previous": previous.status if previous else None}
            audits.append((at, "status", f"{customer}/{service}", None, detail))
        if ends:
            await self._conn.execute(
                update(_intervals)
                .where(_intervals.c.id == bindparam("closing_id"))
                .values(ended_at=bindparam("closing_at")),
                ends,
            )
        for start in range(0, len(opened), _STATUS_ROWS):
            await self._conn.execute(insert(_intervals), opened[start : start + _STATUS_ROWS])
        await self.audit_many(audits)
        return len(opened)
