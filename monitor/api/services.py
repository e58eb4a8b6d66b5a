"""What the HTTP API needs from the daemon, and nothing more.

The handlers see the daemon only through ``ApiServices`` (and the incident
manager through ``IncidentOperations``): the daemon satisfies both
structurally, so the API never imports it and can be served by anything that
offers these few things.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.catalog import Catalog
from monitor.cluster.node import ClusterNode
from monitor.config_history import ConfigHistory
from monitor.engine.model import Incident, IncidentEvent, MaintenanceWindow
from monitor.engine.quorum import LocationReport
from monitor.locations import LocationDesk
from monitor.message_center import MessageBoard
from monitor.oncall_book import OnCallBook
from monitor.probe import ProbeResult
from monitor.status import StatusBoard
from monitor.store import Store
from monitor.vendor import VendorBoard, VendorState


class IncidentOperations(Protocol):
    """The incident and maintenance operations the API offers (the incident manager).

    Refusals are the ``IncidentError`` family: ``IncidentNotFound`` (404), any other
    (409).
    """

    @property
    def catalog(self) -> Catalog | None: ...

    async def list_incidents(
        self,
        *,
        state: str = "open",
        customer: str | None = None,
        service: str | None = None,
        limit: int = 100,
    ) -> list[Incident]: ...

    async def get(self, incident_id: str) -> tuple[Incident, list[IncidentEvent]]: ...

    async def acknowledge(self, incident_id: str, actor: str) -> Incident: ...

    async def resolve(self, incident_id: str, actor: str, note: str = "") -> Incident: ...

    async def add_note(self, incident_id: str, actor: str, text: str) -> Incident: ...

    async def set_vendor_case(self, incident_id: str, actor: str, case: str) -> Incident: ...

    async def add_customer_update(
        self, incident_id: str, actor: str, state: str, text: str
    ) -> Incident: ...

    def blast_radius(self, incident: Incident) -> list[Incident]:
        """A vendor-side incident's customers' incidents ([] for any other)."""

    def vendor_state(self, customer: str, service: str) -> VendorState | None:
        """What the vendor's own feed says of the service, when it says something is wrong."""

    async def ticket_draft(self, incident_id: str) -> str:
        """The 21Vianet ticket draft of the incident, as it stands now."""

    def check_link(self, incident_id: str, token: str) -> str | None:
        """Why an acknowledge link's token is not valid, or None when it is."""

    async def list_maintenance(self) -> list[MaintenanceWindow]: ...

    async def add_maintenance(self, window: MaintenanceWindow) -> MaintenanceWindow: ...

    async def delete_maintenance(self, window_id: str, actor: str) -> bool: ...

    @property
    def oncall(self) -> OnCallBook:
        """The schedules, their overrides, who is on call."""


class ApiServices(Protocol):
    """Everything the HTTP handlers use: the daemon satisfies it."""

    @property
    def catalog(self) -> Catalog | None:
        """The config in force (None before the first load)."""

    @property
    def registry(self) -> CollectorRegistry:
        """The daemon's own metrics, served by ``/metrics``."""

    @property
    def ready(self) -> bool:
        """Whether ``/readyz`` answers ready."""

    @property
    def board(self) -> StatusBoard:
        """Statuses of subscriptions and targets, for the status document."""

    @property
    def vendor(self) -> VendorBoard:
        """The vendor's own view of each subscription, for the status document."""

    @property
    def messages(self) -> MessageBoard:
        """Microsoft 365 Message Center posts across tenants, and the windows they propose."""

    @property
    def incidents(self) -> IncidentOperations | None:
        """The incident operations (None until the store is open)."""

    @property
    def store(self) -> Store | None:
        """The store reports are built from (None until it is open)."""

    @property
    def config_path(self) -> Path:
        """The config file; a relative ``templates_dir`` is beside it."""

    @property
    def cluster(self) -> ClusterNode | None:
        """This node's membership, shard and lease (None without ``monitor.cluster``)."""

    @property
    def desk(self) -> LocationDesk | None:
        """Each location's latest report on each target probed from locations."""

    @property
    def report_grace(self) -> float:
        """How late another location's report may arrive and still count."""

    @property
    def config_history(self) -> ConfigHistory:
        """This node's config load and reloads, newest first (the console's Config page)."""

    @property
    def scheduled_targets(self) -> int:
        """How many targets this node probes now."""

    def wall(self) -> float:
        """The time now, in seconds since the epoch."""

    def accept_location_reports(
        self, location: str, reports: Sequence[tuple[str, LocationReport, ProbeResult | None]]
    ) -> list[str]:
        """Reports an agent pushed for ``location``, as (target id, report, the probe's
        figures if sent); the target ids not listed for that location (ignored)."""

    def target_metric_chunks(self) -> AsyncIterator[bytes]:
        """The per-target series in the exposition format, in chunks."""

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config: (applied, what happened)."""


SERVICES: web.AppKey[ApiServices] = web.AppKey("services")
