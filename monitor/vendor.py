"""What the vendor says, kept beside what we measure.

Vendor health checks (``m365_health``, ``azure_resource_health``) return the
vendor's view of each catalog service for one customer. This board keeps the
latest view per customer, service and source, and tells what changed, so the
daemon can export it, show it in the status API and join it to incidents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

IMPAIRED = ("degraded", "down")
GAUGE = {"unknown": 0, "unsupported": 0, "up": 1, "degraded": 2, "down": 3}


class VendorState(Protocol):
    """checks/vendor_common.VendorStatus, as the daemon reads it."""

    service: str
    source: str
    status: str
    vendor_status: str
    issue_id: str | None
    title: str | None
    latest_post: str | None
    classification: str | None
    start: float | None
    planned_maintenance: bool
    maintenance_start: float | None
    maintenance_end: float | None

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class VendorChange:
    customer: str
    previous: VendorState | None
    current: VendorState

    @property
    def newly_impaired(self) -> bool:
        """The vendor reports a problem it did not report before (or a different issue)."""
        if self.current.status not in IMPAIRED:
            return False
        previous = self.previous
        return (
            previous is None
            or previous.status not in IMPAIRED
            or previous.issue_id != self.current.issue_id
        )


@dataclass
class VendorBoard:
    states: dict[tuple[str, str, str], VendorState] = field(default_factory=dict)

    def update(self, customer: str, statuses: list[VendorState]) -> list[VendorChange]:
        changes = []
        for status in statuses:
            key = (customer, status.service, status.source)
            previous = self.states.get(key)
            self.states[key] = status
            if previous is None or (previous.status, previous.issue_id) != (
                status.status,
                status.issue_id,
            ):
                changes.append(VendorChange(customer, previous, status))
        return changes

    def for_subscription(self, customer: str, service: str) -> list[VendorState]:
        return [state for (c, s, _), state in self.states.items() if (c, s) == (customer, service)]

    def impaired(self, customer: str, service: str) -> VendorState | None:
        """The vendor's worst current report of a problem with this service, if any."""
        found = [s for s in self.for_subscription(customer, service) if s.status in IMPAIRED]
        return max(found, key=lambda s: GAUGE[s.status]) if found else None
