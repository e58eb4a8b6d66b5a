"""Scheduled housekeeping: the month's SLA metric, retention, the monthly reports (the
auditors' and each customer's), the daily on-call check.

Cron jobs on an APScheduler of their own (probing has its own), in the
reports' time zone. Each job logs what it did and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from monitor.catalog import Catalog
from monitor.customer_reports import queue_customer_reports
from monitor.notify.message import RenderedMessage
from monitor.reports.build import month_to_date, report_in_worker
from monitor.reports.model import Report, month_of
from monitor.reports.pdf import PDF_TYPE, html_to_pdf
from monitor.reports.render import to_html, to_text
from monitor.store import Store

log = logging.getLogger(__name__)
DAY = 86400.0
ONCALL_CHECK_CRON = "0 9 * * *"  # the daily on-call gap check, in reports.timezone
_SOON_EVERY = 10.0  # seconds between two early SLA metric runs while statuses arrive
# ... and at least this many times as long as the last early run took: one every 10 s kept
# the loop too busy to probe on time when each read the whole month (see refresh_soon)
_SOON_COST_FACTOR = 5.0
_SOON_JOB = "sla-metric-early"

SetSla = Callable[[str, str, float | None, float | None], None]  # availability, coverage


def monthly_messages(
    catalog: Catalog,
    report_html: str,
    report_text: str,
    period: str,
    customer: str | None,
    customer_name: str,
    report_pdf: bytes | None = None,
) -> list[RenderedMessage]:
    """One message per channel and recipient of ``reports.monthly`` (the PDF attached)."""
    settings = catalog.config.reports.monthly
    messages = []
    scope = customer or "all"
    subject = f"Uptime and SLA report {period}: {customer_name}"
    attachments = (
        ((f"uptime-{period}-{scope}.pdf", PDF_TYPE, base64.b64encode(report_pdf).decode()),)
        if report_pdf is not None
        else ()
    )
    for channel in settings.channels:
        options = catalog.config.channels.get(channel)
        people = settings.recipients or [str(p) for p in getattr(options, "to", []) or []]
        for person in people or [""]:
            messages.append(
                RenderedMessage(
                    dedup_key=f"report:{period}:{scope}:{channel}"
                    + (f":{person}" if person else ""),
                    channel=channel,
                    event="report",
                    recipients=(person,) if person else (),
                    subject=subject,
                    text=report_text,
                    html=report_html,
                    sms=subject,
                    payload={"event": "report", "period": period, "customer": scope},
                    attachments=attachments,
                )
            )
    return messages


class Housekeeping:
    def __init__(
        self,
        store: Store,
        set_sla: SetSla,
        wake: Callable[[], None],
        base: Path,
        wall: Callable[[], float] = time.time,
        oncall_check: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._store = store
        self._oncall_check = oncall_check
        self._set_sla = set_sla
        self._wake = wake
        self._base = base
        self._wall = wall
        self._catalog: Catalog | None = None
        self._soon_at = datetime.fromtimestamp(0, UTC)  # the last refresh_soon() run
        self.last_refresh_seconds = 0.0  # how long the last SLA metric run took
        self.last_soon_seconds = 0.0  # ... and the last early one
        self._stale: set[tuple[str, str]] = set()  # subscriptions the early run is for
        self._running: set[asyncio.Task[object]] = set()  # jobs in flight
        self._closing = False
        self._scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
        )

    def start(self, catalog: Catalog) -> None:
        self.configure(catalog)
        self._scheduler.start()

    def configure(self, catalog: Catalog) -> None:
        self._catalog = catalog
        reports, retention = catalog.config.reports, catalog.config.retention
        zone = reports.timezone
        self._scheduler.remove_all_jobs()
        soon = datetime.now(UTC) + timedelta(seconds=5)
        self._scheduler.add_job(
            self._tracked,
            IntervalTrigger(seconds=reports.sla_metric_interval),
            args=(self.refresh_sla,),
            id="sla-metric",
            next_run_time=soon,
        )
        self._scheduler.add_job(
            self._tracked,
            CronTrigger.from_crontab(retention.cron, zone),
            args=(self.retention,),
            id="retention",
        )
        if catalog.config.schedules and self._oncall_check is not None:
            # every morning, Beijing time by default: who is missing in the next 7 days
            self._scheduler.add_job(
                self._tracked,
                CronTrigger.from_crontab(ONCALL_CHECK_CRON, zone),
                args=(self._oncall_check,),
                id="oncall-gaps",
            )
        if reports.customer_monthly.enabled:
            self._scheduler.add_job(  # hourly, and at start: a restart catches up
                self._tracked,
                IntervalTrigger(hours=1),
                args=(self.customer_reports,),
                id="customer-reports",
                next_run_time=soon,
            )
        if reports.monthly.enabled:
            self._scheduler.add_job(
                self._tracked,
                CronTrigger.from_crontab(reports.monthly.cron, zone),
                args=(self.monthly_report,),
                id="monthly-report",
            )
        self.refresh_soon(())  # a reload removed the early run of subscriptions still new

    def refresh_soon(self, keys: Iterable[tuple[str, str]]) -> None:
        """The subscriptions ``keys`` got their first status since the start (or again,
        after a gap): recompute their SLA metric in a second rather than at the next
        interval, so its series exist from the first confirmed status (at most one such
        run every ``_SOON_EVERY`` seconds, nor more often than five times the last took).

        Only theirs: an early run that read the whole month for every subscription took
        seconds at 60,000 of them, ran again and again while the start-up's first statuses
        (or a takeover's gaps) came in, and kept PostgreSQL and the leader busy for a
        minute, the probes of every node late meanwhile (bench/cluster_scale.py)."""
        self._stale.update(keys)
        if not self._stale:
            return
        if self._scheduler.get_job(_SOON_JOB) is not None:
            return  # one is due: it takes these too
        now = datetime.now(UTC)
        every = max(_SOON_EVERY, _SOON_COST_FACTOR * self.last_soon_seconds)
        soon = max(now + timedelta(seconds=1), self._soon_at + timedelta(seconds=every))
        self._soon_at = soon
        self._scheduler.add_job(
            self._tracked, DateTrigger(soon), args=(self._refresh_stale,), id=_SOON_JOB
        )

    def next_sla_refresh(self) -> datetime | None:
        """When the SLA metric is next recomputed for every subscription (None before
        ``start``)."""
        job = self._scheduler.get_job("sla-metric")
        return job.next_run_time if job is not None else None

    def next_early_sla_refresh(self) -> datetime | None:
        """When it is next recomputed early, for subscriptions new to it (None: not due)."""
        job = self._scheduler.get_job(_SOON_JOB)
        return job.next_run_time if job is not None else None

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def close(self, grace: float = 5.0) -> None:
        """Stop scheduling and let a job in flight (an SLA refresh reading the store)
        finish within ``grace`` seconds before the store is closed. Paused first, not shut
        down: APScheduler's shutdown cancels running jobs, in the middle of a query."""
        self._closing = True  # a job already handed to the loop but not started stays idle
        if self._scheduler.running:
            self._scheduler.pause()
        running = [task for task in self._running if not task.done()]
        if running:
            _, stuck = await asyncio.wait(running, timeout=grace)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=1.0)
        self.shutdown()

    async def _tracked(self, job: Callable[[], Awaitable[object]]) -> None:
        if self._closing:
            return  # the store is about to close (or has): a query now would outlive it
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job()
        finally:
            if task is not None:
                self._running.discard(task)

    async def refresh_sla(self) -> None:
        """``csp_monitor_sla_availability_ratio`` and ``csp_monitor_sla_coverage_ratio``: this
        month so far, as the report has it."""
        self.last_refresh_seconds = await self._refresh(None)

    async def _refresh_stale(self) -> None:
        """The early run: the subscriptions new to the metric since the last one."""
        keys, self._stale = self._stale, set()
        if keys:
            self.last_soon_seconds = await self._refresh(keys)

    async def _refresh(self, keys: set[tuple[str, str]] | None) -> float:
        """The SLA metric of ``keys`` (None: of every subscription); returns the seconds
        it took."""
        if self._catalog is None:
            return 0.0
        started = time.monotonic()
        try:
            figures = await month_to_date(self._store, self._catalog, self._wall(), keys)
        except Exception:
            log.exception("event=sla_metric_failed action=%r", "check the store")
            if keys is not None:
                self._stale |= keys  # the next early run tries them again
            return time.monotonic() - started
        for (customer, service), (value, coverage) in figures.items():
            self._set_sla(customer, service, value, coverage)
        return time.monotonic() - started

    async def retention(self) -> None:
        catalog = self._catalog
        if catalog is None:
            return
        settings, now = catalog.config.retention, self._wall()
        try:
            counts = await self._store.prune(
                now - settings.history_days * DAY,
                now,
                audit_before=now - settings.audit_days * DAY,
                outbox_before=now - settings.outbox_days * DAY,
            )
        except Exception:
            log.exception("event=retention_failed action=%r", "it runs again tomorrow")
            return
        log.info(
            "event=retention_done %s",
            " ".join(f"{table}={count}" for table, count in counts.items()),
        )

    def _template_directories(self, catalog: Catalog) -> list[Path]:
        templates = catalog.config.notifications.templates_dir
        return [self._base / templates] if templates else []

    async def customer_reports(self) -> int:
        """Queue each customer's monthly service report when due (see customer_reports)."""
        catalog = self._catalog
        if catalog is None:
            return 0
        try:
            queued = await queue_customer_reports(
                self._store, catalog, self._template_directories(catalog), self._wall()
            )
        except Exception:
            log.exception("event=customer_reports_failed action=%r", "it tries again in an hour")
            return 0
        if queued:
            self._wake()
        return queued

    async def monthly_report(self) -> int:
        """Render last month's report and queue it to the configured channels."""
        catalog = self._catalog
        if catalog is None:
            return 0
        now = self._wall()
        period = month_of(now, catalog.config.reports.timezone, offset=-1)
        settings = catalog.config.reports.monthly
        scopes: list[tuple[str | None, str]] = [(None, "all customers")]
        if settings.per_customer:
            scopes = [(c.id, c.name) for c in catalog.config.customers]
        directories = (
            [self._base / catalog.config.notifications.templates_dir]
            if catalog.config.notifications.templates_dir
            else []
        )
        messages: list[RenderedMessage] = []

        def rendered(report: Report) -> tuple[str, str, bytes]:
            html = to_html(report, directories)
            return html, to_text(report, directories), html_to_pdf(html)

        for customer, name in scopes:
            html, text, pdf = await report_in_worker(
                self._store, catalog, period, rendered, now=now, customer=customer
            )
            messages += monthly_messages(catalog, html, text, period.label, customer, name, pdf)
        queued = await self._store.enqueue(messages, now)
        log.info(
            "event=monthly_report period=%s messages=%d queued=%d",
            period.label,
            len(messages),
            queued,
        )
        if queued:
            self._wake()
        return queued
