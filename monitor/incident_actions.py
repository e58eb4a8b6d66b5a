"""What operators do to incidents: read, acknowledge, resolve, note, update the customer.

A part of ``IncidentManager`` (monitor/incident_manager.py) kept apart because it
is one idea: the operations the API and the console offer (``IncidentOperations``
in monitor/api/services.py), each a change the engine decides and the manager
applies under its lock. The attributes declared below are the manager's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from monitor.catalog import Catalog
from monitor.customer_updates import update_messages
from monitor.engine import incidents as engine
from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.engine.model import (
    Incident,
    IncidentConflict,
    IncidentEvent,
    IncidentState,
    MaintenanceWindow,
)
from monitor.links import LinkSigner
from monitor.maintenance_book import MaintenanceBook
from monitor.notify.compose import MessageComposer
from monitor.notify.message import RenderedMessage
from monitor.probe import Status
from monitor.store import IncidentNotFound, Store
from monitor.vendor import VendorState
from monitor.vendor_side import VendorSide

Key = tuple[str, str]


class OperatorActions:
    """The operators' side of ``IncidentManager``."""

    # the manager's (monitor/incident_manager.py)
    catalog: Catalog | None
    maintenance: MaintenanceBook
    _store: Store
    _lock: asyncio.Lock
    _wall: Callable[[], float]
    _open: dict[Key, Incident]
    _status: dict[Key, Status]
    _signer: LinkSigner
    _composer: MessageComposer
    _vendor_side: VendorSide

    async def _apply(
        self,
        incident: Incident,
        change: Callable[[Incident], engine.Decision],
        extra: Callable[[Incident], list[RenderedMessage]] = lambda incident: [],
    ) -> Incident:
        raise NotImplementedError  # the manager's: decide on a copy, store, adopt

    async def _get_open(self, incident_id: str) -> Incident:
        for incident in self._open.values():
            if incident.id == incident_id:
                return incident
        stored = await self._store.get_incident(incident_id)
        if stored is None:
            raise IncidentNotFound(incident_id)
        return stored

    async def get(self, incident_id: str) -> tuple[Incident, list[IncidentEvent]]:
        incident = await self._store.get_incident(incident_id)
        if incident is None:
            raise IncidentNotFound(incident_id)
        return incident, await self._store.events(incident_id)

    async def list_incidents(
        self,
        *,
        state: str = "open",
        customer: str | None = None,
        service: str | None = None,
        limit: int = 100,
    ) -> list[Incident]:
        if state == "open":
            found = [
                i
                for i in self._open.values()
                if customer in (None, i.customer) and service in (None, i.service)
            ]
            return sorted(found, key=lambda i: i.opened_at, reverse=True)[:limit]
        found = await self._store.list_incidents(customer=customer, service=service, limit=limit)
        return [i for i in found if state == "all" or i.state.value == state]

    async def acknowledge(self, incident_id: str, actor: str, now: float | None = None) -> Incident:
        now = self._wall() if now is None else now
        async with self._lock:
            incident = await self._get_open(incident_id)
            if incident.state is not IncidentState.OPEN:
                raise IncidentConflict(
                    f"{incident_id} is {incident.state.value}: nothing to acknowledge"
                )
            return await self._apply(incident, lambda i: engine.acknowledge(i, actor, now))

    async def resolve(
        self, incident_id: str, actor: str, note: str = "", now: float | None = None
    ) -> Incident:
        now = self._wall() if now is None else now
        async with self._lock:
            incident = await self._get_open(incident_id)
            if incident.state is IncidentState.RESOLVED:
                raise IncidentConflict(f"{incident_id} is already resolved")
            failing = self._still_failing(incident)
            if failing:
                # resolved, it would stay silent until the service recovers and fails again
                raise IncidentConflict(
                    f"{incident_id}: {failing}: acknowledge it instead; it resolves by "
                    "itself when the service recovers"
                )
            return await self._apply(
                incident, lambda i: engine.resolve(i, now, actor=actor, note=note)
            )

    def _still_failing(self, incident: Incident) -> str | None:
        """Why an incident cannot be resolved by hand yet, if it cannot: its subscription
        (or, for a vendor-side incident, a customer's) is still down or degraded."""
        if incident.customer == VENDOR_CUSTOMER:
            open_members = [i for i in self._open.values() if i.vendor_group == incident.id]
            if open_members:
                return f"still failing for {len(open_members)} customers"
            return None
        status = self._status.get((incident.customer, incident.service))
        if status in (Status.DOWN, Status.DEGRADED):
            return f"still {status.value}"
        return None

    async def add_note(
        self, incident_id: str, actor: str, text: str, now: float | None = None
    ) -> Incident:
        now = self._wall() if now is None else now
        async with self._lock:
            incident = await self._get_open(incident_id)
            return await self._apply(incident, lambda i: engine.add_note(i, text, actor, now))

    async def add_customer_update(
        self, incident_id: str, actor: str, state: str, text: str, now: float | None = None
    ) -> Incident:
        """A public update for the customer's status page, e-mailed to the contacts with
        ``notify: true`` (ValueError for a bad state)."""
        now = self._wall() if now is None else now
        async with self._lock:
            incident = await self._get_open(incident_id)  # or resolved, from the store
            return await self._apply(
                incident,
                lambda i: engine.customer_update(i, state, text, actor, now),
                lambda i: self._update_messages(i, state, text, now),
            )

    def _update_messages(
        self, incident: Incident, state: str, text: str, now: float
    ) -> list[RenderedMessage]:
        """The update's e-mails: to the incident's customer, or to each customer of a
        vendor-side incident (each message names its own customer only)."""
        if self.catalog is None:
            return []
        if incident.customer == VENDOR_CUSTOMER:
            customers = sorted({m.customer for m in self._vendor_side.blast_radius(incident)})
        else:
            customers = [incident.customer]
        return update_messages(
            self._composer.renderer, self.catalog, incident, customers, state, text, now
        )

    async def set_vendor_case(
        self, incident_id: str, actor: str, case: str, now: float | None = None
    ) -> Incident:
        now = self._wall() if now is None else now
        async with self._lock:
            incident = await self._get_open(incident_id)
            return await self._apply(
                incident, lambda i: engine.set_vendor_case(i, case, actor, now)
            )

    def check_link(self, incident_id: str, token: str) -> str | None:
        return self._signer.verify(incident_id, token, self._wall())

    async def list_maintenance(self) -> list[MaintenanceWindow]:
        return list(self.maintenance.windows)

    async def add_maintenance(self, window: MaintenanceWindow) -> MaintenanceWindow:
        return await self.maintenance.add(window, self.catalog)

    async def delete_maintenance(self, window_id: str, actor: str) -> bool:
        return await self.maintenance.delete(window_id, actor)

    def blast_radius(self, incident: Incident) -> list[Incident]:
        """A vendor-side incident's customers' incidents ([] for any other incident)."""
        if incident.customer != VENDOR_CUSTOMER:
            return []
        return self._vendor_side.blast_radius(incident)

    def vendor_state(self, customer: str, service: str) -> VendorState | None:
        """What the vendor's own feed says of the service (None: nothing wrong there)."""
        return self._vendor_side.vendor_state(customer, service)

    async def ticket_draft(self, incident_id: str) -> str:
        """The 21Vianet ticket for the incident as it stands now (the text the vendor
        desk would get), for the console to copy into 21Vianet's form."""
        incident, events = await self.get(incident_id)
        return self._composer.draft("vendor_ticket", incident, events, "console").text
