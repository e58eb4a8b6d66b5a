"""Config models for on-call people and schedules, and the checks between them.

``people`` names everyone who can be paged (e-mail, phone, chat user id, language),
once; ``schedules`` stack rotations of them (see ``engine/oncall.py``). An escalation
step pages whoever is on call with ``recipients: [schedule:NAME]``: each channel of
the step gets that person's address of the kind the channel sends to (its options'
``recipient_kind``), so a schedule used by an e-mail channel needs people with e-mail.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any, Literal

from pydantic import Field, field_validator

from monitor.channels import CHANNEL_TYPES
from monitor.channels.base import PhoneNumber
from monitor.config.errors import ConfigIssue
from monitor.config_types import StrictModel
from monitor.engine.oncall import Layer, Schedule, schedule_name
from monitor.timezones import TimeZoneName

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_TURN = re.compile(r"^(daily|weekly|([1-9]\d{0,2})d)$")


def _clock(value: str) -> time:
    match = _CLOCK.match(value)
    if not match:
        raise ValueError(f"expected a time of day as HH:MM (24 h), e.g. 09:00, got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


class PersonSpec(StrictModel):
    """Someone who can be on call."""

    name: str = Field(min_length=1, description="As people read it, e.g. 王伟 (Wang Wei)")
    email: str | None = Field(None, description="For e-mail channels")
    phone: PhoneNumber | None = Field(
        None, description="E.164, e.g. +8613800000000: SMS, voice, chat @mentions by mobile"
    )
    chat_user_id: str | None = Field(
        None, description="Chat user id for channels that mention by id (Feishu open_id ou_…)"
    )
    language: Literal["zh-CN", "en"] | None = Field(
        None,
        description="Language of the messages they get (default: the channel's, else "
        "notifications.language); a customer contact's own language comes first",
    )


class LayerSpec(StrictModel):
    """One rotation: members take turns, handing over at a local time of day."""

    name: str | None = Field(None, description="Shown in /api/v1/oncall (default: layer-N)")
    members: list[str] = Field(description="Person ids (under people), in turn order")
    turn: str = Field("weekly", description="daily, weekly, or N days as Nd (e.g. 3d)")
    handoff: str = Field("09:00", description="Local time of day turns change, HH:MM")
    start: date = Field(description="The first member's first turn begins this day at handoff")
    time_zone: TimeZoneName | None = Field(None, description="Default: the schedule's time_zone")
    hours: str | None = Field(
        None,
        description="On call only between these local times, HH:MM-HH:MM (may cross "
        "midnight, e.g. 20:00-08:00); elsewhere lower layers apply",
    )
    days: list[Weekday] | None = Field(
        None, description="On call only on these days (for hours: the day the window starts)"
    )

    @field_validator("members")
    @classmethod
    def _someone(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a rotation needs at least one member")
        return value

    @field_validator("turn")
    @classmethod
    def _turn(cls, value: str) -> str:
        if not _TURN.match(value):
            raise ValueError(
                f"expected daily, weekly or a number of days such as 3d, got {value!r}"
            )
        return value

    @field_validator("handoff")
    @classmethod
    def _handoff(cls, value: str) -> str:
        _clock(value)
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is None:
            return None
        begin, dash, end = value.partition("-")
        if not dash:
            raise ValueError(f"expected HH:MM-HH:MM, e.g. 20:00-08:00, got {value!r}")
        if _clock(begin.strip()) == _clock(end.strip()):
            raise ValueError("hours must not start and end at the same time (leave it out)")
        return value

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("list at least one day, or leave days out")
        return value

    @property
    def turn_days(self) -> int:
        if self.turn == "daily":
            return 1
        if self.turn == "weekly":
            return 7
        return int(self.turn[:-1])

    def layer(self, position: int, zone: str) -> Layer:
        hours = None
        if self.hours is not None:
            begin, _, end = self.hours.partition("-")
            hours = (_clock(begin.strip()), _clock(end.strip()))
        return Layer(
            name=self.name or f"layer-{position + 1}",
            members=tuple(self.members),
            start=self.start,
            zone=self.time_zone or zone,
            handoff=_clock(self.handoff),
            turn_days=self.turn_days,
            hours=hours,
            days=frozenset(WEEKDAYS.index(d) for d in self.days) if self.days else None,
        )


class ScheduleSpec(StrictModel):
    """Who is on call when: layers of rotations, the last one on top."""

    description: str = ""
    time_zone: TimeZoneName = Field(
        "Asia/Shanghai", description="IANA zone of handoffs and hours (Asia/Shanghai: Beijing)"
    )
    layers: list[LayerSpec] = Field(
        description="Rotations, lowest first: a later layer wins wherever it has someone"
    )

    @field_validator("layers")
    @classmethod
    def _some_layer(cls, value: list[LayerSpec]) -> list[LayerSpec]:
        if not value:
            raise ValueError("a schedule needs at least one layer (a rotation)")
        return value

    def schedule(self, name: str) -> Schedule:
        return Schedule(
            name, tuple(layer.layer(i, self.time_zone) for i, layer in enumerate(self.layers))
        )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def schedule_reference_issues(raw: dict[str, Any]) -> list[ConfigIssue]:
    """People and schedules that are named but not defined, and people who lack the
    address a channel paging their schedule needs. Works on the raw document, so these
    are reported together with structural problems."""
    issues: list[ConfigIssue] = []
    people = _mapping(raw.get("people"))
    schedules = _mapping(raw.get("schedules"))
    members_of: dict[str, set[str]] = {}
    for name, spec in schedules.items():
        members = members_of.setdefault(name, set())
        for index, layer in enumerate(_list(_mapping(spec).get("layers"))):
            for position, member in enumerate(_list(_mapping(layer).get("members"))):
                if member not in people:
                    allowed = ", ".join(sorted(people)) or "none defined under people"
                    issues.append(
                        ConfigIssue(
                            f"schedules.{name}.layers[{index}].members[{position}]",
                            f"unknown person {member!r} (allowed: {allowed})",
                        )
                    )
                else:
                    members.add(member)
    channels = _mapping(raw.get("channels"))
    for policy, spec in _mapping(raw.get("escalation_policies")).items():
        for index, step in enumerate(_list(_mapping(spec).get("steps"))):
            step = _mapping(step)
            where = f"escalation_policies.{policy}.steps[{index}]"
            # (recipients, their path, the channels they are paged on)
            lists: list[tuple[list[Any], str, list[Any]]] = []
            shared: list[Any] = []  # channels paging the step's own recipients
            for k, item in enumerate(_list(step.get("notify"))):
                if isinstance(item, dict) and item.get("recipients") is not None:
                    path = f"{where}.notify[{k}].recipients"
                    lists.append((_list(item.get("recipients")), path, [item.get("channel")]))
                else:
                    shared.append(item.get("channel") if isinstance(item, dict) else item)
            lists.append((_list(step.get("recipients")), f"{where}.recipients", shared))
            for recipients, path, paged_on in lists:
                for position, recipient in enumerate(recipients):
                    wanted = schedule_name(recipient) if isinstance(recipient, str) else None
                    if wanted is None:
                        continue
                    if wanted not in schedules:
                        allowed = ", ".join(sorted(schedules)) or "none defined under schedules"
                        problem = f"unknown schedule {wanted!r} (allowed: {allowed})"
                        issues.append(ConfigIssue(f"{path}[{position}]", problem))
                        continue
                    issues += _missing_addresses(
                        f"{path}[{position}]",
                        wanted,
                        sorted(members_of.get(wanted, ())),
                        people,
                        paged_on,
                        channels,
                    )
    return issues


def _missing_addresses(
    path: str,
    schedule: str,
    members: list[str],
    people: dict[str, Any],
    paged_on: list[Any],
    channels: dict[str, Any],
) -> list[ConfigIssue]:
    """A page to ``schedule`` on a step's channel needs each member's address of the
    channel's kind (their e-mail for e-mail, their phone for SMS)."""
    issues = []
    for channel in paged_on:
        if not isinstance(channel, str):
            continue
        kind = recipient_kind(_mapping(channels.get(channel)).get("type"))
        if kind is None:
            continue
        for member in members:
            if not _mapping(people.get(member)).get(kind):
                issues.append(
                    ConfigIssue(
                        path,
                        f"person {member!r} of schedule {schedule!r} has no {kind}, which "
                        f"channel {channel!r} needs to page them",
                    )
                )
    return issues


def recipient_kind(channel_type: Any) -> str | None:
    """The person's field a channel type sends to (email, phone, chat_user_id); None for
    channels that send to no one in particular (webhook, file)."""
    known = CHANNEL_TYPES.get(channel_type) if isinstance(channel_type, str) else None
    return known.options.recipient_kind if known is not None else None
