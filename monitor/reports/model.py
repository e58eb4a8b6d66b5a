"""What a report holds, and how it is composed from history. Pure: no I/O.

``compose()`` takes the status intervals, incidents (with their timelines) and
maintenance windows of a period and returns a ``Report`` whose figures all
come from ``monitor.sla`` — the same functions the exported SLA metric uses,
so the report and the metric agree.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from monitor.catalog import Catalog
from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.engine.maintenance import applies_to, occurrences
from monitor.engine.model import Incident, IncidentEvent, MaintenanceWindow, StatusInterval
from monitor.reports.locations import (
    LocatedTarget,
    LocationFigures,
    RecordedChange,
    by_target,
    location_figures,
)
from monitor.sla import Availability, IncidentTimes, ResponseStats, availability, response_stats

MAX_PERIOD_DAYS = 400  # a year and a month, for an auditor's annual report
FIRST_YEAR, LAST_YEAR = 1970, 8999


@dataclass(frozen=True, slots=True)
class Period:
    label: str  # "2026-10", or "2026-10-01..2026-10-15"
    start: float
    end: float
    timezone: str

    def days(self) -> tuple[tuple[date, float, float], ...]:
        """Each local calendar day of the period: (day, start, end)."""
        return _calendar_days(self.start, self.end, self.timezone)


@lru_cache(maxsize=16)
def _calendar_days(
    start: float, end: float, timezone: str
) -> tuple[tuple[date, float, float], ...]:
    """Worked out once per period: every subscription of a report asks for them."""
    zone = ZoneInfo(timezone)
    day = datetime.fromtimestamp(start, zone).date()
    result = []
    for _ in range(MAX_PERIOD_DAYS + 1):  # bounded: parse_period refuses longer
        begin = datetime.combine(day, datetime.min.time(), zone).timestamp()
        if begin >= end:
            break
        finish = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).timestamp()
        result.append((day, max(begin, start), min(finish, end)))
        day += timedelta(days=1)
    return tuple(result)


def month_period(year: int, month: int, timezone: str) -> Period:
    zone = ZoneInfo(timezone)
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone)
    return Period(f"{year:04d}-{month:02d}", start.timestamp(), end.timestamp(), timezone)


def parse_period(text: str, timezone: str) -> Period:
    """``2026-10`` (a month) or ``2026-10-01..2026-10-15`` (days, both included).

    ValueError, with a message for the person who typed it, for anything else: text
    that is not a period, a range that ends before it starts, years outside
    ``FIRST_YEAR``–``LAST_YEAR``, or more than ``MAX_PERIOD_DAYS`` days.
    """
    shown = text if len(text) <= 40 else text[:40] + "…"
    try:
        first, last = _period_dates(text)
    except ValueError as exc:
        raise ValueError(
            f"invalid period {shown!r} ({exc}): use 2026-10 or 2026-10-01..2026-10-15"
        ) from None
    if first.year < FIRST_YEAR or last.year > LAST_YEAR:
        raise ValueError(
            f"invalid period {shown!r}: reports cover the years {FIRST_YEAR} to {LAST_YEAR}"
        )
    days = (last - first).days + 1
    if days > MAX_PERIOD_DAYS:
        raise ValueError(
            f"period {shown!r} has {days} days: a report covers at most {MAX_PERIOD_DAYS} "
            "days (ask for one month or a shorter range)"
        )
    if ".." not in text:
        return month_period(first.year, first.month, timezone)
    zone = ZoneInfo(timezone)
    start = datetime.combine(first, datetime.min.time(), zone).timestamp()
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).timestamp()
    return Period(f"{first}..{last}", start, end, timezone)


def _period_dates(text: str) -> tuple[date, date]:
    """The first and last day of the period ``text`` names."""
    if ".." in text:
        first, last = (date.fromisoformat(part.strip()) for part in text.split("..", 1))
        if last < first:
            raise ValueError("the period ends before it starts")
        return first, last
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError("expected YEAR-MONTH")
    year, month = int(parts[0]), int(parts[1])
    if not 1 <= year <= 9999 or not 1 <= month <= 12:
        raise ValueError("month out of range")
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def month_of(at: float, timezone: str, offset: int = 0) -> Period:
    """The calendar month containing ``at`` (``offset=-1``: the month before)."""
    here = datetime.fromtimestamp(at, ZoneInfo(timezone))
    index = here.year * 12 + here.month - 1 + offset
    return month_period(index // 12, index % 12 + 1, timezone)


@dataclass(frozen=True, slots=True)
class DayFigure:
    day: date
    sla_availability: float | None
    coverage: float | None
    downtime: float


@dataclass(frozen=True, slots=True)
class SubscriptionFigures:
    customer: str
    service: str
    service_name: str
    availability: Availability
    daily: tuple[DayFigure, ...]
    intervals: tuple[StatusInterval, ...]  # raw, unclipped: an auditor can recompute
    # what each listed location saw of its checks with locations (none: no such check)
    locations: tuple[LocationFigures, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowInPeriod:
    """A maintenance window that applied in the period, and when it did."""

    window: MaintenanceWindow
    occurrences: tuple[tuple[float, float], ...]  # (begins, ends), clipped to the period

    @property
    def seconds(self) -> float:
        return sum(end - begin for begin, end in self.occurrences)


@dataclass(frozen=True, slots=True)
class CustomerSection:
    id: str
    name: str
    tenant_domain: str
    tier: str
    subscriptions: tuple[SubscriptionFigures, ...]
    incidents: tuple[IncidentTimes, ...]
    response: ResponseStats
    maintenance: tuple[WindowInPeriod, ...]
    ack_within: float | None
    resolve_within: float | None

    @property
    def coverage(self) -> float | None:
        """Measured time of all its subscriptions ÷ their time in the period."""
        figures = [s.availability for s in self.subscriptions]
        total = sum(a.period_seconds for a in figures)
        return sum(a.measured for a in figures) / total if total > 0 else None

    def count(self, verdict: str) -> int:
        """How many of its subscriptions have this verdict (met, missed, not determinable)."""
        return sum(1 for s in self.subscriptions if s.availability.verdict == verdict)


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    generated_at: float
    customers: tuple[CustomerSection, ...]
    overall: ResponseStats
    vendor_incidents: tuple[IncidentTimes, ...]
    audit_head: tuple[int, str]
    config_digest: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    # the config lists locations for some targets: the report breaks those down
    # (without, every format stays as it was before locations existed)
    by_location: bool = False


def incident_times(incident: Incident, timeline: Sequence[IncidentEvent]) -> IncidentTimes:
    escalations = tuple(e.at for e in timeline if e.kind == "escalated")
    vendor = [e for e in timeline if e.kind == "vendor_case"]
    return IncidentTimes(
        id=incident.id,
        customer=incident.customer,
        service=incident.service,
        severity=incident.severity.value,
        opened_at=incident.opened_at,
        acknowledged_at=_first(timeline, "acknowledged") or incident.acknowledged_at,
        resolved_at=incident.resolved_at,
        escalations=escalations,
        vendor_case_at=vendor[-1].at if vendor else None,
        vendor_case=incident.vendor_case,
        acknowledged_by=_first_actor(timeline, "acknowledged") or incident.acknowledged_by,
        silent=incident.muted and not incident.notified,
        status=str(incident.status.value),
    )


def _first(timeline: Sequence[IncidentEvent], kind: str) -> float | None:
    return next((e.at for e in timeline if e.kind == kind), None)


def _first_actor(timeline: Sequence[IncidentEvent], kind: str) -> str | None:
    return next((e.actor for e in timeline if e.kind == kind), None)


def subscription_whole(
    catalog: Catalog,
    customer: str,
    service: str,
    period: Period,
    intervals: Sequence[StatusInterval],
    now: float,
) -> Availability:
    """A subscription's figures over the period, with its target and degraded rule."""
    service_spec = catalog.services.get(service)
    subscription = catalog.subscriptions.get((customer, service))
    degraded = service_spec.sla_counts_degraded if service_spec else False
    target = subscription.sla_target if subscription else None
    return availability(
        intervals,
        period.start,
        period.end,
        now=now,
        degraded_is_down=degraded,
        target=target,
        min_coverage=catalog.config.reports.min_coverage / 100,
    )


