"""Alerting: the store, the incident manager, the notifier and their background loops.

The daemon hands it subscription status changes; everything from there to a
delivered page lives here. Status changes go through a queue consumed by one
task, so they are applied in order and never block probing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.catalog import Catalog
from monitor.channels import build_channel
from monitor.channels.base import Channel
from monitor.config import ConfigError, ConfigIssue
from monitor.engine.model import IncidentEvent
from monitor.housekeeping import Housekeeping, SetSla
from monitor.incident_manager import FailingChecks, IncidentManager
from monitor.links import LinkSigner, key_file
from monitor.notify.notifier import Notifier, NotifierMetrics, RetryPolicy
from monitor.notify.templates import TemplateRenderer
from monitor.notify.undelivered import UndeliveredNote
from monitor.probe import Status
from monitor.store import Store
from monitor.vendor import VendorBoard, VendorChange

log = logging.getLogger(__name__)
_STOP_GRACE = 10.0  # seconds the ticker and notifier get to finish their step at stop

# A change for the incident manager, applied in arrival order: (what, apply it)
Change = tuple[str, Callable[[IncidentManager], Awaitable[None]]]
_BATCH = 2000  # queued changes applied between two history writes
_YIELD_EVERY = 100  # changes applied between two yields to the event loop
# incident events whose series exist from start-up, so rates and increases have data
_COUNTED_FROM_START = ("opened", "escalated", "reminder", "acknowledged", "resolved", "reopened")


def store_url(catalog: Catalog, base: Path) -> str:
    """The configured database, or SQLite in the data directory."""
    settings = catalog.config.monitor
    if settings.store:
        return settings.store
    data_dir = Path(settings.data_dir)
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    return f"sqlite:///{data_dir / 'csp-monitor.db'}"


def data_dir(catalog: Catalog, base: Path) -> Path:
    path = Path(catalog.config.monitor.data_dir)
    return path if path.is_absolute() else base / path


def audit_key(catalog: Catalog, base: Path) -> bytes:
    """The key of the audit chain: configured, else a file in the data directory."""
    configured = catalog.config.monitor.audit_key
    if configured is not None:
        return configured.get_secret_value().encode()
    return key_file(data_dir(catalog, base), "audit.key")


def build_channels(catalog: Catalog, http: aiohttp.ClientSession, base: Path) -> dict[str, Channel]:
    """Every configured channel; relative folders are relative to the config file."""
    return {
        name: _build_channel(name, options, http, base)
        for name, options in catalog.config.channels.items()
    }


def _build_channel(name: str, options: Any, http: aiohttp.ClientSession, base: Path) -> Channel:
    directory = getattr(options, "directory", None)
    if isinstance(directory, str) and not Path(directory).is_absolute():
        options = options.model_copy(update={"directory": str(base / directory)})
    return build_channel(name, options, http)


def _retry_policy(catalog: Catalog) -> RetryPolicy:
    retry = catalog.config.notifications.retry
    return RetryPolicy(retry.initial, retry.max_delay, retry.max_attempts)


def renderer_for(catalog: Catalog, base: Path) -> TemplateRenderer:
    settings = catalog.config.notifications
    directories = []
    if settings.templates_dir:
        path = Path(settings.templates_dir)
        directories.append(path if path.is_absolute() else base / path)
    return TemplateRenderer(directories, sms_max_segments=settings.sms_max_segments)


class Alerting:
    def __init__(
        self,
        registry: CollectorRegistry,
        wall: Callable[[], float] = time.time,
        vendor: VendorBoard | None = None,
    ) -> None:
        self._registry = registry
        self.vendor = vendor or VendorBoard()
        self._wall = wall
        self._notifier_metrics = NotifierMetrics(registry)
        self._open_incidents = Gauge(
            "csp_monitor_incidents_open",
            "Open incidents by severity",
            ["severity"],
            registry=registry,
        )
        self._incident_opened = Gauge(
            "csp_monitor_incident_opened_timestamp_seconds",
            "Unix time each open incident opened (customer * for a vendor-side incident)",
            ["customer", "service", "severity", "incident"],
            registry=registry,
        )
        self._incident_events = Counter(
            "csp_monitor_incident_events",
            "Incident timeline events stored: opened, escalated, acknowledged, resolved, …",
            ["event"],
            registry=registry,
        )
        for event in _COUNTED_FROM_START:
            self._incident_events.labels(event)
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._first_statuses = False  # a subscription got its first status since the start
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.store: Store | None = None
        self.manager: IncidentManager | None = None
        self.notifier: Notifier | None = None
        self.housekeeping: Housekeeping | None = None
        self._catalog: Catalog | None = None
        self._http: aiohttp.ClientSession | None = None
        self._base = Path(".")
        # in a cluster: subscriptions whose status history other live nodes keep writing
        self.kept_open: Callable[[], Collection[tuple[str, str]]] = lambda: ()

    async def start(
        self,
        catalog: Catalog,
        http: aiohttp.ClientSession,
        base: Path,
        failing_checks: FailingChecks,
        set_sla: SetSla = lambda customer, service, value, coverage: None,
        renderer: TemplateRenderer | None = None,
    ) -> None:
        """Open the store and start the loops; ``renderer``: the one start-up checked."""
        self._catalog, self._http, self._base = catalog, http, base
        self.store = await Store.open(store_url(catalog, base), audit_key=audit_key(catalog, base))
        self.store.kept_open = self.kept_open
        signer = LinkSigner.from_data_dir(data_dir(catalog, base))
        self.notifier = self._build_notifier(catalog, http, base)
        self.manager = IncidentManager(
            self.store,
            renderer or renderer_for(catalog, base),
            signer,
            failing_checks=failing_checks,
            wake=self.notifier.wake,
            on_events=self._count_events,
            wall=self._wall,
            vendor=self.vendor,
        )
        self.manager.configure(catalog)
        await self.manager.start(self._wall())
        self.housekeeping = Housekeeping(self.store, set_sla, self.notifier.wake, base, self._wall)
        self.housekeeping.start(catalog)
        settings = catalog.config
        self._tasks = [
            asyncio.create_task(self._consume(), name="status-changes"),
            asyncio.create_task(self._ticker(settings.incidents.tick_interval), name="ticker"),
            asyncio.create_task(
                self.notifier.run(self._stop, settings.notifications.poll_interval), name="notifier"
            ),
        ]
        log.info(
            "event=alerting_started store=%s channels=%d",
            self.store.url,
            len(self.notifier.channels),
        )

    def _build_notifier(
        self, catalog: Catalog, http: aiohttp.ClientSession, base: Path
    ) -> Notifier:
        assert self.store is not None
        settings = catalog.config.notifications
        return Notifier(
            self.store,
            build_channels(catalog, http, base),
            self._notifier_metrics,
            retry=_retry_policy(catalog),
            rate_limits=settings.rate_limit_per_minute,
            wall=self._wall,
            undelivered=UndeliveredNote(
                renderer_for(catalog, base), sms_max_segments=settings.sms_max_segments
            ),
        )

    async def record_config(self, source: str, digest: str, result: str, **detail: object) -> None:
        """Evidence of which configuration ran when: every load, reload and rejection."""
        if self.store is None:
            return
        try:
            await self.store.audit(
                self._wall(), "config", source, None, digest=digest, result=result, **detail
            )
        except Exception:
            log.exception("event=audit_failed kind=config")

    def build_channels(self, catalog: Catalog) -> dict[str, Channel]:
        """A reloaded config's channels, built before anything is swapped; ConfigError
        naming each channel that cannot be set up."""
        if self._http is None:
            return {}
        built: dict[str, Channel] = {}
        issues: list[ConfigIssue] = []
        for name, options in catalog.config.channels.items():
            try:
                built[name] = _build_channel(name, options, self._http, self._base)
            except Exception as exc:  # never its message: it may quote a credential
                message = f"cannot be set up: {type(exc).__name__}"
                issues.append(ConfigIssue(f"channels.{name}", message))
        if issues:
            raise ConfigError(issues, catalog.source)
        return built

    def configure(
        self, catalog: Catalog, renderer: TemplateRenderer, channels: dict[str, Channel]
    ) -> None:
        """A reload whose catalog, templates and channels were all built and checked
        first: swapped in together. Open incidents keep the policy they opened with."""
        self._catalog = catalog
        if self.housekeeping is not None:
            self.housekeeping.configure(catalog)
        if self.manager is not None:
            self.manager.configure(catalog)
            self.manager.set_renderer(renderer)
        if self.notifier is not None:
            self.notifier.undelivered = UndeliveredNote(
                renderer, sms_max_segments=catalog.config.notifications.sms_max_segments
            )
            self.notifier.configure(
                channels,
                _retry_policy(catalog),
                catalog.config.notifications.rate_limit_per_minute,
            )

    def subscription_changed(
        self,
        customer: str,
        service: str,
        previous: Status,
        current: Status,
        reason: str,
        at: float,
        since: float | None = None,
    ) -> None:
        """A confirmed change at ``at``; the new status began at ``since`` (the first
        probe of the streak that confirmed it)."""
        if previous is Status.UNKNOWN and current is not Status.UNKNOWN:
            self._first_statuses = True  # its SLA series can exist now: see _consume
        self._queue.put_nowait(
            (
                f"{customer}/{service} {previous}→{current}",
                lambda m: m.status_changed(
                    customer, service, previous, current, reason, at, since=since
                ),
            )
        )

    def vendor_changed(
        self, change: VendorChange, at: float, *, notify: bool = False, maintenance: bool = False
    ) -> None:
        self._queue.put_nowait(
            (
                f"vendor {change.customer}/{change.current.service}",
                lambda m: m.vendor_changed(
                    change, at, notify_advisory=notify, feed_maintenance=maintenance
                ),
            )
        )

    async def _consume(self) -> None:
        while True:
            change = await self._queue.get()
            assert self.manager is not None
            taken = 1
            try:
                # what piled up meanwhile is applied as one batch: its history is written in
                # one transaction (10,000 status changes at start-up took a minute one by one)
                async with self.manager.history_batch():
                    await self._apply(change)
                    while not self._queue.empty() and taken < _BATCH:
                        taken += 1
                        await self._apply(self._queue.get_nowait())
                        if taken % _YIELD_EVERY == 0:
                            # a change that only goes to the history never waits on I/O:
                            # let probes and scrapes run
                            await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception:
                # kept by the manager and written with the next batch
                log.exception("event=status_history_failed changes=%d", taken)
            finally:
                for _ in range(taken):
                    self._queue.task_done()
            if self._first_statuses and self.housekeeping is not None:
                # their history is written: the month's SLA figure exists for them now
                self._first_statuses = False
                self.housekeeping.refresh_soon()

    async def _apply(self, change: Change) -> None:
        what, apply = change
        try:
            assert self.manager is not None
            await apply(self.manager)
        except asyncio.CancelledError:
            raise
        except Exception:
            # the store may be down: the change is logged; the next change or tick
            # brings the incident up to date
            log.exception("event=incident_update_failed change=%r", what)

    async def _ticker(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                assert self.manager is not None
                await self.manager.tick(self._wall())
                self._export_open()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=tick_failed action=%r", "check the store; ticks retry")
            try:
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def _count_events(self, events: Sequence[IncidentEvent]) -> None:
        for event in events:
            self._incident_events.labels(event.kind).inc()

    def _export_open(self) -> None:
        if self.manager is None:
            return
        counts = {"minor": 0, "major": 0, "critical": 0}
        self._incident_opened.clear()
        for incident in self.manager.open_incidents():
            counts[incident.severity.value] += 1
            self._incident_opened.labels(
                incident.customer, incident.service, incident.severity.value, incident.id
            ).set(incident.opened_at)
        for severity, count in counts.items():
            self._open_incidents.labels(severity).set(count)

    async def drain(self) -> None:
        """Wait until queued status changes are applied (tests, shutdown)."""
        await self._queue.join()

    async def close(self) -> None:
        self._stop.set()
        if self.housekeeping is not None:
            await self.housekeeping.close()
        try:
            await asyncio.wait_for(self.drain(), 5.0)
        except TimeoutError:
            log.warning("event=shutdown_incomplete pending_changes=%d", self._queue.qsize())
        # The ticker and the notifier see _stop and end after the step they are in: let
        # them finish it. A task cancelled inside a SQLite transaction leaves the database
        # locked past this process's end (the next start fails); the consumer, idle once
        # drained, is the only one cancelled at once.
        loops = [task for task in self._tasks if task.get_name() != "status-changes"]
        if loops:
            await asyncio.wait(loops, timeout=_STOP_GRACE)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            for task in stuck:  # never let shutdown hang on one of them
                log.warning("event=shutdown_task_stuck task=%s", task.get_name())
        if self.manager is not None:
            try:
                await self.manager.close(self._wall())
            except Exception:
                log.exception("event=history_close_failed")
        if self.store is not None:
            await self.store.close()
        log.info("event=alerting_stopped at=%s", datetime.fromtimestamp(self._wall(), UTC))
