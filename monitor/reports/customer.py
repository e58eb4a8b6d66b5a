"""The monthly service report a customer reads: its own services only, in plain words.

Every figure of this month comes from the auditor's report for the same customer
and period (``build_report``: one ``Report`` object, rendered twice), so the two
documents cannot disagree. What is added is for a customer's eyes: the previous
three months (the trend, computed by the same ``subscription_whole``), and for
each incident the updates our team wrote for the customer (``customer_update``
events). Internal notes (``note`` events), who acknowledged, the vendor case
number and check names are never read into it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from monitor.catalog import Catalog
from monitor.engine.incidents import CUSTOMER_UPDATE
from monitor.engine.model import StatusInterval
from monitor.reports.build import build_report, off_loop
from monitor.reports.model import CustomerSection, Period, Report, month_of, subscription_whole
from monitor.sla import Availability, IncidentTimes
from monitor.store import Store

TREND_MONTHS = 3
_STEADY = 0.0001  # ±0.01 percentage points: the same as before

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class MonthFigure:
    label: str  # "2026-09"
    availability: float | None
    coverage: float | None
    verdict: str | None


@dataclass(frozen=True, slots=True)
class ServiceLine:
    service: str
    name: str
    figures: Availability  # this month: the auditor report's own object
    earlier: tuple[MonthFigure, ...]  # the previous months, oldest first

    @property
    def trend(self) -> str:
        """better, worse or steady against the previous months' mean; none without data."""
        now = self.figures.sla_availability
        before = [m.availability for m in self.earlier if m.availability is not None]
        if now is None or not before or not self.figures.determinable:
            return "none"
        mean = sum(before) / len(before)
        if now > mean + _STEADY:
            return "better"
        if now < mean - _STEADY:
            return "worse"
        return "steady"


@dataclass(frozen=True, slots=True)
class PublicUpdate:
    at: float
    text: str


@dataclass(frozen=True, slots=True)
class IncidentStory:
    times: IncidentTimes
    service_name: str
    vendor_side: bool  # one 21Vianet-side problem seen for several customers
    updates: tuple[PublicUpdate, ...]


@dataclass(frozen=True, slots=True)
class CustomerReport:
    report: Report  # the auditor's report of this customer and period
    section: CustomerSection
    services: tuple[ServiceLine, ...]
    incidents: tuple[IncidentStory, ...]
    earlier_months: tuple[str, ...]

    @property
    def period(self) -> Period:
        return self.report.period


def previous_months(period: Period, count: int = TREND_MONTHS) -> list[Period]:
    """The ``count`` calendar months before the one ``period`` starts in, oldest first."""
    return [month_of(period.start, period.timezone, -offset) for offset in range(count, 0, -1)]


def compose_customer_report(
    catalog: Catalog,
    report: Report,
    earlier: Sequence[tuple[Period, Sequence[StatusInterval]]],
    updates: dict[str, list[PublicUpdate]],
    now: float,
) -> CustomerReport:
    """Pure: the customer's view of ``report`` (one customer's auditor report)."""
    [section] = report.customers
    by_month: list[tuple[Period, dict[str, list[StatusInterval]]]] = []
    for month, intervals in earlier:
        grouped: dict[str, list[StatusInterval]] = {}
        for interval in intervals:
            grouped.setdefault(interval.service, []).append(interval)
        by_month.append((month, grouped))
    lines = []
    for item in section.subscriptions:
        months = []
        for month, grouped in by_month:
            whole = subscription_whole(
                catalog, section.id, item.service, month, grouped.get(item.service, []), now
            )
            months.append(
                MonthFigure(month.label, whole.sla_availability, whole.coverage, whole.verdict)
            )
        lines.append(ServiceLine(item.service, item.service_name, item.availability, tuple(months)))
    names = {item.service: item.service_name for item in section.subscriptions}
    stories = [
        IncidentStory(t, names.get(t.service, t.service), vendor, tuple(updates.get(t.id, ())))
        for t, vendor in [(t, False) for t in section.incidents]
        + [(t, True) for t in report.vendor_incidents]
    ]
    stories.sort(key=lambda story: story.times.opened_at)
    return CustomerReport(
        report,
        section,
        tuple(lines),
        tuple(stories),
        tuple(month.label for month, _ in earlier),
    )


async def customer_report_in_worker(
    store: Store,
    catalog: Catalog,
    period: Period,
    customer: str,
    use: Callable[[CustomerReport], R],
    *,
    now: float,
) -> R:
    """Read on the loop, compose and ``use`` (render) in a report thread."""
    report = await build_report(store, catalog, period, now=now, customer=customer)
    earlier = [
        (month, await store.status_intervals(customer=customer, start=month.start, end=month.end))
        for month in previous_months(period)
    ]
    [section] = report.customers
    updates: dict[str, list[PublicUpdate]] = {}
    for times in (*section.incidents, *report.vendor_incidents):
        public = [
            PublicUpdate(event.at, str(event.detail.get("text", "")))
            for event in await store.events(times.id)
            if event.kind == CUSTOMER_UPDATE  # only what was written for the customer
        ]
        if public:
            updates[times.id] = public

    def compose_and_use() -> R:
        return use(compose_customer_report(catalog, report, earlier, updates, now))

    return await off_loop(compose_and_use)
