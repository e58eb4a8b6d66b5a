"""The board: customers × services, each cell its status, since when, and its open incident.

Built from the same status document the API serves (``/api/v1/status``), so a
cluster node shows the subscriptions other nodes probe too. Vendor-side
incidents and their blast radius are on top. The page refreshes its live part
by itself (``static/console.js`` fetches ``?fragment=1`` every ``refresh``
seconds); without script it is a plain page with a Refresh link.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from monitor.api.cluster import add_other_nodes_subscriptions
from monitor.api.core import status_document
from monitor.api.incidents import incident_operations
from monitor.api.services import SERVICES, ApiServices
from monitor.console.access import render, require_visitor
from monitor.console.pages import base_path
from monitor.engine.correlation import VENDOR_CUSTOMER
from monitor.probe import Status

STATUSES = tuple(status.value for status in Status)
REFRESH_DEFAULT, REFRESH_LOW, REFRESH_HIGH = 10, 2, 300
# worst first: the order rows and summary counts are shown in
_SEVERITY = {"down": 0, "degraded": 1, "unknown": 2, "maintenance": 3, "up": 4}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", front)
    app.router.add_get("/board", board)


async def front(request: web.Request) -> web.Response:
    catalog = request.app[SERVICES].catalog
    base = base_path(catalog.config.monitor.public_url if catalog else None)
    raise web.HTTPFound(f"{base}/board")


def subscription_checks(services: ApiServices, customer: str, service: str) -> list[dict[str, Any]]:
    """Each check of a subscription probed here: status, since, its last result."""
    catalog = services.catalog
    subscription = catalog.subscriptions.get((customer, service)) if catalog else None
    if catalog is None or subscription is None:
        return []
    checks = []
    for target_id in subscription.target_ids:
        state = services.board.targets.get(target_id)
        if state is None:
            continue
        last = state.last_result
        checks.append(
            {
                "check": catalog.targets[target_id].target.check,
                "type": catalog.targets[target_id].target.type,
                "status": state.status.value,
                "since": state.since or None,
                "reason": (last.reason if last and last.reason else state.last_change_reason),
                "duration": last.duration if last else None,
                "phases": sorted(last.phases.items()) if last else [],
                "at": last.started_at if last else None,
            }
        )
    return checks


def _refresh(query: Any) -> int:
    text = query.get("refresh", "")
    if text.isascii() and text.isdigit() and len(text) <= 4:
        return min(max(int(text), REFRESH_LOW), REFRESH_HIGH)
    return REFRESH_DEFAULT


async def board(request: web.Request) -> web.Response:
    who = require_visitor(request)
    services = request.app[SERVICES]
    catalog = services.catalog
    assert catalog is not None  # require_visitor answered 503 otherwise
    query = request.query
    chosen = {key: query.get(key, "") for key in ("customer", "service", "status", "tier")}
    wanted = {key: value for key, value in chosen.items() if value and key != "tier"}
    document = status_document(services, wanted)
    await add_other_nodes_subscriptions(services, document, wanted)
    operations = incident_operations(request)
    open_incidents = await operations.list_incidents(state="open", limit=10_000)
    by_subscription = {(i.customer, i.service): i for i in open_incidents}

    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for row in document["subscriptions"]:
        customer = catalog.customers.get(row["customer"])
        if chosen["tier"] and (customer is None or customer.tier != chosen["tier"]):
            continue
        key = (row["customer"], row["service"])
        cells[key] = {
            "status": row["status"],
            "since": row["since"] or None,
            "reason": row.get("reason") or "",
            "incident": by_subscription.get(key),
        }
    customer_ids = sorted(
        {key[0] for key in cells},
        key=lambda c: (
            min(_SEVERITY.get(cells[k]["status"], 9) for k in cells if k[0] == c),
            catalog.customers[c].name,
        ),
    )
    service_ids = [s for s in catalog.services if any(key[1] == s for key in cells)]
    counts: dict[str, int] = {}
    for cell in cells.values():
        counts[cell["status"]] = counts.get(cell["status"], 0) + 1
    vendor_side = []
    for incident in open_incidents:
        if incident.customer != VENDOR_CUSTOMER:
            continue
        members = operations.blast_radius(incident)
        service = catalog.services.get(incident.service)
        vendor_side.append(
            {
                "incident": incident,
                "service_name": service.name if service else incident.service,
                "customers": [
                    catalog.customers[m.customer].name
                    if m.customer in catalog.customers
                    else m.customer
                    for m in members
                ],
            }
        )
    fragment = query.get("fragment") == "1"
    refresh = _refresh(query)
    live_query = {key: value for key, value in chosen.items() if value}
    return render(
        request,
        "board_live.html.j2" if fragment else "board.html.j2",
        who,
        customers=[(c, catalog.customers[c]) for c in customer_ids],
        services=[(s, catalog.services[s]) for s in service_ids],
        cells=cells,
        counts=sorted(counts.items(), key=lambda item: _SEVERITY.get(item[0], 9)),
        vendor_side=vendor_side,
        chosen=chosen,
        all_customers=sorted(catalog.customers.values(), key=lambda c: c.name),
        all_services=list(catalog.services.items()),
        statuses=STATUSES,
        tiers=sorted({c.tier for c in catalog.customers.values()}),
        refresh=refresh,
        live_query=live_query,
        generated_at=document["generated_at"],
    )
