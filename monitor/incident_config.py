"""Config models for incidents, escalation policies and notifications.

Kept apart from ``config.py`` (probing) so each file holds one idea; the root
model in ``config.py`` includes these sections.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from monitor.config_types import Delay, Duration, StrictModel
from monitor.engine.correlation import CorrelationSettings, UpdateRule
from monitor.engine.flapping import FlapSettings
from monitor.engine.model import EscalationStep, PolicySnapshot


class NotifyTargetSpec(StrictModel):
    """One channel of a step, with recipients of its own or the step's."""

    channel: str = Field(description="Channel name")
    recipients: list[str] | None = Field(
        None,
        description="Addresses or numbers for this channel in this step, or schedule:NAME "
        "for whoever is on call when the step fires, instead of the step's recipients; "
        "[]: the channel's own `to` (default: the step's recipients)",
    )


def notify_shorthand(value: Any) -> Any:
    """``- noc-email`` under a step's notify is ``{channel: noc-email}``."""
    return {"channel": value} if isinstance(value, str) else value


class EscalationStepSpec(StrictModel):
    after: Delay = Field(0, description="Delay after the incident opened before this step is paged")
    notify: list[Annotated[NotifyTargetSpec, BeforeValidator(notify_shorthand)]] = Field(
        default_factory=list,
        description="Channel names; {channel: NAME, recipients: [...]} gives one channel "
        "recipients of its own (e-mail the NOC's mailbox, SMS schedule:primary)",
    )
    recipients: list[str] = Field(
        default_factory=list,
        description="Addresses or numbers for this step, or schedule:NAME for whoever is on "
        "call in that schedule when the step fires; empty: each channel's own `to` (a "
        "channel given its own recipients under notify uses those)",
    )

    @field_validator("notify")
    @classmethod
    def _each_channel_once(cls, value: list[NotifyTargetSpec]) -> list[NotifyTargetSpec]:
        seen: set[str] = set()
        for item in value:
            if item.channel in seen:
                raise ValueError(f"channel {item.channel!r} is listed twice in this step")
            seen.add(item.channel)
        return value

    def channels(self) -> tuple[str, ...]:
        return tuple(item.channel for item in self.notify)

    def channel_recipients(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple(
            (item.channel, tuple(item.recipients))
            for item in self.notify
            if item.recipients is not None
        )

    action: Literal["vendor_ticket"] | None = Field(
        None, description="vendor_ticket: draft a ticket for 21Vianet support with evidence"
    )


class EscalationPolicySpec(StrictModel):
    steps: list[EscalationStepSpec] = Field(min_length=1)
    repeat_interval: Duration | None = Field(
        None, description="Remind the last people paged this often while unacknowledged"
    )
    ack_timeout: Duration | None = Field(
        None, description="An acknowledgement older than this re-arms escalation"
    )
    escalate_after: Duration | None = Field(
        None,
        description="A degradation or outage lasting longer raises severity to critical "
        "and moves up the policy (default: incidents.escalate_after)",
    )

    def snapshot(self, name: str, default_escalate_after: float | None) -> PolicySnapshot:
        return PolicySnapshot(
            name=name,
            steps=tuple(
                EscalationStep(
                    float(step.after),
                    step.channels(),
                    step.action,
                    tuple(step.recipients),
                    step.channel_recipients(),
                )
                for step in self.steps
            ),
            repeat_interval=self.repeat_interval,
            ack_timeout=self.ack_timeout,
            escalate_after=self.escalate_after
            if self.escalate_after is not None
            else default_escalate_after,
        )


class FlappingSpec(StrictModel):
    window: Duration = 3600.0
    high: int = Field(6, ge=2, description="Status changes within the window: flapping")
    low: int = Field(2, ge=0, description="At or below this many changes: stable again")

    def settings(self) -> FlapSettings:
        return FlapSettings(self.window, self.high, self.low)


class GroupUpdateSpec(StrictModel):
    factor: float = Field(
        2.0, gt=1, description="Update when the customers affected grew this many times"
    )
    added: int = Field(10, ge=1, description="... or grew by this many customers")
    min_interval: Duration = Field(
        300.0, description="At most one update per this interval (from the last page)"
    )

    def rule(self) -> UpdateRule:
        return UpdateRule(self.factor, self.added, self.min_interval)


class CorrelationSpec(StrictModel):
    enabled: bool = True
    window: Duration = Field(
        300.0, description="Incidents this close together may be one vendor-side outage"
    )
    min_customers: int = Field(3, ge=2, description="Customers affected to call it vendor-side")
    hold: Delay = Field(
        60.0, description="First pages wait this long so a vendor-side group can form first"
    )
    escalation_policy: str | None = Field(
        None, description="Policy of vendor-side incidents (default: incidents.default_policy)"
    )

    update_when: GroupUpdateSpec = Field(
        default_factory=GroupUpdateSpec,
        description="When a growing vendor-side incident tells the people paged its new size",
    )

    def settings(self) -> CorrelationSettings:
        return CorrelationSettings(
            self.enabled,
            self.window,
            self.min_customers,
            float(self.hold),
            self.escalation_policy,
            self.update_when.rule(),
        )


class IncidentSettingsSpec(StrictModel):
    default_policy: str | None = Field(
        None, description="Escalation policy when neither customer nor service names one"
    )
    cooldown: Duration = Field(
        600.0, description="A relapse this soon after recovery reopens the same incident"
    )
    escalate_after: Duration | None = Field(1800.0, description="Default for policies")
    tick_interval: Duration = Field(10.0, description="How often escalation timers are checked")
    flapping: FlappingSpec = Field(default_factory=FlappingSpec)
    correlation: CorrelationSpec = Field(default_factory=CorrelationSpec)
    ack_link_ttl: Duration = Field(86400.0, description="How long an acknowledge link works")


class RetrySpec(StrictModel):
    initial: Duration = Field(30.0, description="First retry delay")
    max_delay: Duration = Field(1800.0, description="Longest delay between retries")
    max_attempts: int = Field(20, ge=1, description="Attempts before a message is failed")


class NotificationSettingsSpec(StrictModel):
    templates_dir: str | None = Field(
        None, description="Directory of operator templates overriding alert_templates/"
    )
    sms_max_segments: int = Field(2, ge=1, le=10, description="Longest SMS, in segments")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    rate_limit_per_minute: dict[str, int] = Field(
        default_factory=dict, description="Per channel name: messages a minute at most"
    )
    poll_interval: Duration = Field(2.0, description="How often the outbox is checked")
    language: Literal["en", "zh-CN"] = Field(
        "en",
        description="Language of messages for a recipient whose contact and channel name "
        "none (en or zh-CN)",
    )
    customer_updates_channel: str | None = Field(
        None,
        description="E-mail channel that sends the customer updates written on an incident "
        "to the customer's contacts with notify: true",
    )
