"""The incident manager's small rules, as tables: policy, holds, relapse, stability, groups."""

from __future__ import annotations

import pytest

from monitor.engine import rules
from monitor.engine.model import Incident, IncidentState, PolicySnapshot, Severity
from monitor.probe import Status

T0 = 1_800_000_000.0
MIN = 60.0


def incident(
    state: IncidentState = IncidentState.OPEN,
    resolved_at: float | None = None,
    vendor_group: str | None = None,
    customer: str = "contoso",
) -> Incident:
    return Incident(
        id="INC-1",
        customer=customer,
        service="exchange-online",
        status=Status.DOWN,
        severity=Severity.MAJOR,
        state=state,
        opened_at=T0,
        policy=PolicySnapshot("p", ()),
        resolved_at=resolved_at,
        vendor_group=vendor_group,
    )


@pytest.mark.parametrize(
    ("customer", "service", "default", "vendor_side", "vendor", "expected"),
    [
        ("gold", "svc", "std", False, "vend", "gold"),  # the customer's first
        (None, "svc", "std", False, "vend", "svc"),  # then the service's
        (None, None, "std", False, "vend", "std"),  # then the default
        (None, None, None, False, None, None),
        ("gold", "svc", "std", True, "vend", "vend"),  # vendor-side: the correlation's
        ("gold", "svc", "std", True, None, "std"),  # ... else the default
    ],
)
def test_policy_choice(
    customer: str | None,
    service: str | None,
    default: str | None,
    vendor_side: bool,
    vendor: str | None,
    expected: str | None,
) -> None:
    assert (
        rules.policy_name(customer, service, default, vendor_side=vendor_side, vendor_policy=vendor)
        == expected
    )


@pytest.mark.parametrize(
    ("window", "dependencies", "expected"),
    [
        (None, [], None),
        ("MW-1", [], "maintenance MW-1"),
        ("MW-1", [("entra-signin", Status.DOWN)], "maintenance MW-1"),  # the window first
        (None, [("entra-signin", Status.DOWN)], "depends on entra-signin, which is down"),
        (None, [("entra-signin", Status.DEGRADED)], "depends on entra-signin, which is degraded"),
        (None, [("entra-signin", "up"), ("dns", "unknown")], None),
        (None, [("entra-signin", None)], None),
    ],
)
def test_what_holds_pages_back(
    window: str | None, dependencies: list[tuple[str, str | None]], expected: str | None
) -> None:
    assert rules.hold_reason(window, dependencies) == expected


@pytest.mark.parametrize(
    ("member_holds", "held"),
    [
        ([], False),
        (["maintenance MW-1"], True),
        (["depends on entra-signin, which is down", "maintenance MW-1"], True),
        (["maintenance MW-1", None], False),  # one customer pages: the group pages
    ],
)
def test_a_vendor_side_incident_is_held_while_all_its_customers_are(
    member_holds: list[str | None], held: bool
) -> None:
    assert (rules.group_hold_reason(member_holds) is not None) is held


@pytest.mark.parametrize(
    ("resolved_minutes_ago", "reopens"),
    [(None, False), (1, True), (10, True), (11, False)],
)
def test_a_relapse_within_the_cooldown_reopens(
    resolved_minutes_ago: float | None, reopens: bool
) -> None:
    now = T0 + 60 * MIN
    recent = incident(
        IncidentState.RESOLVED,
        resolved_at=None if resolved_minutes_ago is None else now - resolved_minutes_ago * MIN,
    )
    assert rules.reopens(recent, now, cooldown=10 * MIN) is reopens
    assert rules.reopens(None, now, cooldown=10 * MIN) is False


@pytest.mark.parametrize(
    ("flapping", "recovering_minutes_ago", "stable"),
    [
        (False, None, True),
        (True, None, False),
        (False, 5, False),  # recovered while flapping: up for the cool-down first
        (False, 10, True),
        (True, 30, False),
    ],
)
def test_a_recovering_incident_is_stable(
    flapping: bool, recovering_minutes_ago: float | None, stable: bool
) -> None:
    now = T0 + 60 * MIN
    since = None if recovering_minutes_ago is None else now - recovering_minutes_ago * MIN
    assert rules.stable(flapping, since, now, cooldown=10 * MIN) is stable


def test_a_vendor_side_incident_is_settled_when_none_of_its_customers_is_open() -> None:
    group = incident(customer="*")
    group.id = "INC-G"
    assert rules.group_settled(group, [group])
    assert not rules.group_settled(group, [group, incident(vendor_group="INC-G")])
    assert rules.group_settled(
        group, [incident(IncidentState.RESOLVED, T0, "INC-G"), incident(vendor_group="INC-H")]
    )
