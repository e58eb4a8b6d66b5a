"""HTTP API for incidents and maintenance windows, and the acknowledge links.

Reads need role ``read`` when ``monitor.protect_reads`` is set; changes need
``operate``. An acknowledge link from a message works without a token, for
its own incident only, until it expires; opening it (GET) only shows a
confirmation page, because mail scanners open links: the POST acknowledges.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from monitor.api import DAEMON, require_read, require_role
from monitor.api_input import (
    Body,
    CaseNumber,
    Note,
    bounded_int,
    clean_text,
    json_object,
    validated,
)
from monitor.config import ConfigIssue
from monitor.engine.model import Incident, IncidentConflict, IncidentEvent, MaintenanceWindow
from monitor.maintenance_request import InvalidRequest, parse_request
from monitor.store.records import IncidentNotFound

if TYPE_CHECKING:
    from monitor.incident_manager import IncidentManager

LIST_LIMIT = 1000  # incidents in one answer
INCIDENT_STATES = ("open", "acknowledged", "resolved", "all")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", show_incident)
    app.router.add_post("/api/v1/incidents/{id}/ack", acknowledge)
    app.router.add_post("/api/v1/incidents/{id}/resolve", resolve)
    app.router.add_post("/api/v1/incidents/{id}/notes", add_note)
    app.router.add_put("/api/v1/incidents/{id}/vendor-case", set_vendor_case)
    app.router.add_get("/api/v1/maintenance", list_maintenance)
    app.router.add_post("/api/v1/maintenance", create_maintenance)
    app.router.add_delete("/api/v1/maintenance/{id}", delete_maintenance)
    app.router.add_get("/ack/{id}", ack_page)
    app.router.add_post("/ack/{id}", ack_by_link)


def _manager(request: web.Request) -> IncidentManager:
    manager = request.app[DAEMON].alerting.manager
    if manager is None:
        raise web.HTTPServiceUnavailable(text="incidents are not running yet\n")
    return manager


def _reader(request: web.Request) -> None:
    require_read(request)


def _actor(request: web.Request) -> str:
    return require_role(request, "operate")


def _iso(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()


def incident_json(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "customer": incident.customer,
        "service": incident.service,
        "status": incident.status,
        "severity": incident.severity.value,
        "state": incident.state.value,
        "reason": incident.reason,
        "opened_at": _iso(incident.opened_at),
        "acknowledged_at": _iso(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": _iso(incident.resolved_at),
        "escalation_level": incident.escalation_level,
        "next_escalation_at": _iso(incident.next_escalation_at),
        "policy": incident.policy.name,
        "flapping": incident.flapping,
        "muted": incident.muted,
        "vendor_case": incident.vendor_case,
        "vendor_incident": incident.vendor_group,
    }


def event_json(event: IncidentEvent) -> dict[str, Any]:
    return {"at": _iso(event.at), "kind": event.kind, "actor": event.actor, "detail": event.detail}


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object(request)


class ResolveBody(Body):
    note: Note = ""


class NoteBody(Body):
    text: Note


class VendorCaseBody(Body):
    case: CaseNumber


async def list_incidents(request: web.Request) -> web.Response:
    _reader(request)
    query = request.query
    limit = bounded_int(query, "limit", default=100, low=1, high=LIST_LIMIT)
    state = query.get("state", "open")
    if state not in INCIDENT_STATES:
        raise web.HTTPBadRequest(text=f"state: one of {', '.join(INCIDENT_STATES)}\n")
    incidents = await _manager(request).list_incidents(
        state=state,
        customer=query.get("customer"),
        service=query.get("service"),
        limit=limit,
    )
    return web.json_response({"incidents": [incident_json(i) for i in incidents]})


async def show_incident(request: web.Request) -> web.Response:
    _reader(request)
    try:
        incident, events = await _manager(request).get(request.match_info["id"])
    except IncidentNotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    document = incident_json(incident)
    document["timeline"] = [event_json(event) for event in events]
    return web.json_response(document)


async def _change(request: web.Request, action: str, **kwargs: Any) -> web.Response:
    manager = _manager(request)
    incident_id = request.match_info["id"]
    try:
        incident = await getattr(manager, action)(incident_id, **kwargs)
    except IncidentNotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    except (IncidentConflict, ValueError) as exc:
        raise web.HTTPConflict(text=f"{exc}\n") from None
    return web.json_response(incident_json(incident))


async def acknowledge(request: web.Request) -> web.Response:
    return await _change(request, "acknowledge", actor=_actor(request))


async def resolve(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = validated(ResolveBody, await _body(request))
    return await _change(request, "resolve", actor=actor, note=body.note)


async def add_note(request: web.Request) -> web.Response:
    actor = _actor(request)
    text = validated(NoteBody, await _body(request)).text
    if not text:
        raise web.HTTPBadRequest(text='text: give the note as {"text": "..."}\n')
    return await _change(request, "add_note", actor=actor, text=text)


async def set_vendor_case(request: web.Request) -> web.Response:
    actor = _actor(request)
    case = validated(VendorCaseBody, await _body(request)).case
    if not case:
        raise web.HTTPBadRequest(text='case: give the 21Vianet case number as {"case": "..."}\n')
    return await _change(request, "set_vendor_case", actor=actor, case=case)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        content_type="text/html",
        text=(
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title></head><body style='font-family:sans-serif'>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>"
        ),
    )


async def ack_page(request: web.Request) -> web.Response:
    manager = _manager(request)
    incident_id, token = request.match_info["id"], request.query.get("t", "")
    problem = manager.check_link(incident_id, token)
    if problem:
        return _page("Link not valid", f"<p>{html.escape(problem)}</p>", status=403)
    try:
        incident, _ = await manager.get(incident_id)
    except IncidentNotFound:
        return _page("Not found", "<p>No such incident.</p>", status=404)
    summary = html.escape(
        f"{incident.id}: {incident.customer} / {incident.service} is "
        f"{incident.status} ({incident.state.value})"
    )
    return _page(
        "Acknowledge incident",
        (
            f"<p>{summary}</p><p>{html.escape(incident.reason)}</p>"
            f"<form method='post'><input type='hidden' name='t' value='{html.escape(token)}'>"
            "<label>Your name <input name='by' required></label> "
            "<button type='submit'>Acknowledge</button></form>"
        ),
    )


async def ack_by_link(request: web.Request) -> web.Response:
    manager = _manager(request)
    incident_id = request.match_info["id"]
    try:
        form = await request.post()
    except ValueError:  # UnicodeDecodeError among them: a form that is not UTF-8
        return _page("Bad request", "<p>The form could not be read.</p>", status=400)
    posted = form.get("t")
    token = posted if isinstance(posted, str) and posted else request.query.get("t", "")
    by = form.get("by")
    who = clean_text(by if isinstance(by, str) else "", multiline=False)[:80] or "link"
    problem = manager.check_link(incident_id, token)
    if problem:
        return _page("Link not valid", f"<p>{html.escape(problem)}</p>", status=403)
    try:
        incident = await manager.acknowledge(incident_id, actor=f"{who} (link)")
    except IncidentNotFound:
        return _page("Not found", "<p>No such incident.</p>", status=404)
    except ValueError as exc:
        return _page("Nothing to acknowledge", f"<p>{html.escape(str(exc))}</p>", status=409)
    return _page(
        "Acknowledged",
        f"<p>{html.escape(incident.id)} acknowledged by "
        f"{html.escape(who)}. Escalation stopped.</p>",
    )


def _window_time(value: float) -> str | None:
    """A window's time as ISO 8601; None for one out of range (a row stored before times
    were checked), so that the list still answers and the window can be deleted."""
    try:
        return _iso(value)
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


async def list_maintenance(request: web.Request) -> web.Response:
    _reader(request)
    windows = await _manager(request).list_maintenance()
    return web.json_response({"maintenance": [window_json(w) for w in windows]})


def invalid_body(issues: Iterable[ConfigIssue]) -> web.HTTPBadRequest:
    """400 with a JSON body naming each bad field: {"status", "message", "errors": [...]}."""
    listed = sorted(set(issues))
    document = {
        "status": "error",
        "message": "; ".join(str(issue) for issue in listed),
        "errors": [{"field": issue.path, "message": issue.message} for issue in listed],
    }
    return web.HTTPBadRequest(text=json.dumps(document), content_type="application/json")


async def create_maintenance(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = await _body(request)
    manager = _manager(request)
    try:
        asked = parse_request(body)
    except InvalidRequest as exc:
        raise invalid_body(exc.issues) from None
    catalog, unknown = manager.catalog, []
    if catalog is not None:
        if asked.customer is not None and asked.customer not in catalog.customers:
            unknown.append(ConfigIssue("customer", f"unknown customer {asked.customer!r}"))
        if asked.service is not None and asked.service not in catalog.services:
            unknown.append(ConfigIssue("service", f"unknown service {asked.service!r}"))
    if unknown:
        raise invalid_body(unknown)
    window = asked.window(f"MW-{uuid.uuid4().hex[:10]}", actor)
    try:
        await manager.add_maintenance(window)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return web.json_response(window_json(window), status=201)


async def delete_maintenance(request: web.Request) -> web.Response:
    actor = _actor(request)
    if not await _manager(request).delete_maintenance(request.match_info["id"], actor):
        raise web.HTTPNotFound(text="no such maintenance window\n")
    return web.json_response({"deleted": request.match_info["id"]})
