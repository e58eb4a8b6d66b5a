"""Each customer's own status page, ``/status/{customer}`` (and its JSON twin, ``.json``).

Only that customer's subscriptions, in words for customers (operational,
degraded, outage …), with 90 days of daily availability (the report's SLA
maths: maintenance is not downtime, and is marked), the incidents that touch
them with the **customer updates** our team wrote, and planned maintenance.
Never an internal note, a check name, a hostname, a probe's reason, an
incident's internal id or another customer: the page is built from an explicit
list of public facts, not from the incident.

It is reached through a signed link (``?k=``), rotated by raising the customer's
``status_page.link_version``, or by anyone when ``status_page.public`` is true.
A wrong or old link answers 404, as for a customer that does not exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from monitor.api.cluster import add_other_nodes_subscriptions
from monitor.api.core import status_document
from monitor.api.incidents import incident_operations
from monitor.api.services import SERVICES, IncidentOperations
from monitor.catalog import Catalog
from monitor.config.models import CustomerSpec
from monitor.console.access import CONSOLE, render, visitor
from monitor.console.keys import STATUS_PAGE, console_key
from monitor.engine.model import IncidentState
from monitor.reports.build import build_report
from monitor.reports.model import parse_period

RECENT = 7 * 86400.0  # resolved incidents with updates stay on the page this long
HISTORY_DAYS = 90  # the daily availability bars


def add_routes(app: web.Application) -> None:
    app.router.add_get("/status/{customer}.json", status_json)
    app.router.add_get("/status/{customer}", status_html)


def link_token(key: bytes, customer: CustomerSpec) -> str:
    """The ``k`` of a customer's status link: changes with ``status_page.link_version``."""
    message = f"status|{customer.id}|{customer.status_page.link_version}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def status_key(request: web.Request) -> bytes:
    """The key of the status links (``monitor.console.keys``)."""
    state = request.app[CONSOLE]
    if state.status_key is None:
        services = request.app[SERVICES]
        catalog = services.catalog
        assert catalog is not None
        base = services.config_path.resolve().parent
        state.status_key = console_key(catalog, base, STATUS_PAGE)
    return state.status_key


def status_path(request: web.Request, customer: CustomerSpec) -> str:
    """The customer's status page path with its signed key (for the console to share)."""
    if customer.status_page.public:
        return f"/status/{customer.id}"
    return f"/status/{customer.id}?k={link_token(status_key(request), customer)}"


def _customer(request: web.Request) -> tuple[Catalog, CustomerSpec]:
    """The customer the request may see, or 404."""
    catalog = request.app[SERVICES].catalog
    customer = catalog.customers.get(request.match_info["customer"]) if catalog else None
    if catalog is None or customer is None:
        raise web.HTTPNotFound(text="no such status page\n")
    if not customer.status_page.public:
        presented = request.query.get("k", "")
        expected = link_token(status_key(request), customer)
        if not (presented.isascii() and hmac.compare_digest(presented, expected)):
            raise web.HTTPNotFound(text="no such status page\n")
    return catalog, customer


def _updates(events: list[Any]) -> list[dict[str, Any]]:
    return [
        {"at": e.at, "state": e.detail.get("state", ""), "text": e.detail.get("text", "")}
        for e in events
        if e.kind == "customer_update"
    ]


async def _incidents(
    operations: IncidentOperations, catalog: Catalog, customer: str, now: float
) -> list[dict[str, Any]]:
    """The customer's incidents that are open, or resolved lately with updates, each with
    the updates written on it and on its vendor-side group (newest first)."""
    own = await operations.list_incidents(state="open", customer=customer, limit=1000)
    recent = await operations.list_incidents(state="resolved", customer=customer, limit=50)
    shown: list[dict[str, Any]] = []
    for incident in own + [i for i in recent if (i.resolved_at or 0) > now - RECENT]:
        _, events = await operations.get(incident.id)
        updates = _updates(events)
        if incident.vendor_group:
            _, group_events = await operations.get(incident.vendor_group)
            updates += _updates(group_events)
        if incident.state is IncidentState.RESOLVED and not updates:
            continue
        service = catalog.services.get(incident.service)
        shown.append(
            {
                "service": service.name if service else incident.service,
                "status": incident.status.value,
                "state": incident.state.value,
                "started_at": incident.opened_at,
                "resolved_at": incident.resolved_at,
                "updates": sorted(updates, key=lambda u: u["at"], reverse=True),
            }
        )
    return shown


