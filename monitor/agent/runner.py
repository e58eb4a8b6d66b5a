"""``csp-monitor agent``: probe for one location from where no node can run.

A location whose network cannot reach the database (a probe box in a Beijing
Unicom data centre, say) runs an agent instead of a node. The agent:

* pulls its assignment, the targets listed for its location, from any node's API
  (``GET /api/v1/agent/assignment``) and pulls it again every ``reload_every``
  seconds, rebuilding its schedule only when the server's config changed it;
* probes them with the same check plugins and the same scheduler as a node,
  applies each target's thresholds (so a location's ``down`` is confirmed where
  it was seen, exactly as a node of that location would), and
* pushes what it saw in batches (``POST /api/v1/agent/results``) every
  ``push_every`` seconds, empty ones included (they say the agent is alive).
  While the server cannot be reached, results wait in a bounded buffer and go
  late, with their own times, oldest first.

The agent keeps no state on disk: a restarted agent starts from ``unknown``, as
a restarted node does. Its token is read from a file or the environment, never
logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from checks import check_types
from monitor import __version__
from monitor.agent.assignment import AssignmentError, targets_from
from monitor.agent.buffer import ResultBuffer
from monitor.catalog import TargetSpec
from monitor.metrics import DaemonMetrics
from monitor.process_memory import release_closed_transports, tune_malloc
from monitor.runner import new_http_session, probe_context, run_probe
from monitor.scheduler import ProbeScheduler
from monitor.status import StatusBoard, observe

log = logging.getLogger("monitor.agent")

BATCH = 1000  # results per push: well under the server's limit of 5,000 and 1 MiB
MAX_BACKOFF = 30.0  # seconds between attempts while the server cannot be reached


class Agent:
    """One location's prober without a database; see the module's docstring."""

    def __init__(
        self,
        server: str,
        location: str,
        token: str,
        *,
        name: str = "agent",
        source_address: str | None = None,
        push_every: float = 1.0,
        reload_every: float = 30.0,
        buffer_limit: int = 100_000,
        max_concurrency: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.server = server.rstrip("/")
        self.location = location
        self.name = name
        self.source_address = source_address
        self.push_every = push_every
        self.reload_every = reload_every
        self.buffer = ResultBuffer(buffer_limit)
        self.wall = wall
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self.targets: dict[str, TargetSpec] = {}
        self.version: str | None = None  # of the assignment in use
        self.board = StatusBoard()
        self.scheduler = ProbeScheduler(
            self._probe, DaemonMetrics(CollectorRegistry(), __version__), wall
        )
        self.scheduler.concurrency = max_concurrency
        self._probes: aiohttp.ClientSession | None = None
        self._server: aiohttp.ClientSession | None = None
        self._cache: dict[str, Any] = {}
        self._ssl_contexts: dict[tuple[bool, str | None, bool], ssl.SSLContext] = {}
        self._stop = asyncio.Event()
        self.pushed = 0  # results the server took

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Probe and push until ``stop()``; what is still buffered then is pushed once more."""
        tune_malloc(os.environ)  # as the daemon does: see monitor/process_memory.py
        release_closed_transports()
        self._probes = new_http_session(self.source_address)
        self._server = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            while not self._stop.is_set() and not await self.reload():
                await self._sleep(min(self.reload_every, 5.0))  # the server is not there yet
            self.scheduler.start()
            loops = [
                asyncio.create_task(self._pushing(), name="agent-push"),
                asyncio.create_task(self._reloading(), name="agent-reload"),
            ]
            await self._stop.wait()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self.scheduler.shutdown()
            await self.push_once()  # the last results, if the server takes them
        finally:
            await self._probes.close()
            await self._server.close()

    def stop(self) -> None:
        self._stop.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    # ------------------------------------------------------------------ assignment

    async def reload(self) -> bool:
        """Pull the assignment; apply it when it changed. Whether the server answered."""
        assert self._server is not None
        headers = dict(self._headers)
        if self.version is not None:
            headers["If-None-Match"] = f'"{self.version}"'
        try:
            async with self._server.get(
                f"{self.server}/api/v1/agent/assignment",
                params={"location": self.location},
                headers=headers,
                ssl=self._ssl,
            ) as response:
                if response.status == 304:
                    return True
                if response.status != 200:
                    log.error(
                        "event=agent_assignment_refused status=%d answer=%r",
                        response.status,
                        (await response.text())[:300],
                    )
                    return False
                document = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("event=agent_server_unreachable during=assignment error=%s", _why(exc))
            return False
        try:
            targets, problems = targets_from(document)
        except AssignmentError as exc:
            log.error("event=agent_assignment_unusable problem=%r", str(exc))
            return False
        for problem in problems:
            log.error("event=agent_target_skipped problem=%r", problem)
        self.apply(targets, str(document.get("version")))
        return True

    def apply(self, targets: dict[str, TargetSpec], version: str) -> None:
        """Probe ``targets`` from now on (a changed target starts over from ``unknown``)."""
        _, changed, removed = self.scheduler.apply(targets)
        self.board.forget(changed + removed, ())
        self.targets, self.version = targets, version
        log.info(
            "event=agent_assignment location=%s version=%s targets=%d",
            self.location,
            version,
            len(targets),
        )

    async def _reloading(self) -> None:
        while True:
            await asyncio.sleep(self.reload_every)
            await self.reload()

    # ------------------------------------------------------------------ probing

    async def _probe(self, target_id: str) -> None:
        spec = self.targets.get(target_id)
        if spec is None or self._probes is None:
            return
        # at most max_concurrency at once: the scheduler's workers
        result = await run_probe(
            check_types()[spec.target.type],
            spec.target,
            spec.options,
            probe_context(
                spec,
                self._probes,
                self.wall,
                self._ssl_contexts,
                self._cache,
                self.source_address,
            ),
        )
        if self.targets.get(target_id) is not spec:
            return  # the assignment changed while it was being probed
        now = self.wall()
        state = self.board.target(target_id, now)
        transition = observe(state, target_id, result, spec.timing, now)
        if transition is not None:
            log.info(
                "event=location_status target=%s location=%s from=%s to=%s reason=%r",
                target_id,
                self.location,
                transition.previous,
                transition.current,
                transition.reason,
            )
        self.buffer.add(
            {
                "target": target_id,
                "at": now,
                "status": state.status.value,
                "since": state.since,
                "reason": result.reason[:256],
                "probe": {  # the figures the server exports as this location's probe_*
                    "success": result.success,
                    "duration": round(result.duration, 6),
                    "phases": _finite(result.phases),
                    "facts": _finite(result.facts),
                },
            }
        )
        self.scheduler.set_retrying(spec, state.pending)

    # ------------------------------------------------------------------ pushing

    async def _pushing(self) -> None:
        backoff = self.push_every
        while True:
            await asyncio.sleep(backoff)
            delivered = await self.push_once()
            backoff = self.push_every if delivered else min(backoff * 2, MAX_BACKOFF)

    async def push_once(self) -> bool:
        """Push what is buffered, a batch at a time (an empty one when there is nothing:
        the server hears the agent is alive). Whether the server took everything."""
        assert self._server is not None
        while True:
            batch = self.buffer.peek(BATCH)
            body = {"location": self.location, "agent": self.name, "results": batch}
            try:
                async with self._server.post(
                    f"{self.server}/api/v1/agent/results",
                    json=body,
                    headers=self._headers,
                    ssl=self._ssl,
                ) as response:
                    answer = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "event=agent_server_unreachable during=push error=%s buffered=%d",
                    _why(exc),
                    len(self.buffer),
                )
                return False
            if status == 400:
                # the server will never take this batch (an agent's clock far ahead, a
                # newer server's rules): dropped, said, and the rest goes on
                log.error("event=agent_batch_refused results=%d answer=%r", len(batch), answer)
                self.buffer.delivered(batch)
            elif status != 200:
                log.warning(
                    "event=agent_push_failed status=%d answer=%r buffered=%d",
                    status,
                    answer[:300],
                    len(self.buffer),
                )
                return False
            else:
                self.buffer.delivered(batch)
                self.pushed += len(batch)
            if self.buffer.dropped:
                log.error(
                    "event=agent_results_dropped count=%d action=%r",
                    self.buffer.dropped,
                    "the server was unreachable longer than the buffer holds; raise --buffer",
                )
                self.buffer.dropped = 0
            if len(self.buffer) == 0 or not batch:
                return True


def _finite(figures: dict[str, float]) -> dict[str, float]:
    """Figures JSON can carry (no NaN or infinity), rounded as the exposition shows them."""
    return {name: round(value, 6) for name, value in figures.items() if math.isfinite(value)}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
