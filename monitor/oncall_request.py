"""What a person may ask for when adding an on-call override (API body, CLI arguments).

"The second engineer covers the first from 2026-12-24 20:00 to 2026-12-25 08:00":
``{"schedule": "primary", "person": "li.na", "covers": "wang.wei", "starts_at":
"2026-12-24 20:00", "ends_at": "2026-12-25 08:00"}``. A time without an offset is read
in the schedule's time zone (the one its handoffs are in), so an operator types what
the rota says; one with an offset (or Unix seconds) is taken as it is. Checked
completely before anything is stored; every bad field is named.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.config import ConfigIssue, issues_from_validation
from monitor.engine.oncall import DAY, Override
from monitor.maintenance_request import EARLIEST, LATEST, MAX_REASON, InvalidRequest

MAX_OVERRIDE_DAYS = 92  # a quarter: longer is a change of the rota, which is config


def parse_moment(value: Any) -> Any:
    """A datetime (naive: to be read in the schedule's zone) or Unix seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a time such as 2026-12-24 20:00 (the schedule's zone)")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value[:40]!r} is not a time such as 2026-12-24 20:00 or 2026-12-24T20:00+08:00"
            ) from None
    seconds = float(value)
    if not (math.isfinite(seconds) and EARLIEST <= seconds < LATEST):
        raise ValueError("must be a time between 1970 and 9000")
    return seconds


class OverrideRequest(BaseModel):
    """A new override as the API receives it (and the CLI sends it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schedule: str = Field(min_length=1, max_length=100)
    person: str = Field(min_length=1, max_length=100, description="Who is on call instead")
    covers: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Only while the rota has this person (default: the whole period)",
    )
    starts_at: datetime | float = Field(description="2026-12-24 20:00 in the schedule's zone")
    ends_at: datetime | float
    reason: str = Field("", max_length=MAX_REASON)

    @field_validator("starts_at", "ends_at", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return parse_moment(value)

    def override(self, override_id: str, zone: str, actor: str | None, now: float) -> Override:
        """The override, its naive times read in ``zone``; InvalidRequest when its end is
        not after its start or it is longer than MAX_OVERRIDE_DAYS."""
        starts, ends = to_seconds(self.starts_at, zone), to_seconds(self.ends_at, zone)
        issues = []
        for field, value in (("starts_at", starts), ("ends_at", ends)):
            if not EARLIEST <= value < LATEST:
                issues.append(ConfigIssue(field, "must be a time between 1970 and 9000"))
        if not issues and ends <= starts:
            issues.append(ConfigIssue("ends_at", "must be after starts_at"))
        elif not issues and ends - starts > MAX_OVERRIDE_DAYS * DAY:
            issues.append(
                ConfigIssue(
                    "ends_at",
                    f"an override lasts at most {MAX_OVERRIDE_DAYS} days (change the "
                    "schedule's rotation in the config instead)",
                )
            )
        if issues:
            raise InvalidRequest(issues)
        return Override(
            id=override_id,
            schedule=self.schedule,
            person=self.person,
            starts_at=starts,
            ends_at=ends,
            covers=self.covers,
            reason=self.reason,
            created_by=actor,
            created_at=now,
        )


def to_seconds(value: datetime | float, zone: str) -> float:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(zone))
        try:
            return moment.timestamp()
        except (OverflowError, ValueError, OSError):
            return math.inf
    return value


def parse_override(body: dict[str, Any]) -> OverrideRequest:
    """The request in ``body``; ``InvalidRequest`` naming every bad field otherwise."""
    try:
        return OverrideRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(issues_from_validation(exc, OverrideRequest)) from None
