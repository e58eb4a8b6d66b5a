"""The status history writer: each subscription's recorded status, as intervals in the store.

A change is written when the recorded status of a subscription changes. While a
batch runs (status changes piling up, 50,000 at start-up) changes are held and
written together; while the store is down they are kept, in order, for the next
attempt (bounded). The incident manager flushes before any other write, so the
history and the audit chain keep the order of events.
"""

from __future__ import annotations

import logging

from monitor.probe import Status
from monitor.store import Store

log = logging.getLogger(__name__)
# Status changes written per transaction in a batch: a transaction costs some 20 round trips
# through the database's thread whatever its size (monitor/store/writes.py writes 10,000 in
# a few statements, the loop free between them), and on a busy event loop each round trip
# waits behind every ready probe.
BATCH = 10_000
BACKLOG = 100_000  # held while the store is down; older ones are lost

Key = tuple[str, str]


class StatusHistory:
    """Records (customer, service) status changes; see the module's docstring."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._recorded: dict[Key, Status] = {}  # status last recorded, per subscription
        self._unrecorded: list[tuple[str, str, str, float]] = []  # held back
        self._batching = 0

    @property
    def subscriptions(self) -> list[Key]:
        """Every subscription this run recorded a status for."""
        return list(self._recorded)

    async def record(self, key: Key, status: Status, at: float) -> None:
        """``key`` is ``status`` from ``at`` on (nothing to write if it already was)."""
        if self._recorded.get(key) == status:
            return
        self._recorded[key] = status
        self._unrecorded.append((*key, str(status), at))
        if not self._batching or len(self._unrecorded) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Write the status changes held back, in one transaction."""
        if not self._unrecorded:
            return
        batch, self._unrecorded = self._unrecorded, []
        try:
            await self._store.record_statuses(batch)
        except BaseException:
            # the store is down: keep them, in order, for the next attempt (bounded)
            if len(batch) > BACKLOG:
                log.error("event=status_history_lost changes=%d", len(batch) - BACKLOG)
            self._unrecorded[:0] = batch[-BACKLOG:]
            raise

    def begin_batch(self) -> None:
        """Hold changes until the matching ``end_batch`` (batches nest)."""
        self._batching += 1

    def end_batch(self) -> bool:
        """End a batch; True when it was the outermost one (time to flush)."""
        self._batching -= 1
        return not self._batching
