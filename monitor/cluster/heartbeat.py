"""The member row's heartbeat, written from a thread of its own.

A node's event loop can be busy for longer than ``dead_after`` while the node is
well: a start-up or a reshard scheduling tens of thousands of jobs, a loop
saturated by probing. Heartbeats written from that loop stalled, the others
declared the node dead and took its targets, which made *their* loops busy in
turn: three nodes of 20,000 targets starting together thrashed for six minutes
(bench/cluster_scale.py). So the member row is upserted from a small thread with
its own event loop and its own connection, which a busy main loop cannot delay.

A node whose loop is truly stuck must still die: the main loop stamps its
progress (``progressed``) every heartbeat interval from a timer, and the thread
writes only while that stamp is younger than ``stuck_after`` (the larger of three
``dead_after`` and ``STUCK_AFTER_FLOOR``, derived rather than configured: the
stamp ages only while the loop runs nothing at all, which a start-up or reshard
of tens of thousands of targets does for seconds, not a minute; and a wedged
node's targets still move within a minute or so). Past it the thread withholds
the heartbeat and the others declare the node dead ``dead_after`` later.

Only the member row is written here. Reading the members, working out the shard
and the leader's lease stay on the main loop (monitor/cluster/node.py): a lease
renewed by this thread would keep a leader whose loop cannot act on it, and its
safety (a leader that cannot renew in time steps down before anyone can take
over) rests on the loop that acts being the loop that renews.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from monitor.store import Store

log = logging.getLogger(__name__)

# The shortest time a main loop may show no progress before the heartbeats stop.
STUCK_AFTER_FLOOR = 60.0


def stuck_after(dead_after: float) -> float:
    """How long the main loop may show no progress before this node stops beating."""
    return max(3 * dead_after, STUCK_AFTER_FLOOR)


@dataclass(frozen=True)
class Announcement:
    """What the member row says besides "alive" (set by the main loop, read here)."""

    listen: str
    started_at: float
    version: str
    config_digest: str
    blind: bool
    location: str


class HeartbeatThread:
    """Upserts the member row every ``interval`` from its own thread and event loop,
    while the main loop has called ``progressed`` within ``stuck_after`` seconds."""

    def __init__(
        self,
        open_store: Callable[[], Awaitable[Store]],
        node_id: str,
        interval: float,
        stuck_after: float,
        announcement: Announcement,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self._open_store = open_store
        self.node_id = node_id
        self.interval = interval
        self.stuck_after = stuck_after
        self._on_failure = on_failure  # called from the thread: must be thread-safe
        # Plain attributes shared with the thread: each is replaced whole (one reference
        # or float store), which the interpreter makes atomic; nothing else is shared.
        self._announcement = announcement
        self._progress = time.monotonic()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._first_beat: concurrent.futures.Future[None] = concurrent.futures.Future()

    def progressed(self, announcement: Announcement) -> None:
        """The main loop ran (call it from there): beat on, announcing ``announcement``."""
        self._announcement = announcement
        self._progress = time.monotonic()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self, within: float) -> None:
        """Start the thread and wait (at most ``within`` seconds) for its first heartbeat;
        raises what kept it from beating (the thread is then gone)."""
        self._thread = threading.Thread(
            target=self._main, name=f"cluster-heartbeat-{self.node_id}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._first_beat), within)
        except BaseException:
            await self.stop(within)
            raise

    async def stop(self, within: float) -> None:
        """Stop beating and wait (at most ``within`` seconds) for the thread to end, so
        that no late heartbeat brings the member row back after the node left."""
        self._stopping = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the thread's loop has closed already
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, within)
            if thread.is_alive():
                log.warning(
                    "event=cluster_heartbeat_thread_stuck node=%s action=%r",
                    self.node_id,
                    "the member row may linger as a dead member; it is harmless",
                )

    # ------------------------------------------------------------------ in the thread

    def _main(self) -> None:
        try:
            asyncio.run(self._beat_until_stopped())
        except BaseException as exc:  # the thread must never die silently
            if not self._first_beat.done():
                self._first_beat.set_exception(exc)
            log.exception("event=cluster_heartbeat_thread_failed node=%s", self.node_id)

    async def _beat_until_stopped(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        if self._stopping:
            return
        store = await self._open_store()
        try:
            if self._stopping:
                return  # start() gave up waiting: the event loop beats instead
            await self._beat(store, first=True)
            try:
                self._first_beat.set_result(None)
            except concurrent.futures.InvalidStateError:
                return  # start() gave up waiting meanwhile
            withheld = False
            while not self._stopping:
                try:
                    async with asyncio.timeout(self.interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                if self._stopping:
                    return
                silent = time.monotonic() - self._progress
                if silent > self.stuck_after:
                    if not withheld:
                        log.error(
                            "event=cluster_heartbeat_withheld node=%s loop_silent_seconds=%.0f "
                            "action=%r",
                            self.node_id,
                            silent,
                            "the event loop has made no progress: the other nodes take this "
                            "node's targets; restart it if it does not recover",
                        )
                    withheld = True
                    continue
                if withheld:
                    log.warning("event=cluster_heartbeat_resumed node=%s", self.node_id)
                    withheld = False
                await self._beat(store, first=False)
        finally:
            await store.close()

    async def _beat(self, store: Store, *, first: bool) -> None:
        announcement = self._announcement
        try:
            async with asyncio.timeout(self.interval * 2):
                await store.heartbeat(self.node_id, **asdict(announcement))
        except Exception as exc:
            if first:
                raise
            self._on_failure()
            log.warning(
                "event=cluster_heartbeat_failed node=%s error=%s action=%r",
                self.node_id,
                type(exc).__name__,
                "check the connection to PostgreSQL; the node keeps probing its shard",
            )
