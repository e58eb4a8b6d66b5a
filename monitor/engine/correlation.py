"""Correlation: one service failing for many customers at once is one vendor-side incident.

When at least ``min_customers`` customers' incidents for the same service
opened within ``window`` of each other, they are one outage at the vendor
(21Vianet) with a blast radius. The group is paged once, under its own
policy; each customer keeps its own incident record for its SLA.

Per location too: customers seen down from some probe locations only (too few
for a quorum: their incidents are degraded, ``down_from`` names the locations)
are a path problem from there, not a vendor outage. They form their own group,
one per set of locations ("20 customers affected from bj-unicom only"), apart
from customers down as far as we can tell (a quorum agrees, or the target has
no locations), who form the vendor-wide group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from monitor.engine.model import Incident, IncidentEvent, IncidentState
from monitor.probe import Status

VENDOR_CUSTOMER = "*"  # the customer of a vendor-side incident: never a real customer id
NAMES_IN_REASON = 10  # a reason names this many customers, then counts the rest
# timeline events whose page showed the group's blast radius as it was then
_PAGED = ("paged", "escalated", "reminder", "updated", "reopened")


@dataclass(frozen=True, slots=True)
class UpdateRule:
    """When a growing vendor-side incident sends an update: its customers doubled (``factor``)
    or ``added`` more since the last page, and the last page is ``min_interval`` old."""

    factor: float = 2.0
    added: int = 10
    min_interval: float = 300.0

    def due(self, announced: int, count: int, announced_at: float | None, now: float) -> bool:
        if announced <= 0 or count <= announced:
            return False
        grew = count >= announced * self.factor or count - announced >= self.added
        rested = announced_at is None or now - announced_at >= self.min_interval
        return grew and rested


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    enabled: bool = True
    window: float = 300.0  # incidents opened this close together can be one outage
    min_customers: int = 3
    hold: float = 60.0  # first pages wait this long so a group can form first
    policy: str | None = None  # escalation policy of vendor-side incidents
    update: UpdateRule = field(default_factory=UpdateRule)


@dataclass(frozen=True, slots=True)
class BlastHistory:
    """What a vendor-side incident's timeline says of its size."""

    count: int = 0  # customers affected, as last recorded
    announced: int = 0  # customers the last page named (0: nothing paged yet)
    announced_at: float | None = None


def blast_history(
    events: Iterable[IncidentEvent], history: BlastHistory = BlastHistory()
) -> BlastHistory:
    """Fold timeline events (oldest first) into ``history``: every page names the
    customers affected at its time."""
    for event in events:
        if event.kind == "blast_radius":
            history = replace(history, count=int(event.detail.get("customers", 0)))
            if history.announced_at == event.at:
                # a page decided at the same moment named the customers joining then too
                history = replace(history, announced=history.count)
        elif event.kind in _PAGED:
            history = replace(history, announced=history.count, announced_at=event.at)
    return history


def group_reason(names: Sequence[str], only_from: Sequence[str] = ()) -> str:
    """ "3 customers affected: A, B, C" ("… affected from bj-unicom only: …" for a group
    limited to some locations): names, not ids; the first few of a long list."""
    shown = ", ".join(names[:NAMES_IN_REASON])
    rest = len(names) - NAMES_IN_REASON
    where = f" from {', '.join(only_from)} only" if only_from else ""
    return f"{len(names)} customers affected{where}: {shown}" + (
        f" and {rest} more" if rest > 0 else ""
    )


def signature(status: Status, down_from: Iterable[str]) -> tuple[str, ...]:
    """The locations an outage is seen from *only*: those that said down while too few
    agreed for a quorum (the status is degraded); empty when it is down as far as we can
    tell (a quorum agreed, or no locations are listed)."""
    return tuple(sorted(set(down_from))) if status is Status.DEGRADED else ()


def location_signature(incident: Incident) -> tuple[str, ...]:
    """A customer's incident's ``signature``; a vendor-side incident's is its own."""
    if incident.customer == VENDOR_CUSTOMER:
        return incident.down_from
    return signature(incident.status, incident.down_from)


def incident_key(incident: Incident) -> tuple[str, str]:
    """Where an open incident is kept (the incident manager's key): its subscription;
    a vendor-side group limited to some locations beside the vendor-wide one."""
    if incident.customer == VENDOR_CUSTOMER and incident.down_from:
        return f"{VENDOR_CUSTOMER}@{','.join(incident.down_from)}", incident.service
    return incident.customer, incident.service


def open_group(
    open_incidents: Iterable[Incident], service: str, only_from: Sequence[str] = ()
) -> Incident | None:
    """The open vendor-side incident of ``service`` for customers seen down from
    ``only_from`` only (empty: the vendor-wide one)."""
    return next(
        (
            incident
            for incident in open_incidents
            if incident.customer == VENDOR_CUSTOMER
            and incident.service == service
            and incident.state is not IncidentState.RESOLVED
            and incident.down_from == tuple(only_from)
        ),
        None,
    )


def members(
    open_incidents: Iterable[Incident],
    service: str,
    now: float,
    settings: CorrelationSettings,
    only_from: Sequence[str] = (),
) -> list[Incident]:
    """Open customer incidents of ``service`` seen down from ``only_from`` only (see
    ``signature``; empty: the vendor-wide group) that form (or join) a vendor-side outage.

    Empty unless enough customers are affected. Incidents already in the group
    are included so the blast radius is complete; an incident stays in the group it
    joined even when its locations change.
    """
    if not settings.enabled:
        return []
    incidents = list(open_incidents)
    group = open_group(incidents, service, only_from)
    open_groups = {
        incident.id
        for incident in incidents
        if incident.customer == VENDOR_CUSTOMER and incident.state is not IncidentState.RESOLVED
    }
    candidates = [
        incident
        for incident in incidents
        if incident.service == service
        and incident.customer != VENDOR_CUSTOMER
        and incident.state is not IncidentState.RESOLVED
        and (
            (group is not None and incident.vendor_group == group.id)
            or (
                incident.vendor_group not in open_groups  # in no group, or one that ended
                and location_signature(incident) == tuple(only_from)
                and now - incident.opened_at <= settings.window
            )
        )
    ]
    if len({incident.customer for incident in candidates}) < settings.min_customers:
        return []
    return sorted(candidates, key=lambda incident: (incident.opened_at, incident.customer))
