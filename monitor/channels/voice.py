"""What the voice channels (``aliyun_voice``, ``tencent_voice``) share.

A voice channel places one text-to-speech call per message to one number: the
message's recipient (an escalation step's ``recipients``) or, when it names
nobody, each number of the channel's ``to`` gets its own message. The spoken text
is the event's ``voice.txt.j2`` template (short; Chinese unless the callee or the
channel says otherwise), passed to the provider's approved TTS template as one
variable.

Calls are scarce: each provider allows only a few per callee (see
:mod:`monitor.engine.voice_budget`). The channel's ``budget`` says how many; the
incident manager keeps to it, with the calls placed kept in the store, and moves a
call the budget forbids to the next voice channel of the step.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Literal

from pydantic import Field, field_validator

from monitor.channels.base import ChannelOptions, PhoneNumber
from monitor.config_types import Duration, StrictModel
from monitor.engine.voice_budget import CallBudget, CallWindow, NightRule
from monitor.notify.message import DeliveryError, RenderedMessage
from monitor.timezones import TimeZoneName

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class CallWindowSpec(StrictModel):
    calls: int = Field(ge=1, description="Calls allowed to one number …")
    per: Duration = Field(description="… in any window of this length (30s, 10m, 24h)")


class NightRuleSpec(StrictModel):
    calls: int = Field(ge=0, description="Calls allowed to one number during one night")
    start: str = Field("22:00", description="When the night begins (HH:MM, local)")
    end: str = Field("08:00", description="When it ends (HH:MM, local; may be the next day)")
    timezone: TimeZoneName = Field("Asia/Shanghai", description="IANA zone of start and end")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"expected HH:MM, got {value!r}")
        return value


class CallBudgetSpec(StrictModel):
    """Calls allowed to one number; the provider's documented defaults when unset."""

    windows: list[CallWindowSpec] = Field(description="Sliding windows, all of which apply")
    night: NightRuleSpec | None = Field(None, description="A cap for calls at night")

    def budget(self) -> CallBudget:
        night = None
        if self.night is not None:
            start = time.fromisoformat(self.night.start)
            end = time.fromisoformat(self.night.end)
            night = NightRule(self.night.calls, start, end, self.night.timezone)
        return CallBudget(tuple(CallWindow(w.calls, w.per) for w in self.windows), night)


def budget_spec(budget: CallBudget) -> CallBudgetSpec:
    """A provider's default budget as the config would write it."""
    night = budget.night
    return CallBudgetSpec(
        windows=[CallWindowSpec(calls=w.calls, per=w.seconds) for w in budget.windows],
        night=NightRuleSpec(
            calls=night.calls, start=f"{night.start:%H:%M}", end=f"{night.end:%H:%M}",
            timezone=night.timezone,
        ) if night else None,
    )  # fmt: skip


class VoiceOptions(ChannelOptions):
    """Options every voice channel has besides its provider's."""

    to: list[PhoneNumber] = Field([], description="E.164 numbers called when a step names none")
    play_times: int = Field(2, ge=1, le=3, description="How many times the text is spoken")
    language: Literal["zh-CN", "en"] = Field(
        "zh-CN", description="Language spoken, unless the callee has their own"
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds allowed per request")

    def call_budget(self) -> CallBudget:
        """The budget kept for each number (the provider's defaults unless configured)."""
        raise NotImplementedError


def callee(message: RenderedMessage, configured: list[str]) -> str:
    """The one number to call: a call reaches one person, so a message names one."""
    people = message.recipients or tuple(configured)
    if len(people) != 1:
        raise DeliveryError(
            f"a voice call needs exactly one number, got {len(people)}: set `to` on the "
            "channel or recipients on the escalation step",
            retryable=False,
        )
    return people[0]


def spoken_text(message: RenderedMessage) -> str:
    """What is said: the voice template's text, or the subject when an operator's
    template set has none."""
    return message.voice or message.subject
