"""Config models for reports, the monthly report schedule and retention."""

from __future__ import annotations

from datetime import date

from pydantic import Field, field_validator

from monitor.config_types import Duration, StrictModel
from monitor.timezones import TimeZoneName


def _valid_cron(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
    return value


class MonthlyReportSpec(StrictModel):
    enabled: bool = False
    cron: str = Field(
        "0 9 1 * *",
        description="When to send last month's report (crontab, "
        "in reports.timezone): 09:00 on the 1st by default",
    )
    channels: list[str] = Field(
        default_factory=list, description="Channels that receive it (e.g. an auditor e-mail)"
    )
    recipients: list[str] = Field(
        default_factory=list, description="Overrides the channels' own recipients"
    )
    per_customer: bool = Field(
        False,
        description="One report per customer instead of one "
        "for all (e.g. to send each customer its own)",
    )

    _cron = field_validator("cron")(lambda cls, value: _valid_cron(value))


class CustomerReportSpec(StrictModel):
    """The monthly service report each customer gets (customer-facing, zh-CN and English)."""

    enabled: bool = False
    channel: str | None = Field(
        None,
        description="E-mail channel that sends it to each customer's contacts with "
        "reports: true (required when enabled)",
    )
    hour: int = Field(
        9, ge=0, le=23, description="Hour (reports.timezone) on the first working day of the month"
    )
    holidays: list[date] = Field(
        default_factory=list,
        description="Weekdays that are not working days (public holidays, e.g. 2026-10-01)",
    )
    working_days: list[date] = Field(
        default_factory=list,
        description="Weekend days that are working days (make-up days, e.g. 2026-10-10)",
    )


class ReportSettingsSpec(StrictModel):
    timezone: TimeZoneName = Field(
        "Asia/Shanghai", description="Months and days of reports begin at midnight in this zone"
    )
    min_coverage: float = Field(
        99.0,
        ge=0,
        le=100,
        description="Percent of a period that must be measured for an SLA verdict: below it "
        "a subscription's SLA is 'not determinable', never 'met'",
    )
    monthly: MonthlyReportSpec = Field(default_factory=MonthlyReportSpec)
    customer_monthly: CustomerReportSpec = Field(default_factory=CustomerReportSpec)
    sla_metric_interval: Duration = Field(
        300.0, description="How often csp_monitor_sla_availability_ratio is recomputed"
    )


class RetentionSpec(StrictModel):
    history_days: int = Field(
        400,
        ge=31,
        description="Status history, incidents and their "
        "timelines are kept this long (auditors ask for a year or more)",
    )
    audit_days: int = Field(
        400,
        ge=31,
        description="Audit log entries are kept this long; "
        "older ones are pruned behind a signed checkpoint",
    )
    outbox_days: int = Field(90, ge=1, description="Delivered or failed messages")
    cron: str = Field("30 3 * * *", description="When the retention job runs (crontab)")

    _cron = field_validator("cron")(lambda cls, value: _valid_cron(value))
