"""Reading a period's history from the store and composing the report.

The store is read on the event loop; composing (occurrences of maintenance
windows, SLA maths per subscription and day) and rendering run in a worker
thread (``off_loop``), so that a year's report for thousands of customers
never stalls probing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from monitor.catalog import Catalog
from monitor.engine.model import StatusInterval
from monitor.reports.model import Period, Report, compose, month_of, subscription_whole
from monitor.store import Store
from monitor.store.locations import LocationChange

_MAX_INCIDENTS = 100_000
_IDS_PER_READ = 500  # target ids per read of the location history
_YIELD_EVERY = 250  # subscriptions computed between two yields to the event loop
# Reports are rare and CPU-bound: two at a time is plenty, and more threads would only
# take more of the interpreter lock from the loop.
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="csp-monitor-report")

P = ParamSpec("P")
R = TypeVar("R")


async def off_loop(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``function(*args, **kwargs)`` in a report worker thread, awaited from the loop."""
    call = functools.partial(function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_WORKERS, call)


async def build_report(
    store: Store, catalog: Catalog, period: Period, *, now: float, customer: str | None = None
) -> Report:
    """The period's report (read on the loop, composed in a report thread)."""
    return await report_in_worker(store, catalog, period, _itself, now=now, customer=customer)


def _itself(report: Report) -> Report:
    return report


async def report_in_worker(
    store: Store,
    catalog: Catalog,
    period: Period,
    use: Callable[[Report], R],
    *,
    now: float,
    customer: str | None = None,
) -> R:
    """Read the period's history on the loop, then compose the report and call
    ``use(report)`` (render it) in a report thread; return what ``use`` returns.

    When ``use`` keeps only its result, the report never reaches the loop, and
    neither does the work of freeing its hundreds of thousands of objects.
    """
    intervals = await store.status_intervals(customer=customer, start=period.start, end=period.end)
    incidents = await store.list_incidents(
        customer=customer, since=period.start, until=period.end, limit=_MAX_INCIDENTS
    )
    if customer is not None:  # vendor-side incidents that touched this customer's services
        services = {service for c, service in catalog.subscriptions if c == customer}
        incidents += [
            i
            for i in await store.list_incidents(
                customer="*", since=period.start, until=period.end, limit=_MAX_INCIDENTS
            )
            if i.service in services
        ]
    with_timelines = [(incident, await store.events(incident.id)) for incident in incidents]
    windows = await store.list_maintenance()
    changes = await located_changes(store, catalog, period, customer)
    audit_head = await store.audit_head()

    def compose_and_use() -> R:
        report = compose(
            catalog,
            period,
            intervals,
            with_timelines,
            windows,
            now=now,
            audit_head=audit_head,
            customer=customer,
            location_changes=changes,
        )
        return use(report)

    return await off_loop(compose_and_use)


async def located_changes(
    store: Store, catalog: Catalog, period: Period, customer: str | None
) -> list[LocationChange]:
    """What each location saw of the report's located targets (none: no read at all)."""
    target_ids = [
        target_id
        for target_id, spec in catalog.targets.items()
        if spec.locations and (customer is None or spec.target.customer == customer)
    ]
    changes: list[LocationChange] = []
    # in slices: one statement binds each id, and a database caps the bound parameters
    for first in range(0, len(target_ids), _IDS_PER_READ):
        changes += await store.location_changes(
            period.start, period.end, target_ids[first : first + _IDS_PER_READ]
        )
    return changes


async def month_to_date(
    store: Store, catalog: Catalog, now: float, keys: Collection[tuple[str, str]] | None = None
) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """Each subscription's (or only each of ``keys``') SLA availability and coverage this
    month so far: the metrics' values, computed by the very functions the report uses."""
    period = month_of(now, catalog.config.reports.timezone)
    figures: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    count = 0

    async def add(key: tuple[str, str], intervals: list[StatusInterval]) -> None:
        nonlocal count
        whole = subscription_whole(catalog, *key, period, intervals, now)
        figures[key] = (whole.sla_availability, whole.coverage)
        count += 1
        if count % _YIELD_EVERY == 0:  # probes run in this loop too: ≈ 0.2 s for 10,000
            await asyncio.sleep(0)

    # one subscription's history at a time, not the whole month's at once
    async for key, intervals in store.intervals_by_subscription(period.start, period.end, keys):
        if key in catalog.subscriptions:
            await add(key, intervals)
    for key in catalog.subscriptions if keys is None else keys:
        if key not in figures and key in catalog.subscriptions:
            await add(key, [])  # no history this month: all of it a coverage gap
    return figures
