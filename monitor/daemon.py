"""The daemon: wires config, scheduler, probes, status, metrics and the HTTP server.

Everything with a lifetime (HTTP client session, metrics registry, scheduler,
web server) is created here and passed to the parts that use it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from checks import check_types
from monitor import __version__
from monitor.alerting import Alerting
from monitor.api import build_app
from monitor.api_server import ApiServerMetrics, BoundedSite, check_file_limit
from monitor.canaries import SightKeeper
from monitor.catalog import Catalog, Subscription, TargetSpec
from monitor.cluster.node import ClusterNode
from monitor.config import ConfigError, ConfigIssue
from monitor.config_check import CheckedConfig, check_config
from monitor.config_history import ConfigHistory, ConfigOutcome
from monitor.daemon_cluster import ClusterMember
from monitor.daemon_locations import LocatedProbing
from monitor.incident_manager import IncidentManager
from monitor.locations import LocationDesk
from monitor.message_center import MessageBoard
from monitor.metrics import DaemonMetrics, TargetMetrics
from monitor.notify.compose import failing_checks
from monitor.notify.templates import FailingCheckContext
from monitor.probe import ProbeContext, ProbeResult, Status
from monitor.process_memory import (
    freeze_long_lived_objects,
    release_closed_transports,
    tune_malloc,
)
from monitor.runner import new_http_session, probe_context, run_probe
from monitor.scheduler import ProbeScheduler
from monitor.status import StatusBoard, Transition, observe
from monitor.store import Store
from monitor.vendor import GAUGE as VENDOR_GAUGE
from monitor.vendor import VendorBoard

log = logging.getLogger(__name__)


class Daemon(ClusterMember, LocatedProbing):
    def __init__(
        self,
        config_path: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        wall: Callable[[], float] = time.time,
        listen: str | None = None,
        max_config_bytes: int | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self._max_config_bytes = max_config_bytes
        self._env = dict(env) if env is not None else None
        self.wall = wall
        self._listen_override = listen
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = DaemonMetrics(self.registry, __version__)
        self.target_metrics = TargetMetrics(
            {fact: text for t in check_types().values() for fact, text in t.metric_help.items()}
        )
        self.board = StatusBoard()
        self._init_locations()
        self.scheduler = ProbeScheduler(self.probe_target, self.metrics, wall)
        self.vendor = VendorBoard()
        self.messages = MessageBoard()  # Message Center posts, across tenants
        self.alerting = Alerting(self.registry, wall, self.vendor)
        self.sight = SightKeeper(self.registry, wall)
        self._probe_cache: dict[str, Any] = {}  # tokens and shared vendor reads
        self.catalog: Catalog | None = None
        self._subscriptions_shown: set[tuple[str, str]] = set()  # probed here, on /metrics
        self.ready = False
        self.bound_port: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ssl_contexts: dict[tuple[bool, str | None, bool], ssl.SSLContext] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._signal_reloads: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: BoundedSite | None = None
        self._api_server_metrics = ApiServerMetrics(self.registry)
        self.cluster: ClusterNode | None = None
        self._reshards: set[asyncio.Task[None]] = set()
        self.config_history = ConfigHistory()  # the load and reloads, for the console

    # ------------------------------------------------------------------ for the HTTP API

    @property
    def incidents(self) -> IncidentManager | None:
        """The incident manager (None until the store is open)."""
        return self.alerting.manager

    @property
    def store(self) -> Store | None:
        """The store (None until it is open)."""
        return self.alerting.store

    @property
    def scheduled_targets(self) -> int:
        """How many targets this node probes now (its shard in a cluster)."""
        return len(self.scheduler)

    def target_metric_chunks(self) -> AsyncIterator[bytes]:
        """The per-target series in the exposition format, in chunks."""
        return self.target_metrics.render()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> CheckedConfig:
        """The config file read, validated and its templates checked (ConfigError)."""
        checked = check_config(self.config_path, self._env, max_bytes=self._max_config_bytes)
        for warning in checked.warnings:
            log.warning("event=config_warning problem=%r", str(warning))
        return checked

    async def start(self) -> None:
        """Load the config (raising ConfigError if it is bad) and start everything.

        The collector is off meanwhile: start-up builds hundreds of thousands of objects
        that all live on (the config, the catalog, jobs, series), and every collection
        on the way walked all of them again, which took half of the start-up at 50,000
        targets (bench/scale.py). They are collected once, then frozen, at the end."""
        tune_malloc(os.environ)  # before the store's and other threads start
        release_closed_transports()
        collecting = gc.isenabled()
        gc.disable()
        try:
            await self._start()
        except BaseException:
            # a start that failed half-way (store locked, port taken) leaves no session open
            if self._http is not None:
                await self._http.close()
                self._http = None
            raise
        finally:
            if collecting:
                gc.enable()

    async def _start(self) -> None:
        checked = await asyncio.to_thread(self.load)
        catalog = checked.catalog
        settings = catalog.config.monitor
        self.scheduler.concurrency = settings.max_concurrency
        self._http = new_http_session(settings.source_address)
        await self._join_cluster(catalog)
        self.desk = LocationDesk(
            self.cluster.node_id if self.cluster is not None else "local",
            settings.location,
            self.cluster.store if self.cluster is not None else None,
            self.wall,
        )
        self._apply(catalog)
        self._mark_reload(True)
        await self.alerting.start(
            catalog,
            self._http,
            self.config_path.resolve().parent,
            self.failing_checks,
            self._set_sla,
            checked.renderer,
            node_id=self.cluster.node_id if self.cluster is not None else None,
        )
        self.desk.history = self.alerting.store  # what locations saw, at their times
        await self.alerting.record_config(
            catalog.source, catalog.digest, "loaded", targets=len(catalog.targets)
        )
        self.config_history.record(ConfigOutcome(self.wall(), "loaded", catalog.digest))
        self._restore_statuses(catalog)
        await self.sight.start(
            catalog,
            checked.renderer,
            self._http,
            self.alerting.store,
            self.alerting.wake,
            self.board,
            self.handle_result,
        )
        self.scheduler.start()
        self._export_locations()
        self._locations_task = asyncio.create_task(self._exchange_reports(), name="locations")
        check_file_limit(settings.max_concurrency, settings.max_connections)
        self._runner = web.AppRunner(
            build_app(self),
            access_log=None,
            shutdown_timeout=2.0,
            keepalive_timeout=settings.header_timeout,
        )
        await self._runner.setup()
        host, _, port = (self._listen_override or settings.listen).rpartition(":")
        self._site = BoundedSite(
            self._runner,
            host.strip("[]") or "127.0.0.1",
            int(port),
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
            metrics=self._api_server_metrics,
        )
        self.bound_port = await self._site.start()
        self.ready = True
        if self.cluster is not None:
            self.cluster.allow_leading()
        freeze_long_lived_objects()
        log.info(
            "event=started listen=%s:%s targets=%d subscriptions=%d config_digest=%s",
            host,
            self.bound_port,
            len(catalog.targets),
            len(catalog.subscriptions),
            catalog.digest[:12],
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)

    def _reload_on_signal(self) -> None:
        task = asyncio.ensure_future(self._reload_logged())
        self._signal_reloads.add(task)  # a task nobody holds may be collected mid-way
        task.add_done_callback(self._signal_reloads.discard)

    async def _reload_logged(self) -> None:
        """A SIGHUP's reload: nobody awaits it, so whatever happens is logged here."""
        try:
            await self.reload()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=reload_failed trigger=SIGHUP")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self.start()
        self.install_signal_handlers()
        try:
            await self._stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop scheduling, let in-flight probes finish within the grace period, then stop."""
        self.ready = False
        self._stop.set()  # runs APScheduler already submitted return without probing
        # pause, not shutdown: APScheduler's AsyncIOExecutor.shutdown() cancels every
        # running job, which would cut short the probes the grace period is for
        self.scheduler.pause()
        grace = self.catalog.config.monitor.shutdown_grace if self.catalog else 5.0
        running = [task for task in self._running if not task.done()]
        if running:
            log.info("event=stopping in_flight=%d grace_seconds=%g", len(running), grace)
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self.scheduler.shutdown()
        if self._locations_task is not None:
            self._locations_task.cancel()
            await asyncio.gather(self._locations_task, return_exceptions=True)
        await self.sight.close()
        if self._site is not None:
            await self._site.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        # a leader ends its duties while its lease (which fences their writes) still holds,
        # then gives the lease up so that another node takes over at once
        await self.alerting.close()
        if self.cluster is not None:
            await self.cluster.close()
            await self.cluster.store.close()
        if self._http is not None:
            await self._http.close()
        log.info("event=stopped")

    # ------------------------------------------------------------------ config

    async def reload(self) -> tuple[bool, str]:
        """Load the file again: all of it or nothing.

        The catalog, the checked templates and the channels are built first; only when
        every part is ready are they swapped in, at once. Any problem (a bad value, a
        template that does not render, an unreadable file, an error nobody foresaw)
        keeps the running config whole and answers why."""
        async with self._reload_lock:
            try:
                checked = await asyncio.to_thread(self.load)
                channels = self.alerting.build_channels(checked.catalog)
            except ConfigError as exc:
                return await self._reject(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # its message might quote the file: only its kind
                log.exception("event=reload_failed")
                problem = f"the config could not be loaded ({type(exc).__name__}); see the log"
                return await self._reject(
                    ConfigError([ConfigIssue("", problem)], str(self.config_path))
                )
            catalog = checked.catalog
            if self.cluster is not None:
                self.cluster.reconfigure(catalog.digest)
            added, changed, removed = self._apply(catalog)
            self.alerting.configure(catalog, checked.renderer, channels)
            self.sight.configure(catalog, checked.renderer)
            await self.alerting.record_config(
                catalog.source,
                catalog.digest,
                "reloaded",
                added=len(added),
                changed=len(changed),
                removed=len(removed),
            )
            self._mark_reload(True)
            freeze_long_lived_objects()
            message = (
                f"reloaded: {len(added)} targets added, {len(changed)} changed, "
                f"{len(removed)} removed"
            )
            self.config_history.record(
                ConfigOutcome(self.wall(), "reloaded", catalog.digest, message)
            )
            log.info(
                "event=reloaded added=%d changed=%d removed=%d config_digest=%s",
                len(added),
                len(changed),
                len(removed),
                catalog.digest[:12],
            )
            return True, message

    async def _reject(self, error: ConfigError) -> tuple[bool, str]:
        """A refused reload: the metric drops to 0, the log and the audit log say why."""
        self._mark_reload(False)
        problems = [str(issue) for issue in error.issues]  # never a referenced value
        await self.alerting.record_config(str(self.config_path), "", "rejected", problems=problems)
        running = self.catalog.digest if self.catalog is not None else ""
        self.config_history.record(
            ConfigOutcome(self.wall(), "rejected", running, problems=tuple(problems))
        )
        for problem in problems:
            log.error("event=reload_rejected problem=%r", problem)
        log.error(
            "event=reload_rejected problems=%d action=%r",
            len(problems),
            "fix the file and reload again; the previous config keeps running",
        )
        return False, error.summary()

    def _mark_reload(self, ok: bool) -> None:
        self.metrics.reload_success.set(1 if ok else 0)
        self.metrics.reloads.labels("success" if ok else "failure").inc()
        if ok:
            self.metrics.reload_timestamp.set(self.wall())

    def _apply(
        self, catalog: Catalog, owned: dict[tuple[str, str], Subscription] | None = None
    ) -> tuple[list[str], list[str], list[str]]:
        """Schedule what this node probes of ``catalog``: the subscriptions it owns (or
        ``owned``, a step on the way there: see ClusterMember._apply_in_steps)."""
        old = self.catalog
        if old is not None and old.config.monitor.listen != catalog.config.monitor.listen:
            log.warning(
                "event=reload_partial setting=monitor.listen action=%r",
                "restart the daemon to listen on the new address",
            )
        self.catalog = catalog
        now = self.wall()
        if owned is None:
            owned = self._owned_subscriptions(catalog)
        probed = {
            tid: spec
            for tid, spec in catalog.targets.items()
            if (
                self._probes_for_location(spec)
                if spec.locations
                else (spec.target.customer, spec.target.service) in owned
            )
        }
        added, changed, removed = self.scheduler.apply(probed)
        self._probed_located = {tid for tid, spec in probed.items() if spec.locations}
        self._located_decided = {
            tid
            for key, subscription in owned.items()
            for tid in subscription.target_ids
            if catalog.targets[tid].locations
        }
        shown = self._subscriptions_shown
        gone = shown - set(owned)
        self._subscriptions_shown = set(owned)
        # the same catalog (a reshard): what was shown already is up to date
        fresh = owned if old is not catalog else {k: owned[k] for k in owned.keys() - shown}
        self._rescheduled(catalog, added, changed, removed, gone, fresh, now)
        return added, changed, removed

    def _rescheduled(
        self,
        catalog: Catalog,
        added: list[str],
        changed: list[str],
        removed: list[str],
        gone: Collection[tuple[str, str]],
        fresh: Mapping[tuple[str, str], Subscription],
        now: float,
    ) -> None:
        """The board, metrics and location state follow a change of the schedule: targets
        ``added``, ``changed`` and ``removed``, subscriptions no longer shown (``gone``) and
        newly shown (``fresh``). Costs only what changed: a reshard's step calls it too
        (ClusterMember._apply_step)."""
        self.location_board.forget(removed + changed, ())
        if self.desk is not None:
            self.desk.forget(
                tid for tid in removed + changed if tid not in catalog.targets or tid in changed
            )
        if self.cluster is not None:
            self.cluster.set_targets(len(self.scheduler))
        # a changed check starts from scratch: old results say nothing about new options
        for target_id in removed + changed:
            self.target_metrics.remove_target(target_id)
        self._forget_agent_series(catalog, removed + changed)
        # a located target this node no longer probes may still be decided here
        self.board.forget(
            changed
            + [t for t in removed if t not in catalog.targets or not catalog.targets[t].locations],
            gone,
        )
        for customer, service in gone:
            self.target_metrics.remove_subscription(customer, service)
        for target_id in changed + added:
            spec = catalog.targets[target_id]
            address = check_types()[spec.target.type].address(spec.options)
            self.target_metrics.add_target(spec.target, address, self._location_label(spec))
            board = self.location_board if spec.locations else self.board
            state = board.target(target_id, now)
            self.target_metrics.set_target_status(target_id, state.status, state.since)
        for key, subscription in fresh.items():
            self.board.update_subscription(
                key, subscription.target_ids, subscription.aggregate, now
            )
            subscription_state = self.board.subscriptions[key]
            self.target_metrics.set_subscription(
                *key, subscription_state.status, subscription_state.since
            )
            self.target_metrics.set_sla(*key, target_percent=subscription.sla_target)

    def _restore_statuses(self, catalog: Catalog) -> None:
        """What the previous run confirmed down or degraded stays so at the first probe
        that agrees: a restart does not re-confirm an outage (nor make it a gap)."""
        manager = self.alerting.manager
        if manager is None:
            return
        for key, status in manager.restored.items():
            subscription = catalog.subscriptions.get(key)
            if subscription is not None:
                self.board.restore(subscription.target_ids, status)

    def _set_sla(
        self, customer: str, service: str, availability: float | None, coverage: float | None
    ) -> None:
        self.target_metrics.set_sla(customer, service, availability=availability, coverage=coverage)

    def _record_vendor(self, customer: str, statuses: list[Any], now: float, options: Any) -> None:
        """A vendor health check's view: exported, and joined to incidents."""
        for change in self.vendor.update(customer, statuses):
            vendor_state = change.current
            self.target_metrics.set_vendor(
                customer,
                vendor_state.service,
                vendor_state.source,
                VENDOR_GAUGE[vendor_state.status],
            )
            self.alerting.vendor_changed(
                change,
                now,
                notify=bool(getattr(options, "notify_advisories", False)),
                maintenance=bool(getattr(options, "maintenance_feeds_windows", False)),
            )

    def failing_checks(self, customer: str, service: str) -> list[FailingCheckContext]:
        """The subscription's checks that are not up, with their reasons (for messages)."""
        if self.catalog is None:
            return []
        return failing_checks(self.catalog, self.board, customer, service)

    # ------------------------------------------------------------------ probing

    def context_for(self, spec: TargetSpec) -> ProbeContext:
        assert self._http is not None
        source = self.catalog.config.monitor.source_address if self.catalog else None
        return probe_context(
            spec, self._http, self.wall, self._ssl_contexts, self._probe_cache, source
        )

    async def probe_target(self, target_id: str) -> None:
        """The scheduled job: probe one target and feed the result through the pipeline."""
        catalog = self.catalog
        spec = catalog.targets.get(target_id) if catalog else None
        if spec is None or self._stop.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            # at most monitor.max_concurrency of these run at once: the scheduler's workers
            self.metrics.in_flight.inc()
            try:
                result = await run_probe(
                    check_types()[spec.target.type],
                    spec.target,
                    spec.options,
                    self.context_for(spec),
                )
            finally:
                self.metrics.in_flight.dec()
            current = self.catalog is not None and self.catalog.targets.get(target_id) is spec
            board = self.location_board if spec.locations else self.board
            state = board.target(target_id, self.wall()) if current else None
            admitted = self.sight.admit(spec, result, state) if state is not None else result
            if admitted is not None:  # None: held for the canaries' verdict
                self.handle_result(spec, admitted)
        finally:
            self._running.discard(task)

    def handle_result(self, spec: TargetSpec, result: ProbeResult) -> None:
        catalog = self.catalog
        target_id = spec.target.id
        if catalog is None or catalog.targets.get(target_id) is not spec:
            return  # the target changed or went away while it was being probed
        if spec.locations:
            self._handle_located(spec, result)
            return
        if (spec.target.customer, spec.target.service) not in self._subscriptions_shown:
            return  # another node took it over while it was being probed
        now = self.wall()
        state = self.board.target(target_id, now)
        transition = observe(state, target_id, result, spec.timing, now)
        self.target_metrics.record(target_id, result)
        if result.vendor:
            self._record_vendor(spec.target.customer, result.vendor, now, spec.options)
        if result.messages is not None:
            self.messages.update(spec.target.customer, result.messages)
            self.metrics.set_vendor_messages(self.messages.counts())
        if transition is not None:
            self.target_metrics.set_target_status(target_id, transition.current, transition.at)
            self._target_changed(spec, transition, now)
        self.scheduler.set_retrying(spec, state.pending)

    def _target_changed(self, spec: TargetSpec, transition: Transition, now: float) -> None:
        """A target's confirmed change: its subscription's status follows (and alerting)."""
        catalog = self.catalog
        assert catalog is not None
        target_id = spec.target.id
        began = transition.at  # the first result of the streak that confirmed it
        log.info(
            "event=target_status target=%s from=%s to=%s reason=%r",
            target_id,
            transition.previous,
            transition.current,
            transition.reason,
        )
        key = (spec.target.customer, spec.target.service)
        subscription = catalog.subscriptions[key]
        change = self.board.update_subscription(
            key, subscription.target_ids, subscription.aggregate, began
        )
        if change is not None:
            previous, current = change
            since = self.board.subscriptions[key].since
            self.target_metrics.set_subscription(*key, current, since)
            self.metrics.transitions.labels(current.value).inc()
            state = self.board.subscriptions[key]
            self.alerting.subscription_changed(
                *key, previous, current, state.reason, now, since, down_from=state.down_from
            )
            log_at = logging.WARNING if current in (Status.DOWN, Status.DEGRADED) else logging.INFO
            log.log(
                log_at,
                "event=subscription_status customer=%s service=%s from=%s to=%s reason=%r",
                key[0],
                key[1],
                previous,
                current,
                self.board.subscriptions[key].reason,
            )
