"""The incident manager: the engine's decisions, persisted and turned into messages.

The engine (``engine/incidents.py``) decides; this class feeds it subscription
status changes, ticks and operator actions, has the pages it decides composed
into messages (``notify/compose.py``), and writes incident, timeline and
outbox rows in one transaction.
It works on a copy of the incident and replaces its cache only after the
commit, so a failed write leaves memory as it was in the store.

All changes go through one lock: status changes of one subscription are
applied in order, and an acknowledgement never interleaves with a tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

from monitor.catalog import Catalog
from monitor.engine import incidents as engine
from monitor.engine import rules
from monitor.engine.correlation import (
    VENDOR_CUSTOMER,
    CorrelationSettings,
    incident_key,
    signature,
)
from monitor.engine.flapping import FlapDetector, FlapSettings
from monitor.engine.model import (
    Incident,
    IncidentConflict,
    IncidentEvent,
    IncidentState,
    PolicySnapshot,
)
from monitor.incident_actions import OperatorActions
from monitor.incident_config import IncidentSettingsSpec
from monitor.links import LinkSigner
from monitor.maintenance_book import MaintenanceBook
from monitor.notify.compose import FailingChecks, MessageComposer
from monitor.notify.message import RenderedMessage
from monitor.notify.templates import TemplateRenderer
from monitor.notify.voice_plan import plan_calls
from monitor.oncall_book import OnCallBook
from monitor.probe import Status
from monitor.status_history import StatusHistory
from monitor.store import (
    IncidentAlreadyOpen,
    IncidentChanged,
    IncidentNotFound,
    Store,
    Transaction,
)
from monitor.vendor import VendorBoard, VendorChange
from monitor.vendor_side import VendorSide

log = logging.getLogger(__name__)
_NOTHING_HOLDS = "no maintenance window and no failing dependency holds it back any more"

Key = tuple[str, str]
__all__ = ["FailingChecks", "IncidentManager"]
NO_POLICY = PolicySnapshot(name="none", steps=())


class IncidentManager(OperatorActions):
    """Status changes, ticks and operator actions in; stored incidents and queued
    messages out (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        renderer: TemplateRenderer,
        signer: LinkSigner,
        *,
        failing_checks: FailingChecks,
        wake: Callable[[], None] = lambda: None,
        on_events: Callable[[Sequence[IncidentEvent]], None] = lambda events: None,
        wall: Callable[[], float] = time.time,
        vendor: VendorBoard | None = None,
        oncall: OnCallBook | None = None,
    ) -> None:
        self._store = store
        self.oncall = oncall or OnCallBook(store, wall)
        self._signer = signer
        self._vendor_side = VendorSide(self, vendor or VendorBoard())
        self._composer = MessageComposer(
            renderer, signer, self._vendor_side, failing_checks=failing_checks, wall=wall
        )
        self._started = False
        self._wake = wake
        self._on_events = on_events  # what was stored: counted in csp_monitor_incident_events
        self._wall = wall
        self._lock = asyncio.Lock()
        self._open: dict[Key, Incident] = {}
        self._recent: dict[Key, Incident] = {}  # last resolved, for relapses within cooldown
        self._status: dict[Key, Status] = {}
        self._reasons: dict[Key, str] = {}  # the reason of each subscription's last change
        self._down_from: dict[Key, tuple[str, ...]] = {}  # and the locations that said down
        self._history = StatusHistory(store)
        self._flaps: dict[Key, FlapDetector] = {}
        self.maintenance = MaintenanceBook(store, wall)
        self._instance = uuid.uuid4().hex[:12]
        self._started_at = wall()
        self.catalog: Catalog | None = None
        self._settings = IncidentSettingsSpec()
        self._policies: dict[str, PolicySnapshot] = {}
        # subscriptions down or degraded when the previous run stopped (read by start())
        self.restored: dict[Key, Status] = {}

    # ------------------------------------------------------------------ set-up

    def configure(self, catalog: Catalog) -> None:
        """Take policies and settings from a (re)loaded config; open incidents keep theirs."""
        config = catalog.config
        self.catalog = catalog
        # a subscription no longer monitored has no status (its open incidents stay, and
        # an operator can resolve them)
        for key in [key for key in self._status if key not in catalog.subscriptions]:
            self._status.pop(key, None)
            self._reasons.pop(key, None)
            self._down_from.pop(key, None)
        self._settings = config.incidents
        self._composer.configure(catalog)
        self.oncall.configure(config)
        if self._started:  # at start, once the overrides are read (see start())
            self.oncall.check_gaps(self._wall())
        self._policies = {
            name: spec.snapshot(name, config.incidents.escalate_after)
            for name, spec in config.escalation_policies.items()
        }

    @property
    def _flap_settings(self) -> FlapSettings:
        return self._settings.flapping.settings()

    def _flapping(self, key: Key, previous: Status, now: float) -> bool:
        """Notes a confirmed change of ``key`` and says whether it flaps. A first status
        (from unknown) is not a change: a detector (≈ 700 bytes, most of it its deque) is
        made at a subscription's first real change, not for each of 50,000 at start-up."""
        flaps = self._flaps.get(key)
        if previous is Status.UNKNOWN:
            return flaps is not None and flaps.update(now)
        if flaps is None:
            flaps = self._flaps[key] = FlapDetector(self._flap_settings)
        return flaps.record_change(now)

    @property
    def _correlation(self) -> CorrelationSettings:
        return self._settings.correlation.settings()

    async def start(self, now: float, *, adopt_statuses: bool = False) -> None:
        """Rebuild memory from the store; end history the previous run left open.
        ``adopt_statuses``: a cluster's new leader takes every subscription's last
        recorded status as its own (other nodes went on probing meanwhile)."""
        await self.maintenance.load()
        await self.oncall.refresh()
        self.oncall.check_gaps(now)
        self._started = True
        for incident in await self._store.open_incidents():
            self._open[incident_key(incident)] = incident
        cooldown_start = now - self._settings.cooldown
        for incident in await self._store.list_incidents(since=cooldown_start, limit=1000):
            if incident.state is IncidentState.RESOLVED:
                self._recent.setdefault(incident_key(incident), incident)
        statuses = await self._store.last_statuses()
        self.restored = {
            key: Status(status)
            for key, status in statuses.items()
            if status in (Status.DOWN, Status.DEGRADED)
        }
        if adopt_statuses:
            confirmed = (Status.UP, Status.DOWN, Status.DEGRADED)
            self._status.update({k: Status(s) for k, s in statuses.items() if s in confirmed})
        last_seen = await self._store.last_seen()
        async with self._store.transaction() as tx:
            # what a crashed run left open ends at its last heartbeat: the rest is a gap
            await tx.close_all_open(last_seen if last_seen is not None else now)
            await tx.beat(self._instance, self._started_at, now)
            await tx.audit(
                now,
                "monitor",
                self._instance,
                None,
                event="started",
                previous_run_last_seen=last_seen,
            )
        log.info(
            "event=incidents_loaded open=%d maintenance_windows=%d",
            len(self._open),
            len(self.maintenance.windows),
        )

    def open_incidents(self) -> list[Incident]:
        return list(self._open.values())

    def policy_for(self, customer: str, service: str) -> PolicySnapshot:
        """The escalation policy a new incident of this subscription snapshots."""
        catalog = self.catalog
        customer_spec = catalog.customers.get(customer) if catalog else None
        service_spec = catalog.services.get(service) if catalog else None
        name = rules.policy_name(
            customer_spec.escalation_policy if customer_spec else None,
            service_spec.escalation_policy if service_spec else None,
            self._settings.default_policy,
            vendor_side=customer == VENDOR_CUSTOMER,
            vendor_policy=self._settings.correlation.escalation_policy,
        )
        return self._policies.get(name or "", NO_POLICY)

    # ------------------------------------------------------------------ status changes

    async def status_changed(
        self,
        customer: str,
        service: str,
        previous: Status,
        current: Status,
        reason: str,
        now: float | None = None,
        *,
        since: float | None = None,
        down_from: tuple[str, ...] = (),
    ) -> None:
        """A subscription's status changed, confirmed at ``now``; it began at ``since``
        (the first probe of the streak that confirmed it; default ``now``). The history
        records it from ``since``, and an incident it opens shows it as its start.
        ``down_from``: the probe locations that said down (correlation groups by them)."""
        now = self._wall() if now is None else now
        since = now if since is None else min(since, now)
        key = (customer, service)
        async with self._lock:
            self._status[key] = current
            self._reasons[key] = reason
            self._down_from[key] = down_from
            flapping = self._flapping(key, previous, now)
            window = self.maintenance.muting(customer, service, now)
            await self._history.record(key, Status.MAINTENANCE if window else current, since)
            incident = self._open.get(key)
            if current is Status.UP:
                if incident is not None:
                    await self._apply(
                        incident,
                        lambda i: engine.recovered(i, now, flapping=flapping, up_since=since),
                    )
                return
            if current is Status.UNKNOWN:
                return  # we could not look: that is a coverage gap, not an outage
            await self._not_up(
                key, current, reason, now, since, flapping=flapping, down_from=down_from
            )

    async def _not_up(
        self,
        key: Key,
        current: Status,
        reason: str,
        now: float,
        since: float,
        *,
        flapping: bool = False,
        down_from: tuple[str, ...] = (),
    ) -> None:
        """The subscription is down or degraded: its open incident follows, a recent one
        reopens (a relapse within the cool-down), or a new one opens."""
        customer, service = key
        incident = self._open.get(key)
        if incident is not None:
            await self._apply(
                incident, lambda i: self._worse(i, current, reason, flapping, now, down_from)
            )
            return
        recent = self._recent.get(key)
        if recent is not None and rules.reopens(recent, now, self._settings.cooldown):
            await self._apply(
                recent,
                lambda i: engine.reopen(
                    i, current, reason, now, oncall=self.oncall.lookup, down_from=down_from
                ),
            )
            return
        await self._open_new(
            customer,
            service,
            current,
            reason,
            now,
            held=self._held_by(key, now),
            since=since,
            down_from=down_from,
        )
        await self._vendor_side.correlate(service, signature(current, down_from), now)

    async def _reconcile(self, now: float) -> None:
        """Every subscription down or degraded has an incident: a status change that was
        lost on the way (a store error, a failure while applying it) still opens one."""
        for key in engine.missing_incidents(self._status, self._open):
            log.warning(
                "event=incident_reconciled customer=%s service=%s status=%s action=%r",
                *key,
                self._status[key].value,
                "its status change opened no incident earlier; opening it now",
            )
            status, reason = self._status[key], self._reasons.get(key, "")
            located = self._down_from.get(key, ())
            await self._not_up(key, status, reason, now, now, down_from=located)

    def _held_by(self, key: Key, now: float) -> str | None:
        """Why the subscription's pages are held back now, if they are (see
        ``rules.hold_reason``); a vendor-side incident's while all its customers' are."""
        group = self._open.get(key)
        if group is not None and group.customer == VENDOR_CUSTOMER:
            key = (group.customer, group.service)  # kept by its locations too (incident_key)
        window = self.maintenance.muting(*key, now)
        customer, service = key
        if customer == VENDOR_CUSTOMER:
            grouped = [
                i for i in self._open.values() if group is not None and i.vendor_group == group.id
            ]
            return rules.hold_reason(window.id if window else None, ()) or self._group_held_by(
                grouped, now
            )
        spec = self.catalog.config.services.get(service) if self.catalog else None
        dependencies = [
            (needed, self._status.get((customer, needed), Status.UNKNOWN))
            for needed in (spec.depends_on if spec else ())
        ]
        return rules.hold_reason(window.id if window else None, dependencies)

    def _group_held_by(self, grouped: list[Incident], now: float) -> str | None:
        """A vendor-side incident's pages are held while all its customers' are."""
        return rules.group_hold_reason(
            [self._held_by((i.customer, i.service), now) for i in grouped]
        )

    def _worse(
        self,
        incident: Incident,
        current: Status,
        reason: str,
        flapping: bool,
        now: float,
        down_from: tuple[str, ...],
    ) -> engine.Decision:
        decision = engine.status_changed(incident, current, reason, now, down_from)
        incident.recovering_since = None
        if flapping and not incident.flapping:
            incident.flapping = True
            decision.event(incident, now, "flapping")
        return decision

    async def _flush_history(self) -> None:
        """Write the status changes held back (see ``StatusHistory``)."""
        await self._history.flush()

    @contextlib.asynccontextmanager
    async def history_batch(self) -> AsyncIterator[None]:
        """Status changes applied inside go to the history together, at the end: the
        queue's consumer uses it when changes pile up (10,000 at start-up)."""
        self._history.begin_batch()
        try:
            yield
        finally:
            if self._history.end_batch():
                async with self._lock:
                    await self._flush_history()

    async def _open_new(
        self,
        customer: str,
        service: str,
        status: Status,
        reason: str,
        now: float,
        *,
        held: str | None = None,
        since: float | None = None,
        down_from: tuple[str, ...] = (),
    ) -> Incident | None:
        correlation = self._correlation
        hold = correlation.hold if correlation.enabled and customer != VENDOR_CUSTOMER else 0.0
        policy = self.policy_for(customer, service)
        async with self._writing() as tx:
            incident_id = await tx.allocate_incident_id(now)
            incident, decision = engine.open_incident(
                incident_id,
                customer,
                service,
                status,
                reason,
                policy,
                now,
                muted=held is not None,
                why=held or "",
                hold=hold,
                started_at=since,
                oncall=self.oncall.lookup,
                down_from=down_from,
            )
            try:
                messages = await self._store_decision(tx, incident, decision, None, now)
            except IncidentAlreadyOpen:
                # another daemon on the same database was first: adopt its incident
                existing = await tx.open_incidents()
                for other in existing:
                    if incident_key(other) == incident_key(incident):
                        self._open[incident_key(other)] = other
                return None
        self._committed(incident, decision, messages)
        known = self._vendor_side.vendor_state(customer, service)
        if known is not None:  # the vendor had already said so
            incident = await self._apply(
                incident,
                lambda i: engine.vendor_confirmed(
                    i, known.issue_id, known.title, known.source, now
                ),
            )
        log.warning(
            "event=incident_opened incident=%s customer=%s service=%s status=%s policy=%s muted=%s",
            incident.id,
            customer,
            service,
            status,
            policy.name,
            held is not None,
        )
        return incident

    async def _apply(
        self,
        incident: Incident,
        change: Callable[[Incident], engine.Decision],
        extra: Callable[[Incident], list[RenderedMessage]] = lambda incident: [],
    ) -> Incident:
        """Run an engine change on a copy, persist it with ``extra``'s messages (queued in
        the same transaction), then adopt the copy."""
        for _ in range(3):  # another writer may have saved the incident meanwhile
            working = copy.deepcopy(incident)
            decision = change(working)
            if not decision:
                return incident
            try:
                async with self._writing() as tx:
                    messages = await self._store_decision(
                        tx, working, decision, incident.updated_at, self._wall()
                    )
                    more = extra(working)
                    await tx.enqueue(more, self._wall())
                    messages += more
            except IncidentChanged:
                fresh = await self._store.get_incident(incident.id)
                if fresh is None:
                    raise IncidentNotFound(incident.id) from None
                incident = fresh
                continue
            self._committed(working, decision, messages)
            return working
        raise IncidentConflict(f"incident {incident.id} keeps changing under us; try again")

    # The write protocol: every incident change goes _writing → _store_decision →
    # (commit) → _committed. Memory changes only after the commit, so a failed write
    # leaves it as the store has it.

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[Transaction]:
        """The one way an incident change reaches the store: under the manager's lock,
        after the status history held back so far (the history and the audit chain keep
        the order of events), in one transaction."""
        if not self._lock.locked():
            raise RuntimeError("incident writes happen under the incident manager's lock")
        await self._flush_history()
        async with self._store.transaction() as tx:
            yield tx

    async def _store_decision(
        self,
        tx: Transaction,
        incident: Incident,
        decision: engine.Decision,
        expected_updated_at: float | None,
        at: float,
    ) -> list[RenderedMessage]:
        """The incident (new when ``expected_updated_at`` is None), its timeline events and
        the messages its pages become, in ``tx``."""
        messages = await self._composer.messages(decision, tx)
        # Voice calls: one per callee from the first provider whose budget allows it
        # (counted in this transaction); nobody callable is in the timeline and told.
        channels = self.catalog.config.channels if self.catalog else {}
        messages = await plan_calls(
            messages, decision, channels, tx, at, self._composer.voice_unavailable_messages
        )
        if expected_updated_at is None:
            await tx.open_incident(incident)
        else:
            await tx.save_incident(incident, expected_updated_at=expected_updated_at)
        await tx.add_events(decision.events)
        await tx.enqueue(messages, at)
        return messages

    def _committed(
        self, incident: Incident, decision: engine.Decision, messages: list[RenderedMessage]
    ) -> None:
        """After the commit, and only then: memory follows the store, the sender wakes."""
        self._vendor_side.committed(incident, decision)
        self._adopt(incident)
        self._on_events(decision.events)
        if messages:
            self._wake()

    def _adopt(self, incident: Incident) -> None:
        key = incident_key(incident)
        if incident.state is IncidentState.RESOLVED:
            self._open.pop(key, None)
            self._recent[key] = incident
            log.info(
                "event=incident_resolved incident=%s customer=%s service=%s", incident.id, *key
            )
        else:
            self._open[key] = incident
            self._recent.pop(key, None)

    # ------------------------------------------------------------------ time

    async def tick(self, now: float | None = None) -> None:
        """Escalation, reminders, ack timeouts, maintenance windows, heartbeat."""
        now = self._wall() if now is None else now
        async with self._lock:
            await self.oncall.refresh()
            await self._maintenance_history(now)
            for key, incident in list(self._open.items()):
                held = self._held_by(key, now)
                if held is not None and not incident.muted:
                    await self._set_muted(incident, True, now, held)
                elif held is None and incident.muted:
                    await self._set_muted(incident, False, now, _NOTHING_HOLDS)
                incident = self._open.get(key, incident)
                flaps = self._flaps.get(key)
                stable = rules.stable(
                    flaps is not None and flaps.update(now),
                    incident.recovering_since,
                    now,
                    self._settings.cooldown,
                )
                await self._tick_one(incident, now, stable)
            await self._reconcile(now)
            await self._vendor_side.settle(now)
            await self._store.beat(self._instance, self._started_at, now)

    async def _set_muted(self, incident: Incident, muted: bool, now: float, why: str) -> None:
        await self._apply(
            incident, lambda i: engine.set_muted(i, muted, now, why, oncall=self.oncall.lookup)
        )

    async def _tick_one(self, incident: Incident, now: float, stable: bool) -> None:
        await self._apply(
            incident, lambda i: engine.tick(i, now, stable=stable, oncall=self.oncall.lookup)
        )

    async def _maintenance_history(self, now: float) -> None:
        """Windows start and end with time, not with probe results: record that."""
        for key, status in self._status.items():
            window = self.maintenance.muting(*key, now)
            await self._history.record(key, Status.MAINTENANCE if window else status, now)

    async def close(self, now: float | None = None) -> None:
        """A clean stop: end the history here, so the time until the next start is a gap."""
        now = self._wall() if now is None else now
        async with self._lock:
            await self._flush_history()
            async with self._store.transaction() as tx:
                await tx.close_all_open(now, self._history.subscriptions)
                await tx.beat(self._instance, self._started_at, now)
                await tx.audit(now, "monitor", self._instance, None, event="stopped")

    # ------------------------------------------------------------------ messages and vendor

    @property
    def renderer(self) -> TemplateRenderer:
        """The templates in use (a refused reload leaves them as they were)."""
        return self._composer.renderer

    def set_renderer(self, renderer: TemplateRenderer) -> None:
        """Templates re-read on reload (validated by the caller first)."""
        self._composer.set_renderer(renderer)

    async def vendor_changed(
        self,
        change: VendorChange,
        now: float | None = None,
        *,
        notify_advisory: bool = False,
        feed_maintenance: bool = False,
    ) -> None:
        """The vendor's feed changed for a customer's service (see ``VendorSide``)."""
        await self._vendor_side.vendor_changed(
            change,
            self._wall() if now is None else now,
            notify_advisory=notify_advisory,
            feed_maintenance=feed_maintenance,
        )

    def _customer_name(self, customer_id: str) -> str:
        return self._composer.customer_name(customer_id)