def _day_class(availability: float | None) -> str:
    """The colour of a day's bar: no data, all good, a little downtime, a lot."""
    if availability is None:
        return "none"
    if availability >= 0.9999:
        return "ok"
    return "warn" if availability >= 0.99 else "bad"


async def _history(
    request: web.Request, catalog: Catalog, customer: CustomerSpec, now: float
) -> dict[str, dict[str, Any]]:
    """Each subscription's last ``HISTORY_DAYS`` days, by service id: the same SLA maths
    and maintenance as the auditors' report (maintenance is not downtime)."""
    store = request.app[SERVICES].store
    if store is None:
        return {}
    zone = catalog.config.reports.timezone
    today = datetime.fromtimestamp(now, ZoneInfo(zone)).date()
    first = today - timedelta(days=HISTORY_DAYS - 1)
    period = parse_period(f"{first.isoformat()}..{today.isoformat()}", zone)
    report = await build_report(store, catalog, period, now=now, customer=customer.id)
    sections = [section for section in report.customers if section.id == customer.id]
    if not sections:
        return {}
    [section] = sections
    maintained = {
        day
        for window in section.maintenance
        for begin, end in window.occurrences
        for day, start, finish in period.days()
        if begin < finish and end > start
    }
    return {
        figures.service: {
            "availability": figures.availability.sla_availability,
            "days": [
                {
                    "day": day.day.isoformat(),
                    "availability": day.sla_availability,
                    "downtime_seconds": round(day.downtime),
                    "maintenance": day.day in maintained,
                    "class": _day_class(day.sla_availability),
                }
                for day in figures.daily
            ],
        }
        for figures in section.subscriptions
    }


def _public_status(status: str) -> str:
    return {"up": "operational", "down": "outage"}.get(status, status)


async def _document(request: web.Request) -> dict[str, Any]:
    catalog, customer = _customer(request)
    services = request.app[SERVICES]
    now = services.wall()
    document = status_document(services, {"customer": customer.id})
    await add_other_nodes_subscriptions(services, document, {"customer": customer.id})
    operations = incident_operations(request)
    windows = [
        w
        for w in await operations.list_maintenance()
        if w.customer in (None, customer.id)
        and (w.recurrence is not None or w.ends_at > now)
        and (w.service is None or (customer.id, w.service) in catalog.subscriptions)
    ]
    history = await _history(request, catalog, customer, now)
    return {
        "customer": customer.name,
        "generated_at": now,
        "history_days": HISTORY_DAYS,
        "services": [
            {
                "service": row["service_name"],
                "status": _public_status(row["status"]),
                "since": row["since"] or None,
                "availability": history.get(row["service"], {}).get("availability"),
                "daily": history.get(row["service"], {}).get("days", []),
            }
            for row in sorted(document["subscriptions"], key=lambda r: r["service_name"])
        ],
        "incidents": await _incidents(operations, catalog, customer.id, now),
        "maintenance": [
            {
                "service": catalog.services[w.service].name if w.service else None,
                "starts_at": w.starts_at,
                "ends_at": w.ends_at,
                "recurrence": w.recurrence,
                "timezone": w.timezone,
            }
            for w in sorted(windows, key=lambda w: w.starts_at)
        ],
    }


async def status_json(request: web.Request) -> web.Response:
    return web.json_response(await _document(request))


async def status_html(request: web.Request) -> web.Response:
    document = await _document(request)
    return render(request, "status.html.j2", visitor(request), page=document, status_page=True)
