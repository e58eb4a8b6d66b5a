"""What must run exactly once: the incident manager and its ticks, the notifier, housekeeping.

A single daemon runs them from start to stop. In a cluster only the leader
does, for as long as it holds the lease: ``LeaderDuties`` is built on a
store fenced with the leader's term (every write checks the epoch) when the
lease is gained, and stopped when it is lost, before the lease can run out
for another node (see cluster/leadership.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from monitor.catalog import Catalog
from monitor.channels.base import Channel
from monitor.engine.model import IncidentEvent
from monitor.housekeeping import Housekeeping, SetSla
from monitor.incident_manager import FailingChecks, IncidentManager
from monitor.links import LinkSigner
from monitor.notify.notifier import Notifier, NotifierMetrics, RetryPolicy
from monitor.notify.templates import TemplateRenderer
from monitor.notify.undelivered import UndeliveredNote
from monitor.oncall_book import OnCallBook
from monitor.oncall_messages import gap_messages
from monitor.store import Store
from monitor.vendor import VendorBoard

log = logging.getLogger(__name__)
STOP_GRACE = 10.0  # seconds the ticker and notifier get to finish their step at a clean stop


@dataclass
class IncidentMetrics:
    """The incident series: kept by whoever runs the duties (the leader in a cluster)."""

    open_incidents: Gauge
    incident_opened: Gauge
    incident_events: Counter

    def count(self, events: Sequence[IncidentEvent]) -> None:
        for event in events:
            self.incident_events.labels(event.kind).inc()

    def export_open(self, manager: IncidentManager) -> None:
        counts = {"minor": 0, "major": 0, "critical": 0}
        self.incident_opened.clear()
        for incident in manager.open_incidents():
            counts[incident.severity.value] += 1
            self.incident_opened.labels(
                incident.customer, incident.service, incident.severity.value, incident.id
            ).set(incident.opened_at)
        for severity, count in counts.items():
            self.open_incidents.labels(severity).set(count)

    def clear(self) -> None:
        """A node that stops leading exports no incidents: a sum over nodes stays right."""
        self.incident_opened.clear()
        for severity in ("minor", "major", "critical"):
            self.open_incidents.labels(severity).set(0)


@dataclass
class DutySettings:
    """Everything the duties are built from, besides the store."""

    catalog: Catalog
    renderer: TemplateRenderer
    channels: dict[str, Channel]
    signer: LinkSigner
    failing_checks: FailingChecks
    set_sla: SetSla
    base: Path
    vendor: VendorBoard
    oncall_gaps: Gauge  # csp_monitor_oncall_gap_seconds, kept by whoever runs the duties


def retry_policy(catalog: Catalog) -> RetryPolicy:
    retry = catalog.config.notifications.retry
    return RetryPolicy(retry.initial, retry.max_delay, retry.max_attempts)


class Duties:
    """The manager, notifier and housekeeping on one store, and the loops that drive them."""

    def __init__(
        self,
        store: Store,
        settings: DutySettings,
        notifier_metrics: NotifierMetrics,
        incident_metrics: IncidentMetrics,
        wall: Callable[[], float] = time.time,
        *,
        leader: bool = False,
    ) -> None:
        catalog = settings.catalog
        notifications = catalog.config.notifications
        self.store = store
        self._wall = wall
        self._metrics = incident_metrics
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.notifier = Notifier(
            store,
            settings.channels,
            notifier_metrics,
            retry=retry_policy(catalog),
            rate_limits=notifications.rate_limit_per_minute,
            wall=wall,
            undelivered=UndeliveredNote(
                settings.renderer, sms_max_segments=notifications.sms_max_segments
            ),
        )
        self.manager = IncidentManager(
            store,
            settings.renderer,
            settings.signer,
            failing_checks=settings.failing_checks,
            wake=self.notifier.wake,
            on_events=incident_metrics.count,
            wall=wall,
            vendor=settings.vendor,
            oncall=OnCallBook(store, wall, settings.oncall_gaps),
        )
        self.manager.configure(catalog)
        self.housekeeping = Housekeeping(
            store, settings.set_sla, self.notifier.wake, settings.base, wall, self.oncall_daily
        )
        self._catalog = catalog
        self._leader = leader  # a cluster's leader: see IncidentManager.start

    async def start(self) -> None:
        """Rebuild the manager's memory from the store, then start the loops."""
        await self.manager.start(self._wall(), adopt_statuses=self._leader)
        self.housekeeping.start(self._catalog)
        config = self._catalog.config
        self._tasks = [
            asyncio.create_task(self._ticker(config.incidents.tick_interval), name="ticker"),
            asyncio.create_task(
                self.notifier.run(self._stop, config.notifications.poll_interval),
                name="notifier",
            ),
        ]

    def configure(
        self, catalog: Catalog, renderer: TemplateRenderer, channels: dict[str, Channel]
    ) -> None:
        """A reload checked whole first: swapped in together (see Alerting.configure)."""
        self._catalog = catalog
        notifications = catalog.config.notifications
        self.housekeeping.configure(catalog)
        self.manager.configure(catalog)
        self.manager.set_renderer(renderer)
        self.notifier.undelivered = UndeliveredNote(
            renderer, sms_max_segments=notifications.sms_max_segments
        )
        self.notifier.configure(
            channels, retry_policy(catalog), notifications.rate_limit_per_minute
        )

    async def oncall_daily(self) -> int:
        """The daily on-call check: gaps of the next 7 days logged, exported and, when
        there is one, told to ``monitor.ops_channels``; the messages queued."""
        manager, catalog = self.manager, self._catalog
        now = self._wall()
        try:
            await manager.oncall.refresh()
            gaps = manager.oncall.check_gaps(now)
            messages = gap_messages(manager.renderer, catalog, gaps, manager.oncall.zones, now)
            queued = await self.store.enqueue(messages, now)
        except Exception:
            log.exception("event=oncall_check_failed action=%r", "it runs again tomorrow")
            return 0
        log.info("event=oncall_checked gaps=%d queued=%d", sum(map(len, gaps.values())), queued)
        if queued:
            self.notifier.wake()
        return queued

    async def _ticker(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                await self.manager.tick(self._wall())
                self._metrics.export_open(self.manager)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=tick_failed action=%r", "check the store; ticks retry")
            try:
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """End the loops after the step they are in (within ``grace``), then cancel.

        A task cancelled inside a SQLite transaction leaves the database locked past
        this process's end, and a send cancelled half-way may have reached its
        recipient without being recorded: let both finish when there is time."""
        self._stop.set()
        await self.housekeeping.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            for task in stuck:  # never let a stop hang on one of them
                log.warning("event=shutdown_task_stuck task=%s", task.get_name())
