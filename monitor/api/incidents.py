"""HTTP API for incidents, and the acknowledge links.

Reads need role ``read`` when ``monitor.protect_reads`` is set; changes need
``operate``. An acknowledge link from a message works without a token, for
its own incident only, until it expires; opening it (GET) only shows a
confirmation page, because mail scanners open links: the POST acknowledges.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from monitor.api.auth import require_read, require_role
from monitor.api.errors import bad_request, refusal
from monitor.api.input import (
    Body,
    CaseNumber,
    Note,
    bounded_int,
    clean_text,
    json_object,
    validated,
)
from monitor.api.services import SERVICES, IncidentOperations
from monitor.config import ConfigIssue
from monitor.engine.model import Incident, IncidentError, IncidentEvent
from monitor.store.records import IncidentNotFound

LIST_LIMIT = 1000  # incidents in one answer
INCIDENT_STATES = ("open", "acknowledged", "resolved", "all")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", show_incident)
    app.router.add_post("/api/v1/incidents/{id}/ack", acknowledge)
    app.router.add_post("/api/v1/incidents/{id}/resolve", resolve)
    app.router.add_post("/api/v1/incidents/{id}/notes", add_note)
    app.router.add_put("/api/v1/incidents/{id}/vendor-case", set_vendor_case)
    app.router.add_get("/ack/{id}", ack_page)
    app.router.add_post("/ack/{id}", ack_by_link)


def incident_operations(request: web.Request) -> IncidentOperations:
    """The incident operations, or 503 while the store is not open yet."""
    manager = request.app[SERVICES].incidents
    if manager is None:
        raise web.HTTPServiceUnavailable(text="incidents are not running yet\n")
    return manager


def _reader(request: web.Request) -> None:
    require_read(request)


def _actor(request: web.Request) -> str:
    return require_role(request, "operate")


def iso_time(value: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC (None stays None)."""
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
        "opened_at": iso_time(incident.opened_at),
        "acknowledged_at": iso_time(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": iso_time(incident.resolved_at),
        "escalation_level": incident.escalation_level,
        "next_escalation_at": iso_time(incident.next_escalation_at),
        "policy": incident.policy.name,
        "flapping": incident.flapping,
        "muted": incident.muted,
        "vendor_case": incident.vendor_case,
        "vendor_incident": incident.vendor_group,
        # who steps paged through schedules (person None: nobody was on call)
        "oncall": [pick.to_json() for pick in incident.oncall],
    }


def event_json(event: IncidentEvent) -> dict[str, Any]:
    return {
        "at": iso_time(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "detail": event.detail,
    }


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
        raise bad_request("state", f"one of {', '.join(INCIDENT_STATES)}")
    incidents = await incident_operations(request).list_incidents(
        state=state,
        customer=query.get("customer"),
        service=query.get("service"),
        limit=limit,
    )
    return web.json_response({"incidents": [incident_json(i) for i in incidents]})


async def show_incident(request: web.Request) -> web.Response:
    _reader(request)
    with incident_refusals():
        incident, events = await incident_operations(request).get(request.match_info["id"])
    document = incident_json(incident)
    document["timeline"] = [event_json(event) for event in events]
    return web.json_response(document)


@contextmanager
def incident_refusals() -> Iterator[None]:
    """Map the manager's refusals to answers: no such incident 404, any other
    ``IncidentError`` (already resolved, still down …) 409."""
    try:
        yield
    except IncidentNotFound as exc:
        raise refusal(web.HTTPNotFound, [ConfigIssue("id", str(exc))]) from None
    except IncidentError as exc:
        raise refusal(web.HTTPConflict, [ConfigIssue("id", str(exc))]) from None


async def _change(
    request: web.Request, change: Callable[[IncidentOperations, str], Awaitable[Incident]]
) -> web.Response:
    """Apply ``change(operations, incident_id)`` and answer with the changed incident."""
    with incident_refusals():
        incident = await change(incident_operations(request), request.match_info["id"])
    return web.json_response(incident_json(incident))


async def acknowledge(request: web.Request) -> web.Response:
    actor = _actor(request)
    return await _change(request, lambda ops, incident_id: ops.acknowledge(incident_id, actor))


async def resolve(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = validated(ResolveBody, await _body(request))
    return await _change(
        request, lambda ops, incident_id: ops.resolve(incident_id, actor, note=body.note)
    )


async def add_note(request: web.Request) -> web.Response:
    actor = _actor(request)
    text = validated(NoteBody, await _body(request)).text
    if not text:
        raise bad_request("text", 'give the note as {"text": "..."}')
    return await _change(request, lambda ops, incident_id: ops.add_note(incident_id, actor, text))


async def set_vendor_case(request: web.Request) -> web.Response:
    actor = _actor(request)
    case = validated(VendorCaseBody, await _body(request)).case
    if not case:
        raise bad_request("case", 'give the 21Vianet case number as {"case": "..."}')
    return await _change(
        request, lambda ops, incident_id: ops.set_vendor_case(incident_id, actor, case)
    )


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
    manager = incident_operations(request)
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
    manager = incident_operations(request)
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
    except IncidentError as exc:
        return _page("Nothing to acknowledge", f"<p>{html.escape(str(exc))}</p>", status=409)
    return _page(
        "Acknowledged",
        f"<p>{html.escape(incident.id)} acknowledged by "
        f"{html.escape(who)}. Escalation stopped.</p>",
    )
