"""Sending each customer its monthly service report, once, on the first working day.

The housekeeping job runs at start-up and every hour. From ``hour`` o'clock of the
month's first working day (reports.timezone: Beijing time by default; weekends,
``holidays`` and ``working_days`` decide which day that is) it queues last month's
report for every contact with ``reports: true`` through the outbox, keyed
``customer-report:PERIOD:CUSTOMER:EMAIL``. The outbox ignores a key it holds, so a
restart, a second replica or the next hourly run never sends it twice; and a
daemon that was down at the hour catches up when it starts. It keeps trying for
``_CATCH_UP_DAYS`` at most, and never longer than the outbox keeps delivered
messages (retention.outbox_days): past that a pruned key could be queued again.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

from monitor.catalog import Catalog
from monitor.config.models import CustomerSpec
from monitor.notify.message import RenderedMessage
from monitor.reports.customer import customer_report_in_worker
from monitor.reports.customer_render import customer_rendered
from monitor.reports.model import Period, month_of
from monitor.reports.pdf import PDF_TYPE
from monitor.store import Store

log = logging.getLogger(__name__)
DAY = 86400.0
_CATCH_UP_DAYS = 7
EVENT = "customer_report"


def first_working_day(
    year: int, month: int, holidays: Sequence[date] = (), working_days: Sequence[date] = ()
) -> date:
    """The first day of the month that is a working day: Monday to Friday unless a
    holiday, or a weekend day named a working day (a make-up day)."""
    day = date(year, month, 1)
    while True:
        weekday = day.weekday() < 5
        if (weekday and day not in holidays) or day in working_days:
            return day
        day += timedelta(days=1)


def due_period(catalog: Catalog, now: float) -> Period | None:
    """Last month, if its customer reports are due at ``now``; None otherwise."""
    settings = catalog.config.reports.customer_monthly
    zone = ZoneInfo(catalog.config.reports.timezone)
    here = datetime.fromtimestamp(now, zone)
    first = first_working_day(here.year, here.month, settings.holidays, settings.working_days)
    due = datetime.combine(first, clock_time(settings.hour), zone).timestamp()
    window = min(_CATCH_UP_DAYS, catalog.config.retention.outbox_days) * DAY
    if not due <= now < due + window:
        return None
    return month_of(now, catalog.config.reports.timezone, offset=-1)


def report_recipients(customer: CustomerSpec) -> list[str]:
    """The customer's contacts who receive its reports, each once."""
    return list(dict.fromkeys(c.email for c in customer.contacts if c.reports and c.email))


def dedup_key(period: str, customer: str, email: str) -> str:
    return f"customer-report:{period}:{customer}:{email}"


def customer_messages(
    catalog: Catalog,
    customer: CustomerSpec,
    period: str,
    rendered: tuple[str, str, bytes],
    people: Sequence[str],
) -> list[RenderedMessage]:
    """One e-mail per contact: HTML body, text part, the PDF attached."""
    channel = catalog.config.reports.customer_monthly.channel or ""
    html, text, pdf = rendered
    subject = f"{customer.name} 月度服务报告 Monthly service report {period}"
    attachment = (
        f"service-report-{period}-{customer.id}.pdf",
        PDF_TYPE,
        base64.b64encode(pdf).decode(),
    )
    return [
        RenderedMessage(
            dedup_key=dedup_key(period, customer.id, person),
            channel=channel,
            event=EVENT,
            recipients=(person,),
            subject=subject,
            text=text,
            html=html,
            sms=subject,
            payload={"event": EVENT, "period": period, "customer": customer.id},
            attachments=(attachment,),
        )
        for person in people
    ]


async def queue_customer_reports(
    store: Store, catalog: Catalog, directories: Sequence[Path], now: float
) -> int:
    """Queue the reports that are due and not queued yet; returns how many were queued."""
    settings = catalog.config.reports.customer_monthly
    if not settings.enabled or not settings.channel:
        return 0
    period = due_period(catalog, now)
    if period is None:
        return 0
    queued = 0
    for customer in catalog.config.customers:
        people = report_recipients(customer)
        keys = [dedup_key(period.label, customer.id, person) for person in people]
        known = await store.outbox_keys(keys)
        people = [p for p, key in zip(people, keys, strict=True) if key not in known]
        if not people:
            continue  # no contact wants it, or it is queued already: nothing is rendered
        render = functools.partial(customer_rendered, directories=directories)
        rendered = await customer_report_in_worker(
            store, catalog, period, customer.id, render, now=now
        )
        messages = customer_messages(catalog, customer, period.label, rendered, people)
        queued += await store.enqueue(messages, now)
    if queued:
        log.info("event=customer_reports_queued period=%s messages=%d", period.label, queued)
    return queued
