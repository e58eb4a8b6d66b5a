"""The daemon's side of probe locations: this location's reports, and the quorum's verdict.

A part of ``Daemon`` (monitor/daemon.py) kept apart because it is one idea: a
target listed for several locations is probed here as one of them, its result
becomes this location's report, and the node that owns the subscription decides
its status from every location's latest report (monitor/engine/quorum.py).
The attributes declared below are the daemon's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from checks import check_types
from monitor.catalog import Catalog, TargetSpec
from monitor.cluster.node import ClusterNode
from monitor.cluster.sharding import subscription_key
from monitor.engine.quorum import LocationReport, decide
from monitor.locations import LocationDesk
from monitor.metrics import TargetMetrics
from monitor.probe import ProbeResult
from monitor.scheduler import ProbeScheduler
from monitor.status import StatusBoard, Transition, observe

log = logging.getLogger("monitor.daemon")

# A location without a node of its own (an agent's) counts as up while its reports arrive:
# an agent pushes at least this often, even with nothing to report.
AGENT_SILENT_AFTER = 30.0


class LocatedProbing:
    """Probing from several locations, for ``Daemon``."""

    # the daemon's (monitor/daemon.py)
    registry: CollectorRegistry
    cluster: ClusterNode | None
    catalog: Catalog | None
    board: StatusBoard
    location_board: StatusBoard
    target_metrics: TargetMetrics
    scheduler: ProbeScheduler
    desk: LocationDesk | None
    location_tick: float
    location_up: Gauge
    agent_results: Counter
    wall: Callable[[], float]
    _probed_located: set[str]
    _located_decided: set[str]
    _subscriptions_shown: set[tuple[str, str]]

    def _init_locations(self) -> None:
        """The daemon's state for located targets, set up in its constructor."""
        # targets probed from several locations: this location's own view of each (its
        # thresholds applied); ``board`` holds the status decided from every location's
        self.location_board = StatusBoard()
        self.desk = None
        self.location_tick = 1.0  # seconds between exchanges of location reports
        self._located_decided = set()  # located targets whose status is decided here
        self._probed_located = set()  # located targets this node probes
        self._locations_task: asyncio.Task[None] | None = None
        self._agent_series: dict[str, str] = {}  # metrics key of an agent's series -> target
        self.location_up = Gauge(
            "csp_monitor_location_up",
            "1 for each location a live node or an agent probes from now, 0 for one "
            "announced by a member that is gone or blind, or an agent gone silent (its "
            "targets' reports go silent, then unknown)",
            ["location"],
            registry=self.registry,
        )
        self.agent_results = Counter(
            "csp_monitor_agent_results",
            "Results probe agents pushed to this node, by the location they probe for",
            ["location"],
            registry=self.registry,
        )

    def _target_changed(self, spec: TargetSpec, transition: Transition, now: float) -> None:
        raise NotImplementedError  # the daemon's: the subscription follows its target

    @property
    def report_grace(self) -> float:
        """How late another location's report may arrive: written at the prober's next
        tick, read at this node's (none without a cluster: all reports are this node's)."""
        return 2 * self.location_tick if self.cluster is not None else 0.0

    def _location_label(self, spec: TargetSpec) -> str | None:
        """The ``location`` label of a target's probe series: where it was probed from,
        when it has locations or this node is not in the default one (else none, as
        before locations existed)."""
        settings = self.catalog.config.monitor if self.catalog is not None else None
        location = settings.location if settings is not None else "default"
        return location if spec.locations or location != "default" else None

    def _probes_for_location(self, spec: TargetSpec) -> bool:
        """Whether this node probes a target listed for locations: it must be in one of
        them and, in a cluster, be the one of its location that rendezvous hashing picks."""
        assert self.catalog is not None
        location = self.catalog.config.monitor.location
        if location not in spec.locations:
            return False
        if self.cluster is None:
            return True
        return self.cluster.owns_at(
            subscription_key(spec.target.customer, spec.target.service), location
        )

    def _handle_located(self, spec: TargetSpec, result: ProbeResult) -> None:
        """A result of a target probed from several locations: this location's view of it
        (thresholds applied here) becomes this location's report; the node that decides
        the target's status weighs it with the other locations' reports."""
        target_id = spec.target.id
        if target_id not in self._probed_located or self.desk is None:
            return  # another node of this location took it over while it was being probed
        now = self.wall()
        state = self.location_board.target(target_id, now)
        transition = observe(state, target_id, result, spec.timing, now)
        self.target_metrics.record(target_id, result)
        if transition is not None:
            self.target_metrics.set_target_status(target_id, transition.current, transition.at)
            log.info(
                "event=location_status target=%s location=%s from=%s to=%s reason=%r",
                target_id,
                self.desk.location,
                transition.previous,
                transition.current,
                transition.reason,
            )
        report = LocationReport(
            self.desk.location, state.status, result.reason, now, state.since, self.desk.node_id
        )
        if transition is not None:
            self.desk.record_change(target_id, report)
        self.desk.report(target_id, report)
        if (spec.target.customer, spec.target.service) in self._subscriptions_shown:
            self._decide(spec, now)
        self.scheduler.set_retrying(spec, state.pending)

    def accept_location_reports(
        self, location: str, reports: Sequence[tuple[str, LocationReport, ProbeResult | None]]
    ) -> list[str]:
        """Reports an agent pushed for ``location`` (oldest first): each filed as that
        location's latest (and, in a cluster, sent on to the node that decides the
        target), each change of status recorded at its own time, and the targets decided
        here decided again now; the probe's figures become that location's ``probe_*``
        series on this node. Returns the target ids not listed for ``location`` (the
        agent's assignment is older than the config)."""
        desk, catalog = self.desk, self.catalog
        if desk is None or catalog is None:
            return [item[0] for item in reports]
        self.agent_results.labels(location).inc(len(reports))
        desk.heard[location] = max(desk.heard.get(location, 0.0), self.wall())
        ignored, touched = [], set()
        for target_id, report, figures in sorted(reports, key=lambda item: item[1].at):
            spec = catalog.targets.get(target_id)
            if spec is None or location not in spec.locations:
                ignored.append(target_id)
                continue
            if figures is not None:
                self._record_agent_figures(spec, location, figures)
            previous = desk.reports(target_id).get(location)
            if previous is None or (previous.at <= report.at and previous.since != report.since):
                desk.record_change(target_id, report)
            desk.report(target_id, report)
            touched.add(target_id)
        if touched:
            now = self.wall()
            for target_id in self._located_decided & touched:
                self._decide(catalog.targets[target_id], now)
        return ignored

    def _record_agent_figures(self, spec: TargetSpec, location: str, figures: ProbeResult) -> None:
        """An agent's probe as its location's ``probe_*`` series (key ``id@location``)."""
        key = f"{spec.target.id}@{location}"
        if key not in self._agent_series:
            address = check_types()[spec.target.type].address(spec.options)
            self.target_metrics.add_target(spec.target, address, location, key)
            self._agent_series[key] = spec.target.id
        self.target_metrics.record(key, figures)

    def _forget_agent_series(self, catalog: Catalog, changed: Iterable[str]) -> None:
        """After a reload: agents' series of targets gone, changed, or no longer listed
        for the agent's location."""
        changed = set(changed)
        for key, target_id in list(self._agent_series.items()):
            spec = catalog.targets.get(target_id)
            location = key.rpartition("@")[2]
            if spec is None or target_id in changed or location not in spec.locations:
                self.target_metrics.remove_target(key)
                del self._agent_series[key]

    def _decide(self, spec: TargetSpec, now: float) -> None:
        """The status of a located target from its locations' latest reports."""
        assert self.desk is not None
        target_id = spec.target.id
        verdict = decide(
            spec.locations,
            spec.quorum,
            self.desk.reports(target_id),
            now,
            spec.timing.interval,
            self.report_grace,
        )
        state = self.board.target(target_id, now)
        # the status API and messages name today's locations: a location gone silent
        # while the target stays up is news too
        state.last_change_reason = verdict.reason
        if verdict.status is state.status:
            return
        began = min(max(verdict.since, state.since), now)
        transition = Transition(target_id, state.status, verdict.status, began, verdict.reason, now)
        state.status, state.since, state.last_change_reason = verdict.status, began, verdict.reason
        state.down_from = verdict.down_from  # travels with the change to its incident
        self._target_changed(spec, transition, now)

    async def _exchange_reports(self) -> None:
        """Every tick: locations' reports out and in; located targets decided again (a
        location gone silent turns unknown without any new report)."""
        ticks = 0
        while True:
            await asyncio.sleep(self.location_tick)
            ticks += 1
            try:
                await self._exchange_once(full=ticks % 5 == 0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=location_exchange_failed")

    async def _exchange_once(self, *, full: bool) -> None:
        desk, catalog = self.desk, self.catalog
        if desk is None or catalog is None:
            return
        news = await desk.exchange()
        if self.catalog is not catalog:
            return  # reloaded meanwhile: the next tick works on the new catalog
        now = self.wall()
        for target_id in self._located_decided:
            if full or target_id in news:
                self._decide(catalog.targets[target_id], now)
        self._export_locations()

    def _export_locations(self) -> None:
        """``csp_monitor_location_up``: the locations probed from now, and those gone."""
        if self.desk is None:
            return
        cluster = self.cluster
        up = cluster.locations_up() if cluster is not None else {self.desk.location: True}
        now = self.wall()
        for location, heard in self.desk.heard.items():  # agents' locations
            if location not in up:
                up[location] = now - heard <= AGENT_SILENT_AFTER
        self.location_up.clear()
        for location, live in up.items():
            self.location_up.labels(location).set(1 if live else 0)