def subscription_figures(
    catalog: Catalog,
    customer: str,
    service: str,
    period: Period,
    intervals: Sequence[StatusInterval],
    now: float,
    location_changes: Mapping[str, Sequence[RecordedChange]] | None = None,
) -> SubscriptionFigures:
    """A subscription's figures over the period and each day; with ``location_changes``
    (target id -> its locations' changes), each location's view of its located checks."""
    service_spec = catalog.services.get(service)
    whole = subscription_whole(catalog, customer, service, period, intervals, now)
    degraded = whole.degraded_is_down
    daily = []
    for day, start, end in period.days():
        figures = availability(intervals, start, end, now=now, degraded_is_down=degraded)
        daily.append(
            DayFigure(
                day,
                figures.sla_availability,
                figures.coverage if start < now else None,
                figures.downtime,
            )
        )
    located = located_targets(catalog, customer, service) if location_changes is not None else []
    by_location = (
        location_figures(
            located,
            location_changes,
            period.start,
            period.end,
            now=now,
            degraded_is_down=degraded,
            target=whole.target,
            min_coverage=whole.min_coverage,
        )
        if located and location_changes is not None  # (None: the config lists no locations)
        else ()
    )
    return SubscriptionFigures(
        customer,
        service,
        service_spec.name if service_spec else service,
        whole,
        tuple(daily),
        tuple(intervals),
        by_location,
    )


