"""Leadership: one lease row in PostgreSQL with a fencing epoch.

The leader renews its lease every heartbeat. The lease runs for
``lease_seconds`` on the database's clock from the moment the database ran
the renewal; the leader counts its own deadline from the moment *before* it
sent the renewal, on its monotonic clock, and gives up leadership after
``RENEW_FRACTION`` of the lease without a successful renewal. So a leader
cut off from the database (network, ``pg_terminate_backend``, a hung query)
stops acting as leader a third of a lease before any other node can take the
lease over: never two leaders at once, whatever the nodes' wall clocks say.

Each takeover increments the epoch; writes only a leader may make carry it,
so a deposed leader's late write can be recognised and refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from monitor.store import Store

log = logging.getLogger(__name__)

# The leader steps down when this fraction of its lease passed without a renewal.
RENEW_FRACTION = 2 / 3

Callback = Callable[[int], None]


class Leadership:
    """Whether this node leads, in which epoch; ``on_gain(epoch)``/``on_loss(epoch)``
    are called on every change (from the event loop, never concurrently)."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        lease_seconds: float,
        *,
        on_gain: Callback = lambda epoch: None,
        on_loss: Callback = lambda epoch: None,
    ) -> None:
        self._store = store
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self._on_gain = on_gain
        self._on_loss = on_loss
        self._epoch: int | None = None
        self._deadline = 0.0  # loop time by which the lease must have been renewed
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def is_leader(self) -> bool:
        return self._epoch is not None

    @property
    def epoch(self) -> int | None:
        """The fencing epoch of this node's term, None when it does not lead."""
        return self._epoch

    @property
    def renew_within(self) -> float:
        """Seconds after a renewal was sent by which the next one must have succeeded."""
        return self.lease_seconds * RENEW_FRACTION

    async def renew(self) -> None:
        """Take or renew the lease; step down if another node holds it. A failure of the
        store is logged and changes nothing now: the watchdog steps down at the deadline."""
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        try:
            async with asyncio.timeout(self.renew_within):
                lease = await self._store.acquire_leadership(self.node_id, self.lease_seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "event=leader_lease_renew_failed node=%s leader=%s error=%s action=%r",
                self.node_id,
                self.is_leader,
                type(exc).__name__,
                "check the connection to PostgreSQL; the leader steps down before its lease ends",
            )
            return
        if lease is None:
            self._lose("another node holds the lease")
            return
        if self._epoch is not None and lease.epoch != self._epoch:
            self._lose("the lease was renewed in a new term")
        if loop.time() >= sent_at + self.renew_within:
            return  # too late to count on: the watchdog would have stepped down meanwhile
        self._deadline = sent_at + self.renew_within
        self._arm(loop)
        if self._epoch is None:
            self._epoch = lease.epoch
            log.info("event=leader_gained node=%s epoch=%d", self.node_id, lease.epoch)
            self._on_gain(lease.epoch)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._watchdog = None
        if self.is_leader and asyncio.get_running_loop().time() >= self._deadline:
            self._lose("the lease could not be renewed in time")

    def _lose(self, why: str) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        epoch, self._epoch = self._epoch, None
        if epoch is None:
            return
        log.warning("event=leader_lost node=%s epoch=%d reason=%r", self.node_id, epoch, why)
        self._on_loss(epoch)

    async def release(self) -> None:
        """A clean stop: give the lease up now so that another node takes over at once."""
        epoch = self._epoch
        self._lose("stopping")
        if epoch is None:
            return
        try:
            async with asyncio.timeout(self.renew_within):
                await self._store.release_leadership(self.node_id, epoch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("event=leader_release_failed node=%s error=%s", self.node_id, exc)
