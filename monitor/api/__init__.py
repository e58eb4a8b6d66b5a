"""The HTTP API: metrics, health, status, reload, incidents, maintenance, on-call, reports.

Reads of the API are open unless ``monitor.protect_reads`` is set; anything
that changes state needs a bearer token with the right role
(``monitor.api_tokens`` in the config). The handlers reach the daemon only
through ``ApiServices`` (monitor/api/services.py).
"""

from __future__ import annotations

from aiohttp import web

from monitor import console
from monitor.api import (
    agents,
    cluster,
    core,
    incidents,
    locations,
    maintenance,
    oncall,
    reports,
    vendor_messages,
)
from monitor.api.auth import count_refusals
from monitor.api.forward import add_forwarding
from monitor.api.services import SERVICES, ApiServices


def build_app(services: ApiServices) -> web.Application:
    """The aiohttp application serving every endpoint from ``services``."""
    app = web.Application()
    app[SERVICES] = services
    count_refusals(app)
    add_forwarding(app)
    core.add_routes(app)
    incidents.add_routes(app)
    maintenance.add_routes(app)
    oncall.add_routes(app)
    reports.add_routes(app)
    cluster.add_routes(app)
    vendor_messages.add_routes(app)
    agents.add_routes(app)
    locations.add_routes(app)
    console.add_routes(app)
    return app
