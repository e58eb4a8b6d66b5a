"""HTTP API for what each location saw of a target: its changes of status, at their times.

An agent cut off from the server sends its results late; they are recorded at the
time they were seen, so this history shows a location's view as it was, not as it
arrived (``GET /api/v1/locations/history?target=ID&hours=N``).
"""

from __future__ import annotations

from aiohttp import web

from monitor.api.auth import require_read
from monitor.api.errors import bad_request
from monitor.api.input import bounded_int
from monitor.api.services import SERVICES

MAX_HOURS = 24 * 400  # as far back as a yearly report reaches


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/locations/history", history)


async def history(request: web.Request) -> web.Response:
    require_read(request)
    services = request.app[SERVICES]
    target = request.query.get("target", "")
    catalog = services.catalog
    if catalog is None or target not in catalog.targets:
        raise bad_request("target", "a target id (customer/service/check) of the config")
    hours = bounded_int(request.query, "hours", 24, 1, MAX_HOURS)
    store = services.store
    if store is None:
        raise web.HTTPServiceUnavailable(text="the store is not open yet\n")
    end = services.wall()
    changes = await store.location_changes(end - hours * 3600.0, end + 1.0, [target])
    return web.json_response(
        {
            "target": target,
            "locations": list(catalog.targets[target].locations),
            "changes": [
                {
                    "location": change.location,
                    "status": change.status,
                    "since": change.since,
                    "reason": change.reason,
                    "node": change.node_id,
                }
                for change in changes
            ],
        }
    )
