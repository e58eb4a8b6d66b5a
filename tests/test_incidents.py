"""The incident engine, fed events and times: tables of what happens → what is paged."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from monitor.engine import incidents as engine
from monitor.engine.correlation import (
    CorrelationSettings,
    UpdateRule,
    blast_history,
    group_reason,
    incident_key,
    members,
)
from monitor.engine.flapping import FlapDetector, FlapSettings
from monitor.engine.maintenance import in_maintenance, is_active, occurrences
from monitor.engine.model import (
    EscalationStep,
    Incident,
    IncidentState,
    MaintenanceWindow,
    PolicySnapshot,
    Severity,
)
from monitor.probe import Status

MIN = 60.0
T0 = 1_800_000_000.0  # a fixed start; the engine never reads a clock itself

GOLD = PolicySnapshot(
    name="gold",
    steps=(
        EscalationStep(0, ("oncall-sms", "noc-email")),
        EscalationStep(15 * MIN, ("noc-lead-sms",)),
        EscalationStep(60 * MIN, ("vendor-desk-email",), action="vendor_ticket"),
    ),
    repeat_interval=30 * MIN,
    ack_timeout=120 * MIN,
    escalate_after=None,
)


def pages(decision: engine.Decision) -> list[tuple[str, tuple[str, ...]]]:
    return [(page.event, page.channels) for page in decision.pages]


def open_down(policy: PolicySnapshot = GOLD, **kwargs: object) -> tuple[Incident, engine.Decision]:
    return engine.open_incident(
        "INC-1",
        "contoso",
        "exchange-online",
        Status.DOWN,
        "status 503 (expected 200)",
        policy,
        T0,
        **kwargs,
    )  # type: ignore[arg-type]


def run_ticks(incident: Incident, minutes: list[float]) -> list[tuple[float, str, tuple[str, ...]]]:
    sent = []
    for minute in minutes:
        for event, channels in pages(engine.tick(incident, T0 + minute * MIN)):
            sent.append((minute, event, channels))
    return sent


def test_open_pages_the_first_step_at_once() -> None:
    incident, decision = open_down()
    assert incident.severity is Severity.MAJOR
    assert pages(decision) == [("opened", ("oncall-sms", "noc-email"))]
    assert decision.pages[0].dedup_key == "INC-1:step:0"
    assert [event.kind for event in decision.events] == ["opened", "paged"]
    assert incident.next_escalation_at == T0 + 15 * MIN


def test_each_escalation_step_on_time_then_reminders_to_the_last_people_paged() -> None:
    incident, _ = open_down()
    sent = run_ticks(incident, [14, 15, 16, 44, 45, 59, 60, 61, 89, 90])
    assert sent == [
        (15, "escalated", ("noc-lead-sms",)),
        (45, "reminder", ("noc-lead-sms",)),
        (60, "vendor_ticket", ("vendor-desk-email",)),
        (90, "reminder", ("noc-lead-sms",)),  # the vendor desk gets no reminders
    ]


def test_acknowledge_stops_escalation_until_the_ack_times_out() -> None:
    incident, _ = open_down()
    ack = engine.acknowledge(incident, "li.wei", T0 + 10 * MIN)
    assert pages(ack) == [("acknowledged", ("oncall-sms", "noc-email"))]
    assert incident.state is IncidentState.ACKNOWLEDGED
    assert run_ticks(incident, [15, 30, 60, 129]) == []
    # two hours after the ack: re-armed, the next step is paged at once
    assert run_ticks(incident, [130, 131]) == [(130, "escalated", ("noc-lead-sms",))]
    assert incident.state is IncidentState.OPEN
    assert incident.acknowledged_by is None


def test_resolve_tells_everyone_who_was_paged() -> None:
    incident, _ = open_down()
    run_ticks(incident, [15])
    decision = engine.recovered(incident, T0 + 20 * MIN)
    assert pages(decision) == [("resolved", ("oncall-sms", "noc-email", "noc-lead-sms"))]
    assert incident.state is IncidentState.RESOLVED
    assert run_ticks(incident, [60, 90]) == []


def test_persistent_degradation_raises_severity_and_moves_up_the_policy() -> None:
    policy = PolicySnapshot(
        name="silver",
        steps=(EscalationStep(0, ("oncall-sms",)), EscalationStep(45 * MIN, ("noc-lead-sms",))),
        escalate_after=30 * MIN,
    )
    incident, decision = engine.open_incident(
        "INC-2", "fabrikam", "sharepoint-online", Status.DEGRADED, "slow: 4.2s > 3s", policy, T0
    )
    assert incident.severity is Severity.MINOR
    assert pages(decision) == [("opened", ("oncall-sms",))]
    assert run_ticks(incident, [29]) == []
    assert run_ticks(incident, [30]) == [(30, "escalated", ("noc-lead-sms",))]
    assert incident.severity is Severity.CRITICAL


def test_degraded_then_down_raises_severity_and_says_so() -> None:
    policy = PolicySnapshot(name="p", steps=(EscalationStep(0, ("oncall-sms",)),))
    incident, _ = engine.open_incident(
        "INC-3", "contoso", "azure-portal", Status.DEGRADED, "slow", policy, T0
    )
    decision = engine.status_changed(incident, Status.DOWN, "connection refused", T0 + MIN)
    assert incident.severity is Severity.MAJOR
    assert pages(decision) == [("severity", ("oncall-sms",))]
    # back to degraded: still worth telling in the timeline, not a page, severity kept
    decision = engine.status_changed(incident, Status.DEGRADED, "slow", T0 + 2 * MIN)
    assert pages(decision) == [] and incident.severity is Severity.MAJOR


def test_relapse_within_cooldown_reopens_the_same_incident() -> None:
    incident, _ = open_down()
    engine.recovered(incident, T0 + 5 * MIN)
    decision = engine.reopen(incident, Status.DOWN, "status 503", T0 + 7 * MIN)
    assert incident.id == "INC-1" and incident.state is IncidentState.OPEN
    assert pages(decision) == [("opened", ("oncall-sms", "noc-email"))]
    assert decision.pages[0].detail == "relapse after recovery"
    # escalation carries on from where it was, timed from the relapse
    assert run_ticks(incident, [21, 22]) == [(22, "escalated", ("noc-lead-sms",))]


def test_maintenance_mutes_pages_but_not_the_resolution_of_a_page_already_sent() -> None:
    incident, decision = open_down(muted=True)
    assert pages(decision) == []
    assert run_ticks(incident, [15, 60]) == []
    assert pages(engine.recovered(incident, T0 + 70 * MIN)) == []  # nobody was told

    incident, _ = open_down()  # paged, then a maintenance window starts
    engine.set_muted(incident, True, T0 + 5 * MIN, "window 42")
    assert run_ticks(incident, [15, 60]) == []
    assert pages(engine.recovered(incident, T0 + 70 * MIN)) == [
        ("resolved", ("oncall-sms", "noc-email"))
    ]


def test_still_down_when_maintenance_ends_starts_paging() -> None:
    incident, _ = open_down(muted=True)
    decision = engine.set_muted(incident, False, T0 + 30 * MIN, "window ended")
    assert pages(decision) == [("opened", ("oncall-sms", "noc-email"))]
    assert run_ticks(incident, [44, 45]) == [(45, "escalated", ("noc-lead-sms",))]


def test_a_restart_sends_what_fell_due_once_and_nothing_twice() -> None:
    incident, _ = open_down()
    run_ticks(incident, [15])
    saved = engine.copy.deepcopy(incident)  # what the store held when the daemon died
    # the daemon was away from minute 16 to minute 70: the vendor ticket is overdue
    first = engine.tick(saved, T0 + 70 * MIN)
    assert pages(first) == [("vendor_ticket", ("vendor-desk-email",))]
    assert pages(engine.tick(saved, T0 + 70 * MIN)) == []
    # the same decision computed twice (crash before commit) yields the same dedup keys
    again = engine.tick(engine.copy.deepcopy(incident), T0 + 70 * MIN)
    assert [p.dedup_key for p in again.pages] == [p.dedup_key for p in first.pages]


def test_vendor_group_member_is_not_paged_but_kept() -> None:
    incident, _ = open_down(hold=60)
    engine.join_vendor_group(incident, "INC-9", T0 + 30)
    assert run_ticks(incident, [1, 15, 60]) == []
    assert incident.vendor_group == "INC-9"


@pytest.mark.parametrize(
    ("change_minutes", "check_minute", "flapping"),
    [
        ([0, 5, 10, 15, 20], 21, False),  # five changes: not yet
        ([0, 5, 10, 15, 20, 25], 26, True),  # six within the hour: flapping
        ([0, 5, 10, 15, 20, 25], 72, True),  # three still in the window: hysteresis holds
        ([0, 5, 10, 15, 20, 25], 76, False),  # two left: stable again
    ],
)
def test_flapping_hysteresis(change_minutes: list[int], check_minute: int, flapping: bool) -> None:
    detector = FlapDetector(FlapSettings(window=3600, high=6, low=2))
    for minute in change_minutes:
        detector.record_change(T0 + minute * MIN)
    # checked at two moments so hysteresis is exercised on the way down
    detector.update(T0 + 26 * MIN)
    assert detector.update(T0 + check_minute * MIN) is flapping


def test_flapping_incident_resolves_only_once_stable() -> None:
    incident, _ = open_down()
    decision = engine.recovered(incident, T0 + 2 * MIN, flapping=True)
    assert incident.state is IncidentState.OPEN and pages(decision) == []
    assert pages(engine.tick(incident, T0 + 3 * MIN, stable=False)) == []
    # stable again: resolved at the first tick, before any further step
    assert pages(engine.tick(incident, T0 + 10 * MIN, stable=True)) == [
        ("resolved", ("oncall-sms", "noc-email"))
    ]


SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


@pytest.mark.parametrize(
    ("recurrence", "moment", "active"),
    [
        (None, "2026-11-01 02:30", True),
        (None, "2026-11-01 04:00", False),
        (None, "2026-11-08 02:30", False),
        ("daily", "2026-11-05 02:30", True),
        ("daily", "2026-11-05 05:00", False),
        ("weekly", "2026-11-08 03:59", True),  # the next Sunday
        ("weekly", "2026-11-09 02:30", False),  # a Monday
        ("monthly", "2026-12-01 02:00", True),
        ("monthly", "2026-12-02 02:00", False),
        ("weekly", "2026-10-25 02:30", False),  # before the first occurrence
    ],
)
def test_maintenance_windows_in_beijing_time(
    recurrence: str | None, moment: str, active: bool
) -> None:
    window = MaintenanceWindow(
        "MW-1",
        at("2026-11-01 02:00"),
        at("2026-11-01 04:00"),
        customer="contoso",
        recurrence=recurrence,
    )
    assert is_active(window, at(moment)) is active


@pytest.mark.parametrize(
    ("recurrence", "starts", "period", "expected"),
    [
        # November 2026 in Beijing time: a report's period
        (None, "2026-11-01 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 1),
        (None, "2026-10-01 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 0),
        ("daily", "2026-11-01 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 30),
        ("daily", "2026-11-20 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 11),
        ("weekly", "2026-10-04 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 5),  # Sundays
        ("monthly", "2026-01-31 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 0),  # no 31st
        ("monthly", "2026-01-15 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 1),
        ("weekly", "2026-12-06 02:00", ("2026-11-01 00:00", "2026-12-01 00:00"), 0),  # later
        # an occurrence that began the evening before still overlaps the period
        ("daily", "2026-10-01 23:00", ("2026-11-01 00:00", "2026-11-02 00:00"), 2),
    ],
)
def test_maintenance_occurrences_in_a_period(
    recurrence: str | None, starts: str, period: tuple[str, str], expected: int
) -> None:
    window = MaintenanceWindow(
        "MW-1", at(starts), at(starts) + 2 * 3600, customer="contoso", recurrence=recurrence
    )
    found = occurrences(window, at(period[0]), at(period[1]))
    assert len(found) == expected
    for begins, ends in found:
        assert ends - begins == 2 * 3600
        assert is_active(window, begins + 60) and not is_active(window, ends + 60)


def test_maintenance_scope() -> None:
    window = MaintenanceWindow("MW-2", T0, T0 + 3600, service="exchange-online")
    assert in_maintenance([window], "contoso", "exchange-online", T0 + 60) is window
    assert in_maintenance([window], "contoso", "azure-portal", T0 + 60) is None


def test_one_service_failing_for_many_customers_forms_a_group() -> None:
    settings = CorrelationSettings(window=300, min_customers=3)
    opened = [open_down()[0] for _ in range(2)]
    opened[1].customer = "fabrikam"
    assert members(opened, "exchange-online", T0 + 60, settings) == []
    third, _ = engine.open_incident(
        "INC-5", "adatum", "exchange-online", Status.DOWN, "x", GOLD, T0 + 120
    )
    group = members([*opened, third], "exchange-online", T0 + 120, settings)
    assert [incident.customer for incident in group] == ["contoso", "fabrikam", "adatum"]
    late, _ = engine.open_incident(
        "INC-6", "northwind", "exchange-online", Status.DOWN, "x", GOLD, T0 + 3600
    )
    assert members([*opened, third, late], "exchange-online", T0 + 3600, settings) == []


BJ, SH, GZ = "bj-unicom", "sh-telecom", "gz-mobile"
EVERYWHERE = (BJ, SH, GZ)


def customer_incident(
    customer: str, status: Status, down_from: tuple[str, ...], minute: float = 0
) -> Incident:
    incident, _ = engine.open_incident(
        f"INC-{customer}",
        customer,
        "exchange-online",
        status,
        "x",
        GOLD,
        T0 + minute * MIN,
        down_from=down_from,
    )
    return incident


@pytest.mark.parametrize(
    ("incidents", "only_from", "expected"),
    [
        # three customers seen down from bj-unicom only (degraded: no quorum): their group
        (
            [("a", "degraded", (BJ,)), ("b", "degraded", (BJ,)), ("c", "degraded", (BJ,))],
            (BJ,),
            ["a", "b", "c"],
        ),
        # … and not a vendor-wide outage
        ([("a", "degraded", (BJ,)), ("b", "degraded", (BJ,)), ("c", "degraded", (BJ,))], (), []),
        # down everywhere (a quorum agreed): the vendor-wide group, whatever the locations
        (
            [
                ("a", "down", EVERYWHERE),
                ("b", "down", (BJ, SH)),
                ("c", "down", EVERYWHERE),
                ("d", "degraded", (BJ,)),
            ],
            (),
            ["a", "b", "c"],
        ),
        (
            [
                ("a", "down", EVERYWHERE),
                ("b", "down", (BJ, SH)),
                ("c", "down", EVERYWHERE),
                ("d", "degraded", (BJ,)),
            ],
            (BJ,),
            [],
        ),
        # without locations, down or slow, as before: vendor-wide, never a location's
        (
            [("a", "down", ()), ("b", "degraded", ()), ("c", "down", EVERYWHERE)],
            (),
            ["a", "b", "c"],
        ),
        (
            [
                ("a", "down", ()),
                ("b", "down", ()),
                ("c", "degraded", (BJ,)),
                ("d", "degraded", (BJ,)),
            ],
            (BJ,),
            [],
        ),
        # another set of locations is another group; the order they are named in is not
        (
            [
                ("a", "degraded", (BJ, SH)),
                ("b", "degraded", (SH, BJ)),
                ("c", "degraded", (BJ,)),
                ("d", "degraded", (BJ, SH)),
            ],
            (BJ, SH),
            ["a", "b", "d"],
        ),
        (
            [("a", "degraded", (BJ, SH)), ("b", "degraded", (SH, BJ)), ("c", "degraded", (BJ,))],
            (BJ,),
            [],
        ),
        # a customer degraded from everywhere (slow, nobody says down): vendor-wide
        (
            [("a", "degraded", ()), ("b", "degraded", ()), ("c", "degraded", ())],
            (),
            ["a", "b", "c"],
        ),
    ],
)
def test_correlation_groups_customers_by_the_locations_they_are_seen_down_from(
    incidents: list[tuple[str, str, tuple[str, ...]]],
    only_from: tuple[str, ...],
    expected: list[str],
) -> None:
    settings = CorrelationSettings(window=300, min_customers=3)
    opened = [
        customer_incident(customer, Status(status), down_from, minute=n / 10)
        for n, (customer, status, down_from) in enumerate(incidents)
    ]
    group = members(opened, "exchange-online", T0 + MIN, settings, only_from)
    assert [incident.customer for incident in group] == expected


def test_a_location_group_keeps_its_customers_and_stands_beside_the_vendor_wide_one() -> None:
    settings = CorrelationSettings(window=300, min_customers=3)
    path = [customer_incident(c, Status.DEGRADED, (BJ,)) for c in ("a", "b", "c")]
    outage = [customer_incident(c, Status.DOWN, EVERYWHERE, 1) for c in ("d", "e", "f")]
    bj_group, _ = engine.open_incident(
        "INC-G1", "*", "exchange-online", Status.DEGRADED, "", GOLD, T0, down_from=(BJ,)
    )
    wide_group, _ = engine.open_incident(
        "INC-G2", "*", "exchange-online", Status.DOWN, "", GOLD, T0
    )
    for incident in path:
        engine.join_vendor_group(incident, bj_group.id, T0)
    # a is now down everywhere too: it stays in the group it joined, not counted twice
    engine.status_changed(path[0], Status.DOWN, "x", T0 + MIN, EVERYWHERE)
    everyone = [*path, *outage, bj_group, wide_group]
    later = T0 + 30 * MIN  # past the window: only members of a group count
    assert [i.customer for i in members(everyone, "exchange-online", later, settings, (BJ,))] == [
        "a",
        "b",
        "c",
    ]
    assert members(everyone, "exchange-online", later, settings) == []
    at_once = [i.customer for i in members(everyone, "exchange-online", T0 + 2 * MIN, settings)]
    assert at_once == ["d", "e", "f"]
    # each group is kept on its own key by the incident manager
    assert incident_key(bj_group) == ("*@bj-unicom", "exchange-online")
    assert incident_key(wide_group) == ("*", "exchange-online")
    assert incident_key(path[1]) == ("b", "exchange-online")


def test_a_location_group_says_where_from_in_its_reason() -> None:
    names = [f"Customer {n:02d}" for n in range(1, 21)]
    assert group_reason(names[:3], (BJ,)) == (
        "3 customers affected from bj-unicom only: Customer 01, Customer 02, Customer 03"
    )
    assert group_reason(names[:2], (BJ, GZ)).startswith(
        "2 customers affected from bj-unicom, gz-mobile only: "
    )
    group, opening = engine.open_incident(
        "INC-G", "*", "exchange-online", Status.DEGRADED, "", GOLD, T0, down_from=(BJ,)
    )
    engine.group_grew(group, names, T0, blast_history(opening.events), UpdateRule())
    assert group.reason.startswith("20 customers affected from bj-unicom only: Customer 01, ")
    assert group.reason.endswith(" and 10 more")


def test_severity_raised_at_the_last_step_is_announced_once_as_its_own_page() -> None:
    policy = PolicySnapshot(
        name="p",
        steps=(EscalationStep(0, ("noc-email",)), EscalationStep(MIN, ("lead-sms",))),
        escalate_after=100.0,
    )
    incident, _ = engine.open_incident(
        "INC-4", "contoso", "sharepoint-online", Status.DEGRADED, "slow", policy, T0
    )
    sent = [
        (second, page.event, page.channels)
        for second in (60, 90, 100, 110, 200, 900)
        for page in engine.tick(incident, T0 + second).pages
    ]
    assert sent == [(60, "escalated", ("lead-sms",)), (100, "severity", ("lead-sms",))]
    assert incident.severity is Severity.CRITICAL


@pytest.mark.parametrize(
    ("statuses", "open_keys", "missing"),
    [
        ({("c", "s"): Status.DOWN}, set(), [("c", "s")]),
        ({("c", "s"): Status.DEGRADED}, set(), [("c", "s")]),
        ({("c", "s"): Status.DOWN}, {("c", "s")}, []),
        ({("c", "s"): "up", ("d", "s"): "unknown"}, set(), []),
        ({("c", "s"): "maintenance"}, set(), []),
        (
            {("c", "s"): Status.DOWN, ("d", "s"): "up", ("e", "s"): Status.DEGRADED},
            {("e", "s")},
            [("c", "s")],
        ),
    ],
)
def test_every_subscription_down_or_degraded_needs_an_incident(
    statuses: dict[tuple[str, str], str],
    open_keys: set[tuple[str, str]],
    missing: list[tuple[str, str]],
) -> None:
    assert engine.missing_incidents(statuses, open_keys) == missing


def test_an_incident_spans_the_outage_not_its_confirmation() -> None:
    # first failed probe at T0, confirmed 20 s later; first good probe at +2 min 55 s
    incident, decision = engine.open_incident(
        "INC-5", "contoso", "exchange-online", Status.DOWN, "503", GOLD, T0 + 20, started_at=T0
    )
    assert incident.opened_at == T0
    assert decision.pages[0].dedup_key == "INC-5:step:0"
    assert incident.next_escalation_at == T0 + 20 + 15 * MIN  # steps count from the page
    engine.recovered(incident, T0 + 185, up_since=T0 + 175)
    assert incident.resolved_at == T0 + 175


@pytest.mark.parametrize(
    ("announced", "count", "since_page", "due"),
    [
        (3, 5, 600, False),  # neither doubled nor +10
        (3, 6, 600, True),  # doubled
        (3, 13, 600, True),  # ten more
        (3, 20, 200, False),  # but not within min_interval of the last page
        (20, 29, 600, False),
        (20, 30, 600, True),
        (0, 20, 600, False),  # nobody was paged yet: the first page tells the size
    ],
)
def test_a_growing_vendor_side_incident_sends_an_update_when_it_grew_enough(
    announced: int, count: int, since_page: float, due: bool
) -> None:
    rule = UpdateRule(factor=2, added=10, min_interval=300)
    assert rule.due(announced, count, T0, T0 + since_page) is due


def test_vendor_side_group_grows_in_its_reason_timeline_and_one_update() -> None:
    group, opening = engine.open_incident(
        "INC-G", "*", "exchange-online", Status.DOWN, "", GOLD, T0
    )
    assert pages(opening) == [("opened", ("oncall-sms", "noc-email"))]
    names = [f"Customer {n:02d}" for n in range(1, 21)]
    history = blast_history(opening.events)
    # its first three customers join as it opens: the opening page named them
    decision = engine.group_grew(group, names[:3], T0, history, UpdateRule())
    history = blast_history(decision.events, history)
    assert group.reason == "3 customers affected: Customer 01, Customer 02, Customer 03"
    assert pages(decision) == []
    assert (history.count, history.announced, history.announced_at) == (3, 3, T0)
    sent = []
    for minute, size in [(1, 5), (2, 8), (6, 20), (7, 20), (20, 20)]:
        decision = engine.group_grew(group, names[:size], T0 + minute * MIN, history, UpdateRule())
        history = blast_history(decision.events, history)
        sent += [(minute, page.event, page.channels) for page in decision.pages]
    # 8 customers at minute 2 is more than double, but the last page is not 5 min old:
    # the update waits for minute 6, and tells 20
    assert sent == [(6, "updated", ("oncall-sms", "noc-email"))]
    assert history.count == 20 and history.announced == 20
    assert group.reason.startswith("20 customers affected: Customer 01, ")
    assert group.reason.endswith(" and 10 more")
