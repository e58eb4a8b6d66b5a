"""What a person may ask for when adding a maintenance window (API body, CLI arguments).

Checked completely before anything is stored: times are finite and inside the
years the engine and reports can handle, a window is at most ``MAX_ONE_OFF_DAYS``
long (a recurring one at most its recurrence period, so occurrences never
overlap), strings are strings, the time zone exists, unknown fields are refused.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from monitor.config import ConfigIssue, issues_from_validation
from monitor.config_types import parse_duration
from monitor.engine.maintenance import PERIOD_DAYS
from monitor.engine.model import MaintenanceWindow
from monitor.timezones import TimeZoneName

DAY = 86400.0
MAX_ONE_OFF_DAYS = 31
MAX_REASON = 1000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(9000, 1, 1, tzinfo=UTC).timestamp()
"""Times must lie in [EARLIEST, LATEST): far from the ends of Python's datetime range,
so that local times, durations and a report's days around them stay representable."""


def longest(recurrence: str | None) -> float:
    """The longest a window may be, in seconds."""
    return PERIOD_DAYS[recurrence] * DAY if recurrence else MAX_ONE_OFF_DAYS * DAY


def _days(seconds: float) -> str:
    return f"{seconds / DAY:g} day{'s' if seconds != DAY else ''}"


def _float(value: float) -> float:
    """``value`` as a float; infinity for an integer too large for one (JSON allows it)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _time(value: Any) -> float:
    """An ISO 8601 time with an offset, or Unix seconds, inside [EARLIEST, LATEST)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected an ISO 8601 time with an offset, e.g. 2026-11-29T02:00+08:00")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value[:40]!r} is not an ISO 8601 time, e.g. 2026-11-29T02:00+08:00"
            ) from None
        if parsed.tzinfo is None:
            raise ValueError("give a time zone offset, e.g. 2026-11-29T02:00+08:00")
        value = parsed.timestamp()
    seconds = _float(value)
    if not (math.isfinite(seconds) and EARLIEST <= seconds < LATEST):
        raise ValueError("must be a time between 1970 and 9000")
    return seconds


class MaintenanceRequest(BaseModel):
    """A new maintenance window as the API receives it (and the CLI sends it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    starts_at: float = Field(description="ISO 8601 time with an offset, or Unix seconds")
    recurrence: Literal["daily", "weekly", "monthly"] | None = None
    ends_at: float | None = Field(None, description="give ends_at or duration")
    duration: float | None = Field(
        None, validate_default=True, description="e.g. 2h, 90m or seconds"
    )
    customer: str | None = Field(None, min_length=1, max_length=64, description="None: all")
    service: str | None = Field(None, min_length=1, max_length=64, description="None: all")
    timezone: TimeZoneName = "Asia/Shanghai"
    reason: str = Field("", max_length=MAX_REASON)

    @field_validator("starts_at", mode="before")
    @classmethod
    def _starts(cls, value: Any) -> float:
        return _time(value)

    @field_validator("ends_at", mode="before")
    @classmethod
    def _ends(cls, value: Any) -> float | None:
        return None if value is None else _time(value)

    @field_validator("ends_at")
    @classmethod
    def _ends_after_start(cls, value: float | None, info: ValidationInfo) -> float | None:
        starts, recurrence = info.data.get("starts_at"), info.data.get("recurrence")
        if value is not None and starts is not None:
            if value <= starts:
                raise ValueError("must be after starts_at")
            if "recurrence" in info.data and value - starts > longest(recurrence):
                raise ValueError(_too_long(recurrence))
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> float | None:
        if value is None:
            return None
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            raise ValueError("expected a duration such as 2h, 90m or 1d")
        seconds = _float(value if isinstance(value, int | float) else parse_duration(value))
        if math.isnan(seconds) or seconds <= 0:
            raise ValueError("must be a positive duration such as 2h")
        return seconds  # infinity is refused as too long, below

    @field_validator("duration")
    @classmethod
    def _one_end(cls, value: float | None, info: ValidationInfo) -> float | None:
        if "ends_at" not in info.data:
            return value  # ends_at is wrong itself: said there
        if value is None and info.data["ends_at"] is None:
            raise ValueError("give duration (e.g. 2h) or ends_at")
        if value is not None and info.data["ends_at"] is not None:
            raise ValueError("give duration or ends_at, not both")
        if value is not None and "recurrence" in info.data:
            if value > longest(info.data["recurrence"]):
                raise ValueError(_too_long(info.data["recurrence"]))
            starts = info.data.get("starts_at")
            if starts is not None and starts + value >= LATEST:
                raise ValueError("the window must end before the year 9000")
        return value

    @property
    def end(self) -> float:
        """When the (first occurrence of the) window ends."""
        if self.ends_at is not None:
            return self.ends_at
        assert self.duration is not None  # the validators make sure of it
        return self.starts_at + self.duration

    def window(self, window_id: str, created_by: str | None) -> MaintenanceWindow:
        return MaintenanceWindow(
            id=window_id,
            starts_at=self.starts_at,
            ends_at=self.end,
            customer=self.customer,
            service=self.service,
            recurrence=self.recurrence,
            timezone=self.timezone,
            reason=self.reason,
            created_by=created_by,
        )


def _too_long(recurrence: str | None) -> str:
    if recurrence is None:
        return f"a one-off window lasts at most {_days(longest(None))}"
    return f"a {recurrence} window lasts at most {_days(longest(recurrence))}, its period"


def parse_request(body: dict[str, Any]) -> MaintenanceRequest:
    """The request in ``body``; ``InvalidRequest`` naming every bad field otherwise."""
    try:
        return MaintenanceRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(issues_from_validation(exc, MaintenanceRequest)) from None


class InvalidRequest(ValueError):
    """A maintenance request with one or more bad fields."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(set(issues))
        super().__init__("; ".join(str(issue) for issue in self.issues))
