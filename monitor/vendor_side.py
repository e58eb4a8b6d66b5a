"""The vendor's side of incidents: its health feed, and outages it causes for many customers.

Two things the incident manager delegates here:

* **the vendor's feed** (Graph service health, Azure Resource Health): it
  confirms open incidents, becomes an advisory when our probes see nothing
  wrong, and announced maintenance can become a maintenance window;
* **vendor-side incidents**: one service failing for many customers is one
  incident (customer ``*``) with a blast radius; it grows with its customers,
  tells the people paged when it grew substantially, and resolves when the
  last of them recovers.

It decides nothing itself (``engine/correlation.py`` and ``engine/incidents.py``
do) and writes only through the manager (``IncidentHost``), under its lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from monitor.engine import incidents as engine
from monitor.engine import rules
from monitor.engine.correlation import (
    VENDOR_CUSTOMER,
    BlastHistory,
    CorrelationSettings,
    blast_history,
    group_reason,
    location_signature,
    members,
    open_group,
)
from monitor.engine.model import Incident, IncidentState, MaintenanceWindow, PolicySnapshot
from monitor.maintenance_book import MaintenanceBook
from monitor.notify.compose import MessageComposer
from monitor.probe import Status
from monitor.store import Store
from monitor.vendor import VendorBoard, VendorChange, VendorState

log = logging.getLogger(__name__)
VENDOR_MAINTENANCE_HOURS = 4

Key = tuple[str, str]


class IncidentHost(Protocol):
    """The incident manager, as the vendor side uses it: its state and its writes."""

    _open: dict[Key, Incident]
    _recent: dict[Key, Incident]
    _status: dict[Key, Status]
    maintenance: MaintenanceBook
    _store: Store
    _lock: asyncio.Lock
    _composer: MessageComposer
    _wake: Callable[[], None]

    @property
    def _correlation(self) -> CorrelationSettings: ...

    def policy_for(self, customer: str, service: str) -> PolicySnapshot: ...

    def _group_held_by(self, grouped: list[Incident], now: float) -> str | None: ...

    async def _flush_history(self) -> None: ...

    async def _apply(
        self, incident: Incident, change: Callable[[Incident], engine.Decision]
    ) -> Incident: ...

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
    ) -> Incident | None: ...


class VendorSide:
    """The vendor's feed and vendor-side incidents (see the module's docstring)."""

    def __init__(self, host: IncidentHost, board: VendorBoard) -> None:
        self._host = host
        self._board = board
        self._blast: dict[str, BlastHistory] = {}  # vendor-side incident id → its size so far

    # ------------------------------------------------------------------ for messages

    def blast_radius(self, group: Incident) -> list[Incident]:
        """A vendor-side incident's customers, recovered ones included, and, while it is
        open, those about to join it; one incident per customer, by customer name."""
        joining = [
            i
            for i in self._host._open.values()
            if i.service == group.service
            and i.customer != VENDOR_CUSTOMER
            and i.vendor_group is None
            and location_signature(i) == group.down_from
            and group.state is not IncidentState.RESOLVED
        ]
        everyone = {i.customer: i for i in [*joining, *self.members(group)]}
        name = self._host._composer.customer_name
        return sorted(everyone.values(), key=lambda i: name(i.customer))

    def announced_customers(self, group: Incident) -> int | None:
        """Customers the previous page of a vendor-side incident named."""
        history = self._blast.get(group.id)
        return history.announced if history and history.announced else None

    def vendor_state(self, customer: str, service: str) -> VendorState | None:
        """What the vendor's feed says of a customer's service (for a vendor-side
        incident: what it tells any affected customer)."""
        if customer != VENDOR_CUSTOMER:
            return self._board.impaired(customer, service)
        states = [
            self._board.impaired(i.customer, service)
            for i in self._host._open.values()
            if i.service == service and i.customer != VENDOR_CUSTOMER
        ]
        return next((state for state in states if state is not None), None)

    # ------------------------------------------------------------------ vendor-side incidents

    def members(self, group: Incident) -> list[Incident]:
        """Every customer's incident in a vendor-side group, open or recovered, one per
        customer (the open one first)."""
        found: dict[str, Incident] = {}
        for incident in [*self._host._open.values(), *self._host._recent.values()]:
            if incident.vendor_group == group.id:
                found.setdefault(incident.customer, incident)
        return sorted(found.values(), key=lambda i: (i.opened_at, i.customer))

    def committed(self, incident: Incident, decision: engine.Decision) -> None:
        """An incident change was stored: a vendor-side incident's size follows it."""
        if incident.state is IncidentState.RESOLVED:
            self._blast.pop(incident.id, None)
        elif incident.id in self._blast:
            self._blast[incident.id] = blast_history(decision.events, self._blast[incident.id])

    async def correlate(self, service: str, only_from: tuple[str, ...], now: float) -> None:
        """A customer's incident opened, seen down from ``only_from`` only (empty: as far
        as we can tell): enough of them for one service make (or join) a vendor-side
        incident of those locations."""
        host = self._host
        group_members = members(host._open.values(), service, now, host._correlation, only_from)
        if not group_members:
            return
        group = open_group(host._open.values(), service, only_from)
        if group is None:
            name = host._composer.customer_name
            reason = group_reason([name(m.customer) for m in group_members], only_from)
            worst = (
                Status.DOWN
                if any(m.status is Status.DOWN for m in group_members)
                else Status.DEGRADED
            )
            held = host._group_held_by(group_members, now)
            # the outage began with its first customer's, not when enough had joined
            began = min(m.opened_at for m in group_members)
            group = await host._open_new(
                VENDOR_CUSTOMER,
                service,
                worst,
                reason,
                now,
                held=held,
                since=began,
                down_from=only_from,
            )
            if group is None:
                return
        group_id = group.id
        for member in group_members:
            if member.vendor_group is None:
                await host._apply(member, lambda i: engine.join_vendor_group(i, group_id, now))
        await self._grew(group, now)
        log.warning(
            "event=vendor_side_incident incident=%s service=%s customers=%d only_from=%s",
            group_id,
            service,
            len(group_members),
            ",".join(only_from) or "-",
        )

    async def settle(self, now: float) -> None:
        """A vendor-side incident resolves when none of its customers is affected any more;
        until then its size follows its customers (and an update may be due)."""
        host = self._host
        for group in list(host._open.values()):
            if group.customer != VENDOR_CUSTOMER:
                continue
            if rules.group_settled(group, host._open.values()):
                await host._apply(
                    group,
                    lambda i: engine.resolve(i, now, note="every affected customer recovered"),
                )
            else:
                await self._grew(group, now)

    async def _history(self, group: Incident) -> BlastHistory:
        history = self._blast.get(group.id)
        if history is None:  # after a restart: from the stored timeline
            stored = await self._host._store.events(group.id)
            history = self._blast[group.id] = blast_history(stored)
        return history

    async def _grew(self, group: Incident, now: float) -> None:
        name = self._host._composer.customer_name
        names = [name(i.customer) for i in self.members(group)]
        history = await self._history(group)
        if len(names) <= history.count and not history.announced:
            return  # nothing new, and nothing paged yet to update
        rule = self._host._correlation.update
        await self._host._apply(group, lambda i: engine.group_grew(i, names, now, history, rule))

    # ------------------------------------------------------------------ the vendor's feed

    async def vendor_changed(
        self,
        change: VendorChange,
        now: float,
        *,
        notify_advisory: bool = False,
        feed_maintenance: bool = False,
    ) -> None:
        """The vendor's feed changed for a customer's service: confirm its open incidents,
        or record an advisory when our probes see nothing wrong (and page it if asked);
        announced maintenance can become a maintenance window."""
        host = self._host
        state = change.current
        if feed_maintenance and state.planned_maintenance and state.start is not None:
            await self._maintenance(change.customer, state, now)
        if not change.newly_impaired:
            return
        async with host._lock:
            touched = [
                i
                for i in host._open.values()
                if i.service == state.service and i.customer in (change.customer, VENDOR_CUSTOMER)
            ]
            for incident in touched:
                await host._apply(
                    incident,
                    lambda i: engine.vendor_confirmed(
                        i, state.issue_id, state.title, state.source, now
                    ),
                )
            if not touched:
                await self._advisory(change, now, notify_advisory)

    async def _advisory(self, change: VendorChange, now: float, notify: bool) -> None:
        """The vendor reports a problem our probes do not see: audit it, page it if asked."""
        host = self._host
        state = change.current
        await host._flush_history()
        await host._store.audit(
            now,
            "vendor_advisory",
            f"{change.customer}/{state.service}",
            None,
            source=state.source,
            status=state.status,
            vendor_status=state.vendor_status,
            issue_id=state.issue_id,
            title=state.title,
        )
        if notify:
            policy = host.policy_for(change.customer, state.service)
            await host._store.enqueue(host._composer.advisory_messages(change, policy), now)
            host._wake()
        log.warning(
            "event=vendor_advisory customer=%s service=%s source=%s issue=%s "
            "title=%r our_status=%s",
            change.customer,
            state.service,
            state.source,
            state.issue_id,
            state.title,
            host._status.get((change.customer, state.service), Status.UNKNOWN),
        )

    async def _maintenance(self, customer: str, state: VendorState, now: float) -> None:
        """The vendor announced planned maintenance: mute it as a window, over the times
        announced (4 h from its start when the feed gives no end), unless one exists."""
        host = self._host
        window_id = f"VM-{state.issue_id or int(state.start or now)}-{customer}-{state.service}"
        if host.maintenance.has(window_id):
            return
        start = state.maintenance_start or state.start or now
        end = state.maintenance_end
        reason = f"21Vianet planned maintenance: {state.title or ''}"
        if end is None or end <= start:
            end = start + VENDOR_MAINTENANCE_HOURS * 3600
            reason += f" (no end announced: {VENDOR_MAINTENANCE_HOURS} h assumed)"
        window = MaintenanceWindow(
            window_id,
            start,
            end,
            customer=customer,
            service=state.service,
            reason=reason,
            created_by=f"vendor feed ({state.source})",
        )
        await host.maintenance.add_once(window)  # unless another replica added it first
