"""HTTP endpoints: metrics, health, readiness, status and the reload hook.

``/metrics``, ``/healthz`` and ``/readyz`` stay open: Prometheus and
orchestrators call them without tokens.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from monitor.api.auth import require_read, require_role
from monitor.api.cluster import add_other_nodes_subscriptions
from monitor.api.services import SERVICES, ApiServices
from monitor.catalog import TargetSpec
from monitor.engine.quorum import counted_status
from monitor.metrics import CONTENT_TYPE


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/-/reload", reload)


# A scrape is ≈ 130 MB at 50,000 targets. Under asyncio's 64 KiB high-water mark every
# ≈ 1 MB chunk waited for the socket to drain, a turn of the (busy) event loop each; the
# scrape may buffer this much instead, and waits only beyond it.
SCRAPE_WRITE_BUFFER = 16 * 1024 * 1024


async def metrics(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
    await response.prepare(request)
    transport = request.transport
    limits = transport.get_write_buffer_limits() if transport is not None else None
    if transport is not None:
        transport.set_write_buffer_limits(high=SCRAPE_WRITE_BUFFER)
    try:
        await response.write(generate_latest(services.registry))
        async for chunk in services.target_metric_chunks():
            if chunk:
                await response.write(chunk)
        await response.write_eof()
    finally:
        if transport is not None and limits is not None and not transport.is_closing():
            transport.set_write_buffer_limits(low=limits[0], high=limits[1])
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    if request.app[SERVICES].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready\n")


async def reload(request: web.Request) -> web.Response:
    require_role(request, "admin")
    ok, message = await request.app[SERVICES].reload()
    return web.json_response(
        {"status": "success" if ok else "error", "message": message}, status=200 if ok else 400
    )


async def status(request: web.Request) -> web.Response:
    require_read(request)
    services = request.app[SERVICES]
    document = status_document(services, request.query)
    await add_other_nodes_subscriptions(services, document, request.query)
    return web.json_response(document)


def _locations_of(source: ApiServices, spec: TargetSpec, reason: str) -> dict[str, Any]:
    """A located target's quorum and each location's last report (as counted now)."""
    reports = source.desk.reports(spec.target.id) if source.desk is not None else {}
    now = source.wall()
    return {
        "reason": reason,
        "quorum": spec.quorum,
        "locations": [
            {
                "location": location,
                "status": counted_status(
                    reports.get(location), now, spec.timing.interval, source.report_grace
                ).value,
                "reported": (
                    {
                        "status": report.status.value,
                        "reason": report.reason,
                        "at": report.at,
                        "since": report.since,
                        "node": report.node,
                    }
                    if (report := reports.get(location)) is not None
                    else None
                ),
            }
            for location in spec.locations
        ],
    }


def status_document(source: ApiServices, query: Any) -> dict[str, Any]:
    """Every customer × service with status, since when, and each check's last result."""
    catalog = source.catalog
    rows: list[dict[str, Any]] = []
    if catalog is None:
        return {"generated_at": source.wall(), "subscriptions": rows}
    customers, services = catalog.customers, catalog.services
    wanted = {key: query.get(key) for key in ("customer", "service", "status")}
    for key, subscription in catalog.subscriptions.items():
        state = source.board.subscriptions.get(key)
        if state is None:
            continue
        if (
            wanted["customer"] not in (None, key[0])
            or wanted["service"] not in (None, key[1])
            or wanted["status"] not in (None, state.status.value)
        ):
            continue
        checks = []
        for target_id in subscription.target_ids:
            target_state = source.board.targets.get(target_id)
            spec = catalog.targets[target_id]
            if target_state is None:
                continue
            last = target_state.last_result
            check: dict[str, Any] = {
                "check": spec.target.check,
                "type": spec.target.type,
                "status": target_state.status.value,
                "since": target_state.since,
                "pending": target_state.pending,
                "last_result": last.to_json() if last else None,
            }
            if spec.locations:
                check.update(_locations_of(source, spec, target_state.last_change_reason))
            checks.append(check)
        rows.append(
            {
                "customer": key[0],
                "customer_name": customers[key[0]].name,
                "service": key[1],
                "service_name": services[key[1]].name,
                "status": state.status.value,
                "since": state.since,
                "reason": state.reason,
                "checks": checks,
                "vendor": [state.to_json() for state in source.vendor.for_subscription(*key)],
            }
        )
    return {"generated_at": source.wall(), "config_digest": catalog.digest, "subscriptions": rows}