def located_targets(catalog: Catalog, customer: str, service: str) -> list[LocatedTarget]:
    """The subscription's checks with listed locations, in the config's order."""
    subscription = catalog.subscriptions.get((customer, service))
    if subscription is None:
        return []
    located = []
    for target_id in subscription.target_ids:
        spec = catalog.targets.get(target_id)
        if spec is not None and spec.locations:
            located.append(LocatedTarget(target_id, spec.target.check, spec.locations))
    return located


def has_locations(catalog: Catalog) -> bool:
    """Whether the config lists locations for any target."""
    return any(spec.locations for spec in catalog.targets.values())


def _window_in_period(window: MaintenanceWindow, period: Period) -> WindowInPeriod:
    found = occurrences(window, period.start, period.end)
    clipped = tuple((max(b, period.start), min(e, period.end)) for b, e in found)
    return WindowInPeriod(window, clipped)


def compose(
    catalog: Catalog,
    period: Period,
    intervals: Iterable[StatusInterval],
    incidents: Iterable[tuple[Incident, Sequence[IncidentEvent]]],
    windows: Iterable[MaintenanceWindow],
    *,
    now: float,
    audit_head: tuple[int, str],
    customer: str | None = None,
    only: Collection[str] | None = None,
    location_changes: Iterable[RecordedChange] = (),
) -> Report:
    """The report of ``period``: every customer's section (or ``customer``'s alone;
    ``only`` keeps the sections of those customers without naming one in the labels).
    ``location_changes``: the located targets' changes (``Store.location_changes``)."""
    services_of: dict[str, list[str]] = defaultdict(list)  # one pass, not one per customer
    for key in catalog.subscriptions:
        services_of[key[0]].append(key[1])
    by_subscription: dict[tuple[str, str], list[StatusInterval]] = defaultdict(list)
    for interval in intervals:
        by_subscription[(interval.customer, interval.service)].append(interval)
    times_by_customer: dict[str, list[IncidentTimes]] = defaultdict(list)
    vendor: list[IncidentTimes] = []
    for incident, timeline in incidents:
        times = incident_times(incident, timeline)
        if incident.customer == VENDOR_CUSTOMER:
            vendor.append(times)
        else:
            times_by_customer[incident.customer].append(times)
    located = has_locations(catalog)
    changes = by_target(location_changes) if located else None
    windows = list(windows)
    found: dict[int, WindowInPeriod] = {}

    def expanded(index: int) -> WindowInPeriod:
        """A window's occurrences in the period, computed once for every customer."""
        if index not in found:
            found[index] = _window_in_period(windows[index], period)
        return found[index]

    sections = []
    horizon = min(now, period.end)
    for spec in catalog.config.customers:
        if customer is not None and spec.id != customer:
            continue
        if only is not None and spec.id not in only:
            continue
        tier = catalog.config.tiers.get(spec.tier)
        ack_within = tier.ack_within if tier else None
        resolve_within = tier.resolve_within if tier else None
        subscriptions = tuple(
            subscription_figures(
                catalog,
                spec.id,
                service,
                period,
                by_subscription[(spec.id, service)],
                now,
                changes,
            )
            for service in services_of[spec.id]
        )
        own = sorted(times_by_customer[spec.id], key=lambda t: t.opened_at)
        applicable = tuple(
            in_period
            for index, w in enumerate(windows)
            if any(applies_to(w, spec.id, s.service) for s in subscriptions)
            and (in_period := expanded(index)).occurrences
        )
        sections.append(
            CustomerSection(
                spec.id,
                spec.name,
                spec.tenant_domain,
                spec.tier,
                subscriptions,
                tuple(own),
                response_stats(
                    own, ack_within=ack_within, resolve_within=resolve_within, now=horizon
                ),
                applicable,
                ack_within,
                resolve_within,
            )
        )
    every = [t for section in sections for t in section.incidents]
    return Report(
        period,
        now,
        tuple(sections),
        response_stats(every, now=horizon),
        tuple(sorted(vendor, key=lambda t: t.opened_at)),
        audit_head,
        catalog.digest,
        {
            "period": period.label,
            "timezone": period.timezone,
            "customer": customer or "all",
            "min_coverage_percent": f"{catalog.config.reports.min_coverage:g}",
        },
        located,
    )
