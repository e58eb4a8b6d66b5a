"""Escalation steps to ``schedule:NAME``, in the pure engine: the person is who is on call
when the step fires (across a midnight handoff in Beijing), is named in the timeline, and
hears of the acknowledgement and the resolution even after their turn ended."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from monitor.engine import incidents as engine
from monitor.engine.model import EscalationStep, PolicySnapshot
from monitor.engine.oncall import Layer, Schedule, on_call
from monitor.probe import Status

MIN = 60.0
BEIJING = ZoneInfo("Asia/Shanghai")
SCHEDULES = {
    "primary": Schedule(
        "primary",
        (Layer("days", ("wang.wei", "li.na"), date(2026, 12, 24), "Asia/Shanghai", time(0, 0), 1),),
    ),
    "secondary": Schedule(
        "secondary",
        (Layer("leads", ("zhang.min",), date(2026, 12, 1), "Asia/Shanghai", time(9, 0), 7),),
    ),
}
POLICY = PolicySnapshot(
    name="oncall",
    steps=(
        EscalationStep(0, ("oncall-sms", "noc-webhook"), recipients=("schedule:primary",)),
        EscalationStep(
            15 * MIN, ("oncall-sms",), recipients=("schedule:primary", "schedule:secondary")
        ),
        EscalationStep(30 * MIN, ("noc-email",), recipients=("noc@reseller.example.cn",)),
    ),
    repeat_interval=60 * MIN,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BEIJING).timestamp()


def lookup(schedule: str, when: float) -> str | None:
    found = on_call(SCHEDULES[schedule], (), when)
    return found.person if found else None


def targets(decision: engine.Decision) -> list[tuple[str, dict[str, tuple[str, ...]]]]:
    return [(page.event, dict(page.recipients)) for page in decision.pages]


def test_each_step_pages_who_is_on_call_when_it_fires() -> None:
    opened_at = at("2026-12-24 23:50")  # wang.wei's day; li.na's from midnight
    incident, decision = engine.open_incident(
        "INC-1", "contoso", "exchange-online", Status.DOWN, "503", POLICY, opened_at, oncall=lookup
    )
    assert targets(decision) == [
        ("opened", {"oncall-sms": ("person:wang.wei",), "noc-webhook": ("person:wang.wei",)})
    ]
    assert decision.events[-1].kind == "paged"
    assert decision.events[-1].detail["oncall"] == {"primary": "wang.wei"}

    # 00:05 Beijing: the handoff happened; step 2 pages the new primary and the secondary
    decision = engine.tick(incident, opened_at + 15 * MIN, oncall=lookup)
    assert targets(decision) == [
        ("escalated", {"oncall-sms": ("person:li.na", "person:zhang.min")}),
    ]
    assert decision.events[-1].detail["oncall"] == {"primary": "li.na", "secondary": "zhang.min"}

    # fixed recipients stay as they are; a step naming no schedule records nobody
    decision = engine.tick(incident, opened_at + 30 * MIN, oncall=lookup)
    assert targets(decision) == [("escalated", {"noc-email": ("noc@reseller.example.cn",)})]
    assert "oncall" not in decision.events[-1].detail

    # a reminder goes to the people of the last step reached (not re-resolved)
    decision = engine.tick(incident, opened_at + 90 * MIN, oncall=lambda s, t: "someone.else")
    assert targets(decision) == [("reminder", {"noc-email": ("noc@reseller.example.cn",)})]

    # the acknowledgement reaches everyone paged, each as they were paged
    decision = engine.acknowledge(incident, "li.na", opened_at + 95 * MIN)
    assert targets(decision) == [
        (
            "acknowledged",
            {
                "oncall-sms": ("person:wang.wei", "person:li.na", "person:zhang.min"),
                "noc-webhook": ("person:wang.wei",),
                "noc-email": ("noc@reseller.example.cn",),
            },
        )
    ]


def test_nobody_on_call_pages_the_channels_own_recipients() -> None:
    incident, decision = engine.open_incident(
        "INC-2",
        "contoso",
        "exchange-online",
        Status.DOWN,
        "503",
        POLICY,
        at("2026-12-20 12:00"),  # before the primary rotation starts
        oncall=lookup,
    )
    assert targets(decision) == [
        ("opened", {"oncall-sms": (engine.CHANNEL_RECIPIENTS,), "noc-webhook": ("",)})
    ]
    assert decision.events[-1].detail["oncall"] == {"primary": None}
    resolved = engine.resolve(incident, at("2026-12-20 13:00"))
    assert targets(resolved) == [
        ("resolved", {"oncall-sms": (engine.CHANNEL_RECIPIENTS,), "noc-webhook": ("",)})
    ]


def test_a_step_gives_each_channel_its_own_recipients() -> None:
    """One step texts the person on call and e-mails the NOC's fixed mailbox; the channels
    without their own recipients page the step's; the snapshot keeps it all."""
    from monitor.incident_config import EscalationPolicySpec

    spec = EscalationPolicySpec.model_validate(
        {
            "steps": [
                {
                    "after": 0,
                    "notify": [
                        {"channel": "noc-email", "recipients": ["noc@reseller.example.cn"]},
                        {"channel": "oncall-sms", "recipients": ["schedule:primary"]},
                        {"channel": "lead-sms", "recipients": []},  # the channel's own `to`
                        "noc-webhook",
                    ],
                    "recipients": ["schedule:secondary"],
                }
            ]
        }
    )
    policy = spec.snapshot("split", None)
    assert PolicySnapshot.from_json(policy.to_json()) == policy
    incident, decision = engine.open_incident(
        "INC-3", "contoso", "exchange-online", Status.DOWN, "503", policy,
        at("2026-12-24 23:50"), oncall=lookup,
    )  # fmt: skip
    assert targets(decision) == [
        (
            "opened",
            {
                "noc-email": ("noc@reseller.example.cn",),
                "oncall-sms": ("person:wang.wei",),
                "lead-sms": (engine.CHANNEL_RECIPIENTS,),
                "noc-webhook": ("person:zhang.min",),
            },
        )
    ]
    # both schedules were resolved when the step fired, and are in the timeline
    assert decision.events[-1].detail["oncall"] == {"secondary": "zhang.min", "primary": "wang.wei"}
    resolved = engine.resolve(incident, at("2026-12-25 01:00"))
    assert dict(resolved.pages[0].recipients)["oncall-sms"] == ("person:wang.wei",)
    assert dict(resolved.pages[0].recipients)["noc-email"] == ("noc@reseller.example.cn",)
