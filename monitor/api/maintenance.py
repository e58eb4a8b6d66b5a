"""HTTP API for maintenance windows: list, create (role ``operate``), delete.

A body is validated as a whole (monitor/maintenance_request.py) before anything
is written: every bad field is named in one 400.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from monitor.api.auth import require_read, require_role
from monitor.api.errors import bad_request, invalid_body, refusal
from monitor.api.incidents import incident_operations, iso_time
from monitor.api.input import json_object
from monitor.catalog import Catalog
from monitor.config import ConfigIssue
from monitor.engine.model import MaintenanceWindow
from monitor.maintenance_request import InvalidRequest, MaintenanceRequest, parse_request


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/maintenance", list_maintenance)
    app.router.add_post("/api/v1/maintenance", create_maintenance)
    app.router.add_delete("/api/v1/maintenance/{id}", delete_maintenance)


def _window_time(value: float) -> str | None:
    """A window's time as ISO 8601; None for one out of range (a row stored before times
    were checked), so that the list still answers and the window can be deleted."""
    try:
        return iso_time(value)
    except (ValueError, OverflowError, OSError):
        return None


def window_json(window: MaintenanceWindow) -> dict[str, Any]:
    return {
        "id": window.id,
        "customer": window.customer,
        "service": window.service,
        "starts_at": _window_time(window.starts_at),
        "ends_at": _window_time(window.ends_at),
        "recurrence": window.recurrence,
        "timezone": window.timezone,
        "reason": window.reason,
        "created_by": window.created_by,
    }


def unknown_scope(asked: MaintenanceRequest, catalog: Catalog | None) -> list[ConfigIssue]:
    """The customer or service of a new window that the config does not know."""
    unknown = []
    if catalog is not None:
        if asked.customer is not None and asked.customer not in catalog.customers:
            unknown.append(ConfigIssue("customer", f"unknown customer {asked.customer!r}"))
        if asked.service is not None and asked.service not in catalog.services:
            unknown.append(ConfigIssue("service", f"unknown service {asked.service!r}"))
    return unknown


async def list_maintenance(request: web.Request) -> web.Response:
    require_read(request)
    windows = await incident_operations(request).list_maintenance()
    return web.json_response({"maintenance": [window_json(w) for w in windows]})


async def create_maintenance(request: web.Request) -> web.Response:
    actor = require_role(request, "operate")
    body = await json_object(request)
    manager = incident_operations(request)
    try:
        asked = parse_request(body)
    except InvalidRequest as exc:
        raise invalid_body(exc.issues) from None
    unknown = unknown_scope(asked, manager.catalog)
    if unknown:
        raise invalid_body(unknown)
    window = asked.window(f"MW-{uuid.uuid4().hex[:10]}", actor)
    try:
        await manager.add_maintenance(window)
    except ValueError as exc:
        raise bad_request("body", str(exc)) from None
    return web.json_response(window_json(window), status=201)


async def delete_maintenance(request: web.Request) -> web.Response:
    actor = require_role(request, "operate")
    if not await incident_operations(request).delete_maintenance(request.match_info["id"], actor):
        raise refusal(web.HTTPNotFound, [ConfigIssue("id", "no such maintenance window")])
    return web.json_response({"deleted": request.match_info["id"]})
