"""Status changes handed from the node that probes to the node that leads, through the store.

Every node (the leader too) queues the changes it confirms in the
``status_changes`` table and NOTIFYs; the leader applies them in id order and
deletes them. A change queued while no node leads, or while leadership moves,
waits in the table for the next leader: nothing is lost between terms. A
change the old leader applied but had not yet deleted is applied again by the
next: applying a change twice changes nothing the second time (the history
records a status only when it differs, an incident follows the status it
already has).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from checks.vendor_common import VendorStatus
from monitor.probe import Status
from monitor.store import Store
from monitor.store.cluster import CHANGES_CHANNEL
from monitor.vendor import VendorState

log = logging.getLogger(__name__)

# Changes kept in memory while the store cannot be written; past this the oldest are
# dropped (the leader's tick still opens an incident for a subscription left down).
MAX_BUFFERED = 100_000
_RETRY_AFTER = 1.0  # seconds between attempts to queue while the store fails
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class StatusChange:
    customer: str
    service: str
    previous: Status
    current: Status
    reason: str
    at: float
    since: float | None
    down_from: tuple[str, ...] = ()  # the probe locations that said down


@dataclass(frozen=True, slots=True)
class VendorReport:
    customer: str
    previous: VendorState | None
    state: VendorState
    at: float
    notify: bool
    maintenance: bool


Change = StatusChange | VendorReport


def encode(change: Change) -> str:
    if isinstance(change, StatusChange):
        return json.dumps(
            {
                "kind": "status",
                "customer": change.customer,
                "service": change.service,
                "previous": change.previous.value,
                "current": change.current.value,
                "reason": change.reason,
                "at": change.at,
                "since": change.since,
                "down_from": list(change.down_from),
            }
        )
    return json.dumps(
        {
            "kind": "vendor",
            "customer": change.customer,
            "previous": change.previous.to_json() if change.previous is not None else None,
            "state": change.state.to_json(),
            "at": change.at,
            "notify": change.notify,
            "maintenance": change.maintenance,
        }
    )


def decode(payload: str) -> Change:
    """A queued change (ValueError/KeyError/TypeError when it is not one)."""
    data: dict[str, Any] = json.loads(payload)
    if data["kind"] == "status":
        return StatusChange(
            str(data["customer"]),
            str(data["service"]),
            Status(data["previous"]),
            Status(data["current"]),
            str(data["reason"]),
            float(data["at"]),
            None if data["since"] is None else float(data["since"]),
            # queued by a node of a version before locations: none
            tuple(str(location) for location in data.get("down_from") or ()),
        )
    if data["kind"] == "vendor":
        previous = data["previous"]
        return VendorReport(
            str(data["customer"]),
            None if previous is None else _vendor_state(previous),
            _vendor_state(data["state"]),
            float(data["at"]),
            bool(data["notify"]),
            bool(data["maintenance"]),
        )
    raise ValueError(f"unknown change kind {data['kind']!r}")


def _vendor_state(data: dict[str, Any]) -> VendorState:
    # the feed's own record (checks/vendor_common.py) is what every vendor check reports
    return cast(VendorState, VendorStatus(**data))


class ChangeWriter:
    """Queues this node's changes in the store, in order, without ever blocking probing."""

    def __init__(self, store: Store, node_id: str) -> None:
        self._store = store
        self._node_id = node_id
        self._buffer: list[str] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-change-writer")

    def put(self, change: Change) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.pop(0)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "event=status_changes_dropped count=%d action=%r",
                    self.dropped,
                    "check the connection to PostgreSQL; the leader's ticks reconcile",
                )
        self._buffer.append(encode(change))
        self._idle.clear()
        self._ready.set()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                batch = self._buffer[:_BATCH]
                try:
                    await self._store.queue_changes(self._node_id, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "event=status_changes_not_queued count=%d error=%s action=%r",
                        len(batch),
                        type(exc).__name__,
                        "kept in memory and queued again shortly; check PostgreSQL",
                    )
                    await asyncio.sleep(_RETRY_AFTER)
                    continue
                del self._buffer[: len(batch)]
            self._idle.set()

    async def drain(self, seconds: float) -> None:
        """Wait until what was put is queued (a clean stop), at most ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            log.warning("event=status_changes_unqueued count=%d", len(self._buffer))

    async def close(self, seconds: float = 5.0) -> None:
        await self.drain(seconds)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


Apply = Callable[[list[Change]], Awaitable[None]]


class ChangeReader:
    """The leader's side: applies queued changes in order, woken by NOTIFY, else polling."""

    def __init__(self, store: Store, apply: Apply, poll_interval: float = 1.0) -> None:
        self._store = store
        self._apply = apply
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        close: Callable[[], Awaitable[None]] | None = None
        try:
            try:
                close = await self._store.listen(CHANGES_CHANNEL, self._wake.set)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event=status_changes_listen_failed error=%s fallback=poll", exc)
            while not stop.is_set():
                self._wake.clear()
                try:
                    applied = await self.apply_queued()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event=status_changes_apply_failed action=%r", "retried")
                    applied = 0
                if applied:
                    continue  # there may be more
                await _either(self._wake, stop, self._poll_interval)
        finally:
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.debug("event=status_changes_listen_close_failed", exc_info=True)

    async def apply_queued(self) -> int:
        """Apply one batch of queued changes and delete them; returns how many."""
        queued = await self._store.queued_changes(_BATCH)
        if not queued:
            return 0
        changes: list[Change] = []
        for row in queued:
            try:
                changes.append(decode(row.payload))
            except (ValueError, KeyError, TypeError):
                log.error("event=status_change_unreadable id=%d node=%s", row.id, row.node_id)
        await self._apply(changes)
        await self._store.forget_changes([row.id for row in queued])
        return len(queued)


async def _either(first: asyncio.Event, second: asyncio.Event, seconds: float) -> None:
    """Wait until either event is set, at most ``seconds``."""
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
