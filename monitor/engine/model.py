"""Records the incident engine decides on and the store keeps.

Plain dataclasses, no I/O. Times are Unix seconds (float, UTC); the engine
gets them from an injected clock so tests can live through hours in
milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from monitor.probe import Status


class IncidentError(Exception):
    """An operator's action on an incident cannot be done; the message says why."""


class IncidentConflict(IncidentError):
    """The incident's state forbids the action (already resolved, still down …)."""


class Severity(enum.StrEnum):
    MINOR = "minor"  # degraded
    MAJOR = "major"  # down
    CRITICAL = "critical"  # a degradation or outage that outlived escalate_after


class IncidentState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after: float  # seconds after the incident opened
    notify: tuple[str, ...]  # channel names
    action: str | None = None  # "vendor_ticket" drafts a ticket for 21Vianet
    recipients: tuple[str, ...] = ()  # overrides each channel's own; may name schedule:X
    # (channel, recipients) for channels given their own: an SMS to schedule:primary and an
    # e-mail to the NOC's mailbox in one step; ``recipients`` applies to the other channels
    channel_recipients: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def recipients_for(self, channel: str) -> tuple[str, ...]:
        """Who ``channel`` pages in this step (empty: the channel's own ``to``)."""
        for name, people in self.channel_recipients:
            if name == channel:
                return people
        return self.recipients

    def all_recipients(self) -> tuple[str, ...]:
        """Every recipient the step names, on any channel (its schedules among them)."""
        named = [*self.recipients, *(r for _, people in self.channel_recipients for r in people)]
        return tuple(dict.fromkeys(named))


@dataclass(frozen=True, slots=True)
class OnCallPick:
    """Who a step paged through a schedule: resolved when the step fired, kept so that
    the same person (not whoever is on call later) hears of the ack and the resolution."""

    level: int  # the step (1-based, as in the timeline)
    schedule: str
    person: str | None  # None: nobody was on call; the channels' own recipients were paged

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "schedule": self.schedule, "person": self.person}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OnCallPick:
        return cls(int(data["level"]), str(data["schedule"]), data.get("person"))


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """The escalation policy as it was when the incident opened."""

    name: str
    steps: tuple[EscalationStep, ...]
    repeat_interval: float | None = None  # reminders while unacknowledged
    ack_timeout: float | None = None  # an ack older than this re-arms escalation
    escalate_after: float | None = None  # persistent degradation raises severity

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": [
                {
                    "after": s.after,
                    "notify": list(s.notify),
                    "action": s.action,
                    "recipients": list(s.recipients),
                    "channel_recipients": {c: list(people) for c, people in s.channel_recipients},
                }
                for s in self.steps
            ],
            "repeat_interval": self.repeat_interval,
            "ack_timeout": self.ack_timeout,
            "escalate_after": self.escalate_after,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicySnapshot:
        return cls(
            name=data["name"],
            steps=tuple(
                EscalationStep(
                    s["after"],
                    tuple(s["notify"]),
                    s.get("action"),
                    tuple(s.get("recipients", ())),
                    tuple(
                        (channel, tuple(people))
                        for channel, people in (s.get("channel_recipients") or {}).items()
                    ),
                )
                for s in data["steps"]
            ),
            repeat_interval=data.get("repeat_interval"),
            ack_timeout=data.get("ack_timeout"),
            escalate_after=data.get("escalate_after"),
        )


@dataclass(slots=True)
class Incident:
    """A period during which a subscription is not up."""

    id: str  # e.g. "INC-20261123-0007": readable on a phone, unique
    customer: str
    service: str
    status: Status  # the subscription status that opened or last changed it (down, degraded)
    severity: Severity
    state: IncidentState
    opened_at: float
    policy: PolicySnapshot
    reason: str = ""
    escalation_level: int = 0  # steps already notified (0: none yet)
    next_escalation_at: float | None = None
    next_reminder_at: float | None = None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    recovering_since: float | None = None  # up again, waiting for the cool-down to resolve
    flapping: bool = False
    muted: bool = False  # inside a maintenance window
    notified: bool = False  # something was sent: it will get a resolved message
    vendor_case: str | None = None
    vendor_group: str | None = None  # correlation group id (vendor-side incident)
    vendor_issue: str | None = None  # the vendor's own issue id once it confirms the outage
    updated_at: float = 0.0
    oncall: tuple[OnCallPick, ...] = ()  # people steps paged through schedules
    # Probe locations that said down when the status opened or last changed it (empty for
    # a target without locations); a vendor-side incident: the locations its customers
    # are seen down from *only* (empty: not limited to some locations).
    down_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One line of an incident's timeline."""

    incident_id: str
    at: float
    # opened, severity, escalated, reminder, acknowledged, note (internal), customer_update
    # (public: the customer's report shows its text), resolved, …
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class StatusInterval:
    """A stretch of time a subscription spent in one status; ``end`` None while current."""

    customer: str
    service: str
    status: Status
    start: float
    end: float | None = None


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    id: str
    starts_at: float
    ends_at: float
    customer: str | None = None  # None: every customer
    service: str | None = None  # None: every service
    recurrence: str | None = None  # "weekly" or "daily" or "monthly"; repeats in `timezone`
    timezone: str = "Asia/Shanghai"
    reason: str = ""
    created_by: str | None = None
