"""Maintenance windows and reports in the console.

A window is created from the same request model as the API's
(``monitor.maintenance_request``), so the console refuses exactly what the API
refuses, naming each field; the start is typed as a wall-clock time in the
chosen IANA zone. Reports are the API's report (``report_response``) behind the
console's sign-in.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from monitor.api.incidents import incident_operations
from monitor.api.maintenance import unknown_scope
from monitor.api.reports import report_response
from monitor.api.services import SERVICES
from monitor.config import ConfigIssue
from monitor.console.access import form_of, render, require_operate, require_visitor
from monitor.console.pages import base_path
from monitor.maintenance_request import InvalidRequest, parse_request
from monitor.reports.model import parse_period
from monitor.timezones import known_zone, zone_names

RECURRENCES = ("", "daily", "weekly", "monthly")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/maintenance", maintenance_page)
    app.router.add_post("/maintenance", create_window)
    app.router.add_post("/maintenance/{id}/delete", delete_window)
    app.router.add_get("/reports", reports_page)
    app.router.add_get("/reports/uptime", report)


def _base(request: web.Request) -> str:
    catalog = request.app[SERVICES].catalog
    return base_path(catalog.config.monitor.public_url if catalog else None)


async def _maintenance(
    request: web.Request,
    status: int = 200,
    issues: list[ConfigIssue] | None = None,
    values: dict[str, str] | None = None,
) -> web.Response:
    who = require_visitor(request)
    catalog = request.app[SERVICES].catalog
    assert catalog is not None  # require_visitor answered 503 otherwise
    windows = sorted(
        await incident_operations(request).list_maintenance(), key=lambda w: w.starts_at
    )
    zone = known_zone(catalog.config.reports.timezone)
    return render(
        request,
        "maintenance.html.j2",
        who,
        status=status,
        windows=windows,
        customers=sorted(catalog.customers.values(), key=lambda c: c.name),
        customer_names={c.id: c.name for c in catalog.customers.values()},
        services=list(catalog.services.items()),
        service_names={key: service.name for key, service in catalog.services.items()},
        zones=zone_names(),
        recurrences=RECURRENCES,
        issues=issues or [],
        values=values or {"timezone": zone},
        done=request.query.get("done") in ("added", "deleted") and request.query["done"],
    )


async def maintenance_page(request: web.Request) -> web.Response:
    return await _maintenance(request)


def _request_body(form: dict[str, str]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The API's request body from the form: the start is a wall-clock time in the
    chosen zone."""
    body: dict[str, Any] = {"duration": form.get("duration", "").strip() or None}
    issues = []
    zone_name = form.get("timezone", "").strip()
    try:
        zone = ZoneInfo(known_zone(zone_name))
        body["timezone"] = zone_name
    except ValueError as exc:
        issues.append(ConfigIssue("timezone", str(exc)))
        zone = None
    start = form.get("starts_at", "").strip()
    try:
        local = datetime.fromisoformat(start)
    except ValueError:
        issues.append(ConfigIssue("starts_at", "give the start as 2026-11-29T02:00"))
    else:
        if zone is not None:
            body["starts_at"] = local.replace(tzinfo=zone).isoformat()
    for key in ("customer", "service", "recurrence"):
        if form.get(key):
            body[key] = form[key]
    if form.get("reason", "").strip():
        body["reason"] = form["reason"].strip()
    return body, issues


async def create_window(request: web.Request) -> web.Response:
    who = require_visitor(request)
    form = await form_of(request, who)
    require_operate(request, who)
    body, issues = _request_body(form)
    manager = incident_operations(request)
    if not issues:
        try:
            asked = parse_request(body)
        except InvalidRequest as exc:
            issues = exc.issues
        else:
            issues = unknown_scope(asked, manager.catalog)
    if issues:
        return await _maintenance(request, 400, issues, form)
    window = asked.window(f"MW-{uuid.uuid4().hex[:10]}", who.session.actor)
    try:
        await manager.add_maintenance(window)
    except ValueError as exc:
        return await _maintenance(request, 400, [ConfigIssue("body", str(exc))], form)
    raise web.HTTPSeeOther(f"{_base(request)}/maintenance?done=added")


async def delete_window(request: web.Request) -> web.Response:
    who = require_visitor(request)
    await form_of(request, who)
    require_operate(request, who)
    window_id = request.match_info["id"]
    if not await incident_operations(request).delete_maintenance(window_id, who.session.actor):
        issue = ConfigIssue("id", "no such maintenance window")
        return await _maintenance(request, 404, [issue])
    raise web.HTTPSeeOther(f"{_base(request)}/maintenance?done=deleted")


async def reports_page(request: web.Request, problem: str | None = None) -> web.Response:
    who = require_visitor(request)
    catalog = request.app[SERVICES].catalog
    assert catalog is not None
    today = datetime.now(ZoneInfo(catalog.config.reports.timezone))
    last_month = today.replace(day=1).toordinal() - 1
    previous = datetime.fromordinal(last_month)
    return render(
        request,
        "reports.html.j2",
        who,
        status=400 if problem else 200,
        problem=problem,
        customers=sorted(catalog.customers.values(), key=lambda c: c.name),
        period=request.query.get("period") or f"{previous.year:04d}-{previous.month:02d}",
        customer=request.query.get("customer", ""),
        fmt=request.query.get("format", "html"),
    )


async def report(request: web.Request) -> web.StreamResponse:
    require_visitor(request)
    catalog = request.app[SERVICES].catalog
    assert catalog is not None
    try:
        parse_period(request.query.get("period", ""), catalog.config.reports.timezone)
    except ValueError as exc:
        return await reports_page(request, str(exc))
    customer = request.query.get("customer") or None
    if customer is not None and customer not in catalog.customers:
        return await reports_page(request, f"unknown customer {customer!r}")
    if request.query.get("format") not in ("html", "csv", "json"):
        return await reports_page(request, "format: html, csv or json")
    if not request.query.get("customer"):
        # the API reads "no customer" as all of them; an empty field means the same here
        query = {k: v for k, v in request.query.items() if k != "customer"}
        request = request.clone(rel_url=request.rel_url.with_query(query))
    return await report_response(request)
