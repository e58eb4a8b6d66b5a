"""Alerting: the store, and the duties that turn status changes into pages.

The daemon hands it subscription status changes; everything from there to a
delivered page lives here. Status changes are applied in order by one task
and never block probing: through an in-memory queue in a daemon alone,
through the store to the leader in a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.catalog import Catalog
from monitor.channels import build_channel
from monitor.channels.base import Channel
from monitor.cluster.changes import Change as QueuedChange
from monitor.cluster.changes import (
    ChangeReader,
    ChangeWriter,
    StatusChange,
    VendorReport,
)
from monitor.config import ConfigError, ConfigIssue
from monitor.duties import STOP_GRACE as _STOP_GRACE
from monitor.duties import Duties, DutySettings, IncidentMetrics
from monitor.housekeeping import Housekeeping, SetSla
from monitor.incident_manager import FailingChecks, IncidentManager
from monitor.links import LinkSigner, key_file
from monitor.notify.notifier import Notifier, NotifierMetrics
from monitor.notify.templates import TemplateRenderer
from monitor.oncall_book import gap_gauge
from monitor.probe import Status
from monitor.status_history import BATCH as HISTORY_BATCH
from monitor.store import Store
from monitor.vendor import VendorBoard, VendorChange

log = logging.getLogger(__name__)
_RETRY_TERM = 1.0  # seconds between attempts to start a leader's duties

# A change for the incident manager, applied in arrival order: (what, apply it)
Change = tuple[str, Callable[[IncidentManager], Awaitable[None]]]
# Queued changes applied as one batch: their history is written together at its end, or
# every STATUS_BATCH on the way. A write is some 20 round trips through the database's
# thread whatever its size, and on a busy loop each waits behind every ready probe: at
# 2,000 a batch, 50,000 first statuses after a start took 90 s to be taken in.
_BATCH = HISTORY_BATCH
# Changes are applied for this long, then the loop runs what else is ready (probes,
# scrapes). A count (100) made the queue wait a whole loop turn every 100 changes, and a
# turn of a loop running 1,700 probes a second takes tens of milliseconds.
_SLICE = 0.02  # seconds
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


def link_signer(catalog: Catalog, base: Path) -> LinkSigner:
    """The signer of acknowledge links: configured key, else a file in the data directory."""
    configured = catalog.config.monitor.link_key
    if configured is not None:
        return LinkSigner(configured.get_secret_value().encode())
    return LinkSigner.from_data_dir(data_dir(catalog, base))


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


def renderer_for(catalog: Catalog, base: Path) -> TemplateRenderer:
    settings = catalog.config.notifications
    directories = []
    if settings.templates_dir:
        path = Path(settings.templates_dir)
        directories.append(path if path.is_absolute() else base / path)
    return TemplateRenderer(directories, sms_max_segments=settings.sms_max_segments)


class Alerting:
    """The store, and the duties that run once (see duties.py) fed with status changes.

    Alone, a daemon runs the duties from start to stop and feeds them through
    an in-memory queue. In a cluster (``start(..., node_id=…)``) every node
    queues its changes in the store (cluster/changes.py) and only the leader
    runs the duties, for the term of its lease (``lead``/``step_down``).
    """

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
        events = Counter(
            "csp_monitor_incident_events",
            "Incident timeline events stored: opened, escalated, acknowledged, resolved, …",
            ["event"],
            registry=registry,
        )
        for event in _COUNTED_FROM_START:
            events.labels(event)
        self._oncall_gaps = gap_gauge(registry)
        self._incident_metrics = IncidentMetrics(
            Gauge(
                "csp_monitor_incidents_open",
                "Open incidents by severity",
                ["severity"],
                registry=registry,
            ),
            Gauge(
                "csp_monitor_incident_opened_timestamp_seconds",
                "Unix time each open incident opened (customer * for a vendor-side incident)",
                ["customer", "service", "severity", "incident"],
                registry=registry,
            ),
            events,
        )
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        # subscriptions whose first status (since the start, or after a gap) was applied
        # since the last early SLA metric run: theirs is computed next (see _consume)
        self._first_statuses: set[tuple[str, str]] = set()
        self._consumer: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.store: Store | None = None
        self.duties: Duties | None = None
        self._settings: DutySettings | None = None
        self._url = ""
        self._application_name = "csp-monitor"
        self._audit_key = b""
        self._http: aiohttp.ClientSession | None = None
        self._base = Path(".")
        # in a cluster: subscriptions whose status history other live nodes keep writing
        self.kept_open: Callable[[], Collection[tuple[str, str]]] = lambda: ()
        self._writer: ChangeWriter | None = None
        self._term: _Term | None = None
        self.step_down_grace = _STOP_GRACE  # set by the daemon from the lease in a cluster

    # ------------------------------------------------------------------ what runs once

    @property
    def manager(self) -> IncidentManager | None:
        """The incident manager: None on a cluster node that does not lead."""
        return self.duties.manager if self.duties is not None else None

    @property
    def notifier(self) -> Notifier | None:
        return self.duties.notifier if self.duties is not None else None

    @property
    def housekeeping(self) -> Housekeeping | None:
        return self.duties.housekeeping if self.duties is not None else None

    def wake(self) -> None:
        """Messages were queued: the notifier (wherever it runs here) looks now."""
        if self.duties is not None:
            self.duties.notifier.wake()

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        catalog: Catalog,
        http: aiohttp.ClientSession,
        base: Path,
        failing_checks: FailingChecks,
        set_sla: SetSla = lambda customer, service, value, coverage: None,
        renderer: TemplateRenderer | None = None,
        *,
        node_id: str | None = None,
    ) -> None:
        """Open the store; alone, start the duties too. ``renderer``: the one start-up
        checked; ``node_id``: this node's id in a cluster (the duties wait for the lease)."""
        self._http, self._base = http, base
        self._url, self._audit_key = store_url(catalog, base), audit_key(catalog, base)
        self._application_name = f"csp-monitor {node_id}" if node_id else "csp-monitor"
        self.store = await Store.open(
            self._url, audit_key=self._audit_key, application_name=self._application_name
        )
        self.store.kept_open = self.kept_open
        self._settings = DutySettings(
            catalog=catalog,
            renderer=renderer or renderer_for(catalog, base),
            channels=build_channels(catalog, http, base),
            signer=link_signer(catalog, base),
            failing_checks=failing_checks,
            set_sla=set_sla,
            base=base,
            vendor=self.vendor,
            oncall_gaps=self._oncall_gaps,
        )
        if node_id is not None:
            self._writer = ChangeWriter(self.store, node_id)
            self._writer.start()
        else:
            self.duties = self._duties(self.store, leader=False)
            await self.duties.start()
            self._consumer = asyncio.create_task(self._consume(), name="status-changes")
        self._started.set()
        log.info(
            "event=alerting_started store=%s channels=%d cluster=%s",
            self.store.url,
            len(self._settings.channels),
            node_id is not None,
        )

    def _duties(self, store: Store, *, leader: bool) -> Duties:
        assert self._settings is not None
        return Duties(
            store,
            self._settings,
            self._notifier_metrics,
            self._incident_metrics,
            self._wall,
            leader=leader,
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
        first: swapped in together (and kept for the next term in a cluster). Open
        incidents keep the policy they opened with."""
        if self._settings is not None:
            self._settings.catalog = catalog
            self._settings.renderer = renderer
            self._settings.channels = channels
        if self.duties is not None:
            self.duties.configure(catalog, renderer, channels)

    # ------------------------------------------------------------------ a leader's term

    def lead(self, node_id: str, epoch: int) -> None:
        """This node gained the lease in ``epoch``: run the duties on a store fenced with
        it until ``step_down``."""
        if self._term is not None:
            self._term.stop.set()
        self._term = _Term(epoch)
        self._term.task = asyncio.create_task(
            self._run_term(node_id, self._term), name=f"leader-term-{epoch}"
        )

    def step_down(self) -> None:
        """The lease is lost (or given up): stop sending now, before another can lead."""
        if self._term is not None:
            self._term.stop.set()

    async def _run_term(self, node_id: str, term: _Term) -> None:
        while not self._started.is_set():  # gained while the daemon was still starting
            if term.stop.is_set():
                return
            await _wait(self._started, 0.1)
        store: Store | None = None
        duties: Duties | None = None
        try:
            while store is None and not term.stop.is_set():
                try:
                    store = await Store.open(
                        self._url,
                        audit_key=self._audit_key,
                        fence=(node_id, term.epoch),
                        application_name=self._application_name,
                    )
                    store.kept_open = self.kept_open
                    duties = self._duties(store, leader=True)
                    await duties.start()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event=leader_duties_start_failed epoch=%d", term.epoch)
                    if store is not None:
                        await store.close()
                    store = duties = None
                    await _wait(term.stop, _RETRY_TERM)
            if store is None or duties is None:
                return
            self.duties = duties
            log.info("event=leader_duties_started node=%s epoch=%d", node_id, term.epoch)
            reader = ChangeReader(store, self._apply_changes)
            await reader.run(term.stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=leader_duties_failed epoch=%d", term.epoch)
        finally:
            if self.duties is duties:
                self.duties = None
            if duties is not None:
                await duties.stop(self.step_down_grace if not term.closing else _STOP_GRACE)
                if term.closing:
                    await _close_history(duties.manager, self._wall())
            self._incident_metrics.clear()
            if store is not None:
                await store.close()
            log.info("event=leader_duties_stopped node=%s epoch=%d", node_id, term.epoch)

    async def _apply_changes(self, changes: list[QueuedChange]) -> None:
        """The leader applies changes queued by any node, in their order."""
        manager = self.manager
        if manager is None:
            raise RuntimeError("no incident manager in this term")
        slice_ends = time.perf_counter() + _SLICE
        async with manager.history_batch():
            for change in changes:
                if isinstance(change, StatusChange):
                    await self._apply((str(change), _status_change(change)))
                    if _is_first(change):
                        self._first_statuses.add((change.customer, change.service))
                else:
                    # the leader's board follows every node's feed: messages quote it
                    self.vendor.update(change.customer, [change.state])
                    vendor = VendorChange(change.customer, change.previous, change.state)
                    await self._apply(
                        (
                            f"vendor {change.customer}/{change.state.service}",
                            _vendor_change(vendor, change.at, change.notify, change.maintenance),
                        )
                    )
                if time.perf_counter() >= slice_ends:
                    await asyncio.sleep(0)  # let probes and scrapes run
                    slice_ends = time.perf_counter() + _SLICE
        self._refresh_sla_if_new()

    # ------------------------------------------------------------------ status changes

    def subscription_changed(
        self,
        customer: str,
        service: str,
        previous: Status,
        current: Status,
        reason: str,
        at: float,
        since: float | None = None,
        *,
        down_from: tuple[str, ...] = (),
    ) -> None:
        """A confirmed change at ``at``; the new status began at ``since`` (the first
        probe of the streak that confirmed it); ``down_from``: the probe locations that
        said down (a target with locations)."""
        change = StatusChange(customer, service, previous, current, reason, at, since, down_from)
        if self._writer is not None:
            self._writer.put(change)
            return
        self._queue.put_nowait((str(change), self._applying(change)))

    def _applying(self, change: StatusChange) -> Callable[[IncidentManager], Awaitable[None]]:
        """What applies ``change``; a first status also says its SLA series can exist now
        (its history is written with the batch it is applied in: see _consume)."""
        apply = _status_change(change)
        if not _is_first(change):
            return apply

        async def first_status(manager: IncidentManager) -> None:
            await apply(manager)
            self._first_statuses.add((change.customer, change.service))

        return first_status

    def vendor_changed(
        self, change: VendorChange, at: float, *, notify: bool = False, maintenance: bool = False
    ) -> None:
        if self._writer is not None:
            self._writer.put(
                VendorReport(
                    change.customer, change.previous, change.current, at, notify, maintenance
                )
            )
            return
        self._queue.put_nowait(
            (
                f"vendor {change.customer}/{change.current.service}",
                _vendor_change(change, at, notify, maintenance),
            )
        )

    async def _consume(self) -> None:
        while True:
            change = await self._queue.get()
            manager = self.manager
            assert manager is not None
            taken = 1
            slice_ends = time.perf_counter() + _SLICE
            try:
                # what piled up meanwhile is applied as one batch: its history is written in
                # one transaction (10,000 status changes at start-up took a minute one by one)
                async with manager.history_batch():
                    await self._apply(change)
                    while not self._queue.empty() and taken < _BATCH:
                        taken += 1
                        await self._apply(self._queue.get_nowait())
                        if time.perf_counter() >= slice_ends:
                            # a change that only goes to the history never waits on I/O:
                            # let probes and scrapes run
                            await asyncio.sleep(0)
                            slice_ends = time.perf_counter() + _SLICE
            except asyncio.CancelledError:
                raise
            except Exception:
                # kept by the manager and written with the next batch
                log.exception("event=status_history_failed changes=%d", taken)
            finally:
                for _ in range(taken):
                    self._queue.task_done()
            self._refresh_sla_if_new()

    def _refresh_sla_if_new(self) -> None:
        housekeeping = self.housekeeping
        if self._first_statuses and housekeeping is not None:
            # their history is written: the month's SLA figure exists for them now
            housekeeping.refresh_soon(self._first_statuses)
            self._first_statuses = set()

    async def _apply(self, change: Change) -> None:
        what, apply = change
        try:
            manager = self.manager
            assert manager is not None
            await apply(manager)
        except asyncio.CancelledError:
            raise
        except Exception:
            # the store may be down: the change is logged; the next change or tick
            # brings the incident up to date
            log.exception("event=incident_update_failed change=%r", what)

    async def drain(self) -> None:
        """Wait until status changes are applied (alone) or queued in the store (cluster)."""
        if self._writer is not None:
            await self._writer.drain(30.0)
        await self._queue.join()

    async def close(self) -> None:
        """Apply what is queued, stop the duties after their step, end the history."""
        if self._writer is not None:
            await self._writer.close()
        try:
            await asyncio.wait_for(self._queue.join(), 5.0)
        except TimeoutError:
            log.warning("event=shutdown_incomplete pending_changes=%d", self._queue.qsize())
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
        term = self._term
        if term is not None and term.task is not None:
            term.closing = True
            term.stop.set()
            await asyncio.gather(term.task, return_exceptions=True)
        elif self.duties is not None:
            await self.duties.stop()
            await _close_history(self.duties.manager, self._wall())
        if self.store is not None:
            await self.store.close()
        log.info("event=alerting_stopped at=%s", datetime.fromtimestamp(self._wall(), UTC))


class _Term:
    """One leader's term: its epoch, the task running its duties, and its end."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.stop = asyncio.Event()
        self.closing = False  # the daemon stops: end the history it owns too
        self.task: asyncio.Task[None] | None = None


def _is_first(change: StatusChange) -> bool:
    """A subscription's first known status since the start, or after a gap."""
    return change.previous is Status.UNKNOWN and change.current is not Status.UNKNOWN


def _status_change(change: StatusChange) -> Callable[[IncidentManager], Awaitable[None]]:
    return lambda m: m.status_changed(
        change.customer,
        change.service,
        change.previous,
        change.current,
        change.reason,
        change.at,
        since=change.since,
        down_from=change.down_from,
    )


def _vendor_change(
    change: VendorChange, at: float, notify: bool, maintenance: bool
) -> Callable[[IncidentManager], Awaitable[None]]:
    return lambda m: m.vendor_changed(
        change, at, notify_advisory=notify, feed_maintenance=maintenance
    )


async def _close_history(manager: IncidentManager, now: float) -> None:
    try:
        await manager.close(now)
    except Exception:
        log.exception("event=history_close_failed")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
