"""HTTP API for reports: ``GET /api/v1/reports/uptime?period=2026-10[&customer=][&format=]``
(format json, html, csv or pdf).

A period is a month or a range of at most 400 days (``parse_period``); anything
else is a 400. The report is composed and rendered off the event loop.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from monitor.api.auth import require_read
from monitor.api.errors import bad_request, refusal
from monitor.api.services import SERVICES
from monitor.config import ConfigIssue
from monitor.reports.build import report_in_worker
from monitor.reports.model import Report, parse_period
from monitor.reports.render import FORMATS, render_chunks

REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/reports/uptime", uptime_report)


async def uptime_report(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if services.catalog is None or services.store is None:
        raise web.HTTPServiceUnavailable(text="the store is not open yet\n")
    require_read(request)
    return await report_response(request)


async def report_response(request: web.Request) -> web.StreamResponse:
    """The report the query asks for, streamed (the caller checked who asks); a bad
    period, customer or format is a 400/404 naming it."""
    services = request.app[SERVICES]
    catalog, store = services.catalog, services.store
    if catalog is None or store is None:
        raise web.HTTPServiceUnavailable(text="the store is not open yet\n")
    query = request.query
    try:
        period = parse_period(query.get("period", ""), catalog.config.reports.timezone)
    except ValueError as exc:
        raise bad_request("period", str(exc)) from None
    customer = query.get("customer")
    if customer is not None and customer not in catalog.customers:
        raise refusal(web.HTTPNotFound, [ConfigIssue("customer", f"unknown customer {customer!r}")])
    fmt = query.get("format", "json")
    if fmt not in FORMATS:
        raise bad_request("format", "html, pdf, csv or json")
    templates = catalog.config.notifications.templates_dir
    directories = [services.config_path.resolve().parent / Path(templates)] if templates else []

    def rendered(report: Report) -> tuple[str, list[bytes]]:
        return render_chunks(report, fmt, directories)

    content_type, chunks = await report_in_worker(
        store, catalog, period, rendered, now=services.wall(), customer=customer
    )
    name = f"uptime-{period.label}-{customer or 'all'}.{fmt}"
    response = web.StreamResponse(
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            # the HTML report is a standalone document with its own <style> (it is mailed
            # too): styles inline, and nothing else, no script at all
            "Content-Security-Policy": REPORT_POLICY,
        },
    )
    response.content_type = content_type
    if content_type.startswith("text/") or content_type.endswith("json"):
        response.charset = "utf-8"
    response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response
