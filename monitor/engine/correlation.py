"""Correlation: one service failing for many customers at once is one vendor-side incident.

When at least ``min_customers`` customers' incidents for the same service
opened within ``window`` of each other, they are one outage at the vendor
(21Vianet) with a blast radius. The group is paged once, under its own
policy; each customer keeps its own incident record for its SLA.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from monitor.engine.model import Incident, IncidentState

VENDOR_CUSTOMER = "*"  # the customer of a vendor-side incident: never a real customer id


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    enabled: bool = True
    window: float = 300.0  # incidents opened this close together can be one outage
    min_customers: int = 3
    hold: float = 60.0  # first pages wait this long so a group can form first
    policy: str | None = None  # escalation policy of vendor-side incidents


def members(
    open_incidents: Iterable[Incident], service: str, now: float, settings: CorrelationSettings
) -> list[Incident]:
    """Open customer incidents of ``service`` that form (or join) a vendor-side outage.

    Empty unless enough customers are affected. Incidents already in a group
    are included so the blast radius is complete.
    """
    if not settings.enabled:
        return []
    candidates = [
        incident
        for incident in open_incidents
        if incident.service == service
        and incident.customer != VENDOR_CUSTOMER
        and incident.state is not IncidentState.RESOLVED
        and (incident.vendor_group is not None or now - incident.opened_at <= settings.window)
    ]
    if len({incident.customer for incident in candidates}) < settings.min_customers:
        return []
    return sorted(candidates, key=lambda incident: (incident.opened_at, incident.customer))
