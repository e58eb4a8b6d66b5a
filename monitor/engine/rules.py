"""Small rules the incident manager applies: which policy, what holds pages back, when a
relapse reopens, when a recovering incident is stable, when a vendor-side incident is over.

Pure functions of what the manager knows (statuses, windows, incidents, the clock); their
table tests are in tests/test_incidents.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from monitor.engine.model import Incident, IncidentState
from monitor.probe import Status

FAILING = (Status.DOWN, Status.DEGRADED)


def policy_name(
    customer_policy: str | None,
    service_policy: str | None,
    default: str | None,
    *,
    vendor_side: bool = False,
    vendor_policy: str | None = None,
) -> str | None:
    """The escalation policy of a new incident: the customer's, else the service's, else
    the default; a vendor-side incident takes the correlation's policy, else the default."""
    if vendor_side:
        return vendor_policy or default
    return customer_policy or service_policy or default


def hold_reason(
    window: str | None, dependencies: Iterable[tuple[str, Status | None]]
) -> str | None:
    """Why a subscription's pages are held back, if they are: a maintenance window (its id),
    or a service it depends on (name, status) failing for the same customer: that
    service's incident pages; this one pages only if it outlasts it."""
    if window is not None:
        return f"maintenance {window}"
    for needed, status in dependencies:
        if status in FAILING:
            return f"depends on {needed}, which is {status}"
    return None


def group_hold_reason(member_holds: Sequence[str | None]) -> str | None:
    """A vendor-side incident pages for its customers: not while every one of theirs is
    held back (sign-in down everywhere takes Exchange with it)."""
    if member_holds and all(member_holds):
        return "every affected customer's incident is held back"
    return None


def reopens(recent: Incident | None, now: float, cooldown: float) -> bool:
    """A relapse this soon after the last incident resolved reopens it."""
    return (
        recent is not None
        and recent.resolved_at is not None
        and now - recent.resolved_at <= cooldown
    )


def stable(
    still_flapping: bool, recovering_since: float | None, now: float, cooldown: float
) -> bool:
    """A recovering incident may resolve: not flapping any more, and, if it recovered
    while flapping, up for the cool-down since."""
    if still_flapping:
        return False
    return recovering_since is None or now - recovering_since >= cooldown


def group_settled(group: Incident, incidents: Iterable[Incident]) -> bool:
    """A vendor-side incident is over when none of its customers' incidents is open."""
    return not any(
        incident.vendor_group == group.id and incident.state is not IncidentState.RESOLVED
        for incident in incidents
    )
